// EventStore: append and query per stream, persistence across reopen, rotation bounds, torn last
// line handling (skipped on read, repaired on open), oversize records and disk-full writes
// refused without a trace, a rotation that cannot rename.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <string>

#include "agent/store/event_store.hpp"
#include "common/atomic_file.hpp"
#include "fake_loop.hpp"

namespace ha::store {
namespace {

using api::testing::TempDir;

constexpr std::int64_t kT0 = 1'764'082'113'000;  // 2025-11-25 14:48:33 UTC

StoreOptions small_options(const std::string& dir) {
    StoreOptions o;
    o.dir = dir + "/log";
    o.sync = SyncPolicy::None;
    return o;
}

SystemEvent heartbeat_event(bool raised, int n) {
    return SystemEvent{.raised = raised,
                       .key = "heartbeat",
                       .content = "MAC: 02:00:00:00:00:02 -- event " + std::to_string(n)};
}

void append_raw(const std::string& path, std::string_view bytes) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

TEST(EventStore, AppendsAndReturnsLastNInOrder) {
    TempDir tmp;
    auto store = EventStore::open(small_options(tmp.path()));
    ASSERT_TRUE(store) << store.error().message();
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(store->append(heartbeat_event(i % 2 == 0, i), kT0 + std::int64_t{i} * 1000));
    }
    auto q = store->last(Stream::Events, 3);
    ASSERT_TRUE(q);
    ASSERT_EQ(q->records.size(), 3u);
    EXPECT_EQ(q->records[0]["content"], "MAC: 02:00:00:00:00:02 -- event 7");
    EXPECT_EQ(q->records[2]["content"], "MAC: 02:00:00:00:00:02 -- event 9");
    EXPECT_EQ(q->records[2]["name"], "HA failure warning");
    EXPECT_EQ(q->records[2]["type"], "Restore to normal");
    EXPECT_EQ(q->records[1]["type"], "Generate Alert");
    EXPECT_EQ(q->records[2]["ts_ms"], kT0 + 9000);
    EXPECT_TRUE(q->records[2]["time"].is_string());
    EXPECT_EQ(q->skipped, 0u);
    auto all = store->last(Stream::Events, 0);
    ASSERT_TRUE(all);
    EXPECT_EQ(all->records.size(), 10u);
}

TEST(EventStore, KeepsStreamsApart) {
    TempDir tmp;
    auto store = EventStore::open(small_options(tmp.path()));
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append(heartbeat_event(true, 1), kT0));
    ASSERT_TRUE(store->append(BackupRecord{.success = false, .error = "peer closed"}, kT0));
    ASSERT_TRUE(store->append(
        FailoverRecord{.from = "Standby", .to = "Active", .cause = "x", .term = 3}, kT0));
    auto b = store->last(Stream::Backup, 0);
    auto f = store->last(Stream::Failover, 0);
    auto e = store->last(Stream::Events, 0);
    ASSERT_TRUE(b && f && e);
    ASSERT_EQ(b->records.size(), 1u);
    ASSERT_EQ(f->records.size(), 1u);
    ASSERT_EQ(e->records.size(), 1u);
    EXPECT_EQ(b->records[0]["result"], "failed");
    EXPECT_EQ(b->records[0]["error"], "peer closed");
    EXPECT_EQ(f->records[0]["term"], 3);
    EXPECT_TRUE(std::filesystem::exists(tmp.path() + "/log/backup.jsonl"));
    EXPECT_TRUE(std::filesystem::exists(tmp.path() + "/log/failover.jsonl"));
}

TEST(EventStore, SurvivesReopen) {
    TempDir tmp;
    {
        auto store = EventStore::open(small_options(tmp.path()));
        ASSERT_TRUE(store);
        ASSERT_TRUE(store->append(heartbeat_event(true, 1), kT0));
    }
    auto store = EventStore::open(small_options(tmp.path()));
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append(heartbeat_event(false, 2), kT0 + 4000));
    auto q = store->last(Stream::Events, 0);
    ASSERT_TRUE(q);
    ASSERT_EQ(q->records.size(), 2u);
    EXPECT_EQ(q->records[0]["content"], "MAC: 02:00:00:00:00:02 -- event 1");
    EXPECT_EQ(store->repaired_at_open(), 0u);
}

TEST(EventStore, SinceFiltersByWallTime) {
    TempDir tmp;
    auto store = EventStore::open(small_options(tmp.path()));
    ASSERT_TRUE(store);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(store->append(heartbeat_event(true, i), kT0 + i));
    auto q = store->last(Stream::Events, 0, kT0 + 3);
    ASSERT_TRUE(q);
    ASSERT_EQ(q->records.size(), 2u);
    EXPECT_EQ(q->records[0]["ts_ms"], kT0 + 3);
}

TEST(EventStore, RotationBoundsDiskUseAndKeepsNewestRecords) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    opts.max_record_bytes = 512;
    opts.max_file_bytes = 1024;
    opts.keep_files = 2;
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(store->append(heartbeat_event(true, i), kT0 + i));
    std::string base = opts.dir + "/events.jsonl";
    EXPECT_TRUE(std::filesystem::exists(base + ".1"));
    EXPECT_TRUE(std::filesystem::exists(base + ".2"));
    EXPECT_FALSE(std::filesystem::exists(base + ".3"));
    std::uintmax_t total = 0;
    for (const auto& p : {base, base + ".1", base + ".2"}) {
        auto size = std::filesystem::file_size(p);
        EXPECT_LE(size, opts.max_file_bytes) << p;
        total += size;
    }
    EXPECT_LE(total, 3 * opts.max_file_bytes);
    auto q = store->last(Stream::Events, 0);
    ASSERT_TRUE(q);
    ASSERT_FALSE(q->records.empty());
    ASSERT_LT(q->records.size(), 100u);
    // What is kept is the newest run, contiguous and in order.
    auto first = q->records.front()["ts_ms"].get<std::int64_t>();
    for (std::size_t i = 0; i < q->records.size(); ++i) {
        EXPECT_EQ(q->records[i]["ts_ms"], first + static_cast<std::int64_t>(i));
    }
    EXPECT_EQ(q->records.back()["ts_ms"], kT0 + 99);
}

TEST(EventStore, TornLastLineIsSkippedOnReadAndCutAtOpen) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    std::string path;
    {
        auto store = EventStore::open(opts);
        ASSERT_TRUE(store);
        ASSERT_TRUE(store->append(heartbeat_event(true, 1), kT0));
        ASSERT_TRUE(store->append(heartbeat_event(false, 2), kT0 + 1));
        path = store->live_path(Stream::Events);
    }
    // What a crash in the middle of write(2) leaves: a record without its newline.
    append_raw(path, R"({"time":"2025-11-25T14:48:35.000+00:00","content":"MAC: 02:00)");
    auto raw = read_jsonl(path);
    ASSERT_TRUE(raw);
    EXPECT_EQ(raw->records.size(), 2u);
    EXPECT_EQ(raw->skipped, 1u);

    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->repaired_at_open(), 1u);
    auto text = read_file(path);
    ASSERT_TRUE(text);
    ASSERT_FALSE(text->empty());
    EXPECT_EQ(text->back(), '\n');
    // The next record starts on its own line instead of being glued to the torn one.
    ASSERT_TRUE(store->append(heartbeat_event(true, 3), kT0 + 2));
    auto q = store->last(Stream::Events, 0);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->records.size(), 3u);
    EXPECT_EQ(q->skipped, 0u);
    EXPECT_EQ(q->records[2]["content"], "MAC: 02:00:00:00:00:02 -- event 3");
}

TEST(EventStore, GarbageLineInTheMiddleIsSkippedAndCounted) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append(heartbeat_event(true, 1), kT0));
    append_raw(store->live_path(Stream::Events), "not json at all\n");
    ASSERT_TRUE(store->append(heartbeat_event(true, 2), kT0 + 1));
    auto q = store->last(Stream::Events, 0);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->records.size(), 2u);
    EXPECT_EQ(q->skipped, 1u);
}

TEST(EventStore, RefusesOversizeRecordAndWritesNothing) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    opts.max_record_bytes = 256;
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append(heartbeat_event(true, 1), kT0));
    auto before = std::filesystem::file_size(store->live_path(Stream::Events));
    SystemEvent big = heartbeat_event(true, 2);
    big.content.assign(1000, 'x');
    auto st = store->append(big, kT0);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("max_record_bytes"), std::string::npos);
    EXPECT_EQ(std::filesystem::file_size(store->live_path(Stream::Events)), before);
    EXPECT_FALSE(store->append(Stream::Events, nlohmann::json::array({1, 2}), kT0));
}

// What ENOSPC does to write(2) on a nearly full disk: part of the line is written and the call
// returns short. RLIMIT_FSIZE gives the same short write without a tiny file system (or root).
class FileSizeLimit {
  public:
    explicit FileSizeLimit(rlim_t bytes) {
        ::getrlimit(RLIMIT_FSIZE, &saved_);
        old_handler_ = ::signal(SIGXFSZ, SIG_IGN);  // else the process dies at the limit
        rlimit lim = saved_;
        lim.rlim_cur = bytes;
        ok_ = ::setrlimit(RLIMIT_FSIZE, &lim) == 0;
    }
    ~FileSizeLimit() {
        ::setrlimit(RLIMIT_FSIZE, &saved_);
        ::signal(SIGXFSZ, old_handler_);
    }
    FileSizeLimit(const FileSizeLimit&) = delete;
    FileSizeLimit& operator=(const FileSizeLimit&) = delete;
    [[nodiscard]] bool ok() const { return ok_; }

  private:
    rlimit saved_{};
    sighandler_t old_handler_ = SIG_DFL;
    bool ok_ = false;
};

TEST(EventStore, DiskFullMidRecordLeavesNoPartialLine) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append(heartbeat_event(true, 1), kT0));
    const std::string path = store->live_path(Stream::Events);
    const auto before = std::filesystem::file_size(path);
    {
        FileSizeLimit full(before + 10);  // room for 10 bytes of the next line only
        ASSERT_TRUE(full.ok());
        auto st = store->append(heartbeat_event(false, 2), kT0 + 1);
        ASSERT_FALSE(st);
        EXPECT_NE(st.error().message().find(path), std::string::npos) << st.error().message();
        // Full to the last byte: the write fails outright.
        FileSizeLimit none(before);
        ASSERT_TRUE(none.ok());
        EXPECT_FALSE(store->append(heartbeat_event(false, 3), kT0 + 2));
    }
    EXPECT_EQ(std::filesystem::file_size(path), before);
    // Space again: the next record follows the last whole one, on its own line.
    ASSERT_TRUE(store->append(heartbeat_event(false, 4), kT0 + 3));
    auto q = store->last(Stream::Events, 0);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->skipped, 0u);
    ASSERT_EQ(q->records.size(), 2u);
    EXPECT_EQ(q->records[0]["content"], "MAC: 02:00:00:00:00:02 -- event 1");
    EXPECT_EQ(q->records[1]["content"], "MAC: 02:00:00:00:00:02 -- event 4");
}

TEST(EventStore, FailedRotationKeepsTheLiveFileAndLosesNothing) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    opts.max_record_bytes = 256;
    opts.max_file_bytes = 512;
    opts.keep_files = 1;
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    const std::string base = store->live_path(Stream::Events);
    // Something in the way of the rename: a non-empty directory where events.jsonl.1 goes.
    ASSERT_TRUE(std::filesystem::create_directories(base + ".1/blocker"));
    int written = 0;
    Status st;
    for (; written < 20; ++written) {
        st = store->append(heartbeat_event(true, written), kT0 + written);
        if (!st) break;
    }
    ASSERT_FALSE(st) << "rotation never ran";
    EXPECT_NE(st.error().message().find("rotate"), std::string::npos) << st.error().message();
    auto live = read_jsonl(base);
    ASSERT_TRUE(live);
    EXPECT_EQ(live->records.size(), static_cast<std::size_t>(written));
    EXPECT_EQ(live->skipped, 0u);
    // Once the way is clear the same store rotates and goes on.
    std::filesystem::remove_all(base + ".1");
    ASSERT_TRUE(store->append(heartbeat_event(true, 99), kT0 + 99));
    EXPECT_TRUE(std::filesystem::is_regular_file(base + ".1"));
    auto after = store->last(Stream::Events, 0);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->records.size(), static_cast<std::size_t>(written) + 1);
    EXPECT_EQ(after->records.back()["ts_ms"], kT0 + 99);
}

TEST(EventStore, FileHoldingOnlyATornRecordIsEmptiedAtOpen) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    ASSERT_TRUE(make_dirs(opts.dir));
    ASSERT_TRUE(write_file_atomic(opts.dir + "/failover.jsonl", R"({"from":"Standby","to":"Act)"));
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->repaired_at_open(), 1u);
    EXPECT_EQ(std::filesystem::file_size(store->live_path(Stream::Failover)), 0u);
    ASSERT_TRUE(store->append(FailoverRecord{.from = "Standby", .to = "Active", .term = 2}, kT0));
    auto q = store->last(Stream::Failover, 0);
    ASSERT_TRUE(q);
    ASSERT_EQ(q->records.size(), 1u);
    EXPECT_EQ(q->skipped, 0u);
}

TEST(EventStore, RotatedHistorySurvivesReopenInOrder) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    opts.max_record_bytes = 256;
    opts.max_file_bytes = 1024;
    opts.keep_files = 3;
    {
        auto store = EventStore::open(opts);
        ASSERT_TRUE(store);
        for (int i = 0; i < 20; ++i) ASSERT_TRUE(store->append(heartbeat_event(true, i), kT0 + i));
    }
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    ASSERT_TRUE(std::filesystem::exists(store->live_path(Stream::Events) + ".1"));
    for (int i = 20; i < 25; ++i) ASSERT_TRUE(store->append(heartbeat_event(true, i), kT0 + i));
    auto q = store->last(Stream::Events, 10);
    ASSERT_TRUE(q);
    ASSERT_EQ(q->records.size(), 10u);
    for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(q->records[i]["ts_ms"], kT0 + 15 + i);
}

TEST(EventStore, SyncedAppendsWork) {
    TempDir tmp;
    auto opts = small_options(tmp.path());
    opts.sync = SyncPolicy::EveryRecord;
    auto store = EventStore::open(opts);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append(BackupRecord{.files = 3, .bytes = 4096}, kT0));
    auto q = store->last(Stream::Backup, 1);
    ASSERT_TRUE(q);
    ASSERT_EQ(q->records.size(), 1u);
    EXPECT_EQ(q->records[0]["files"], 3);
    EXPECT_EQ(q->records[0]["bytes"], 4096);
    struct stat st {};
    ASSERT_EQ(::stat(store->live_path(Stream::Backup).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST(Stream, NamesRoundTrip) {
    for (auto s : {Stream::Events, Stream::Backup, Stream::Failover}) {
        EXPECT_EQ(parse_stream(to_string(s)), s);
    }
    EXPECT_FALSE(parse_stream("audit"));
}

}  // namespace
}  // namespace ha::store
