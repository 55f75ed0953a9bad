// Two sync engines (active, standby) in two network namespaces joined by a veth in 198.18.0.0/15:
// per-mode replication, initial sync, delete/rename, link cut, changing files, disk full, SQLite.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "common/log.hpp"
#include "netns_util.hpp"
#include "sync/engine.hpp"
#include "sync/wire.hpp"
#include "tmpdir.hpp"

namespace ha::sync {
namespace {

using test::NetnsPair;

void in_namespaces(const std::string& netns, const std::string& from, const std::string& to,
                   const std::function<void()>& fn) {
    const auto err = test::in_namespaces(netns, from, to, fn);
    ASSERT_EQ(err, "");
}

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::read_text;
using test::write_text;

const Key kKey{0x1234, 0x5678};

bool ci() {
    const char* v = std::getenv("CI");
    return v != nullptr && std::string_view(v) == "true";
}

template <typename F>
bool eventually(F&& f, std::chrono::milliseconds deadline = 15s) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
        if (f()) return true;
        std::this_thread::sleep_for(10ms);
    }
    return f();
}

bool has_temp(const std::string& dir) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        if (it->path().filename().string().starts_with(kTempPrefix)) return true;
    }
    return false;
}

// A child process, killed (SIGKILL) and reaped when this goes out of scope.
class Child {
  public:
    explicit Child(const std::string& shell_cmd) {
        pid_ = ::fork();
        if (pid_ == 0) {
            ::execl("/bin/sh", "sh", "-c", shell_cmd.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
    }
    ~Child() { kill(); }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        int st = 0;
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
    }

  private:
    pid_t pid_ = -1;
};

class SyncPair : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            // A fatal failure, so the body does not run after it.
            if (ci()) FAIL() << "netns sync tests need root (CI=true)";
            GTEST_SKIP() << "needs root for network and mount namespaces";
        }
        net_ = std::make_unique<NetnsPair>();
        ASSERT_TRUE(net_->ok()) << "creating namespaces";
        base_ = tmp_.path();
        act_ = base_ + "/box";    // the roots' real location on the active
        stby_ = base_ + "/stby";  // what the standby sees at the same paths
        fs::create_directories(act_);
        fs::create_directories(stby_);
    }
    void TearDown() override {
        active_.reset();
        standby_.reset();
        if (tmpfs_) ::umount2(stby_.c_str(), MNT_DETACH);
    }

    SyncConfig config(const std::string& state, const char* peer, const char* listen) {
        SyncConfig c;
        c.roots = {{act_ + "/vm", Mode::File},
                   {act_ + "/cdr", Mode::Append},
                   {act_ + "/db", Mode::Sqlite}};
        c.key = key_;
        c.peer = *IpAddr::parse(peer);
        c.listen = *IpAddr::parse(listen);
        c.port = 9528;
        c.state_dir = base_ + "/" + state;
        c.full_backup_minute = -1;
        c.io_timeout = io_timeout_;
        c.reconnect_max = 300ms;
        return c;
    }
    void start_active() {
        in_namespaces(net_->a(), "", "", [&] {
            auto e = Engine::create(config("state-a", "198.18.7.2", "198.18.7.1"));
            ASSERT_TRUE(e) << e.error().message();
            active_ = std::move(*e);
            active_->set_role(Role::Active);
        });
    }
    void start_standby(Key key = kKey) {
        in_namespaces(net_->b(), stby_, act_, [&] {
            auto c = config("state-b", "198.18.7.1", "198.18.7.2");
            c.key = key;
            auto e = Engine::create(c);
            ASSERT_TRUE(e) << e.error().message();
            standby_ = std::move(*e);
            standby_->set_role(Role::Standby);
        });
    }
    void start_both() {
        start_active();
        start_standby();
        ASSERT_TRUE(eventually([&] { return synced(); })) << "initial sync: " << describe();
    }
    // The standby as its own process (sh execs into unshare, then ip netns exec, then the peer:
    // one pid, so SIGKILL really kills the receiver mid-write).
    std::unique_ptr<Child> spawn_standby() {
        const auto cmd = fmt::format(
            "exec unshare -m sh -c 'mount --make-rprivate / && mount --bind {} {} && "
            "exec ip netns exec {} {} standby {} {}/state-b 198.18.7.1 198.18.7.2 {:x} {:x}'",
            stby_, act_, net_->b(), SYNC_PEER_BIN, act_, base_, kKey.k0, kKey.k1);
        return std::make_unique<Child>(cmd);
    }
    bool active_drained() {
        drain();
        const auto a = active_->status();
        return a.connected && a.initial_done && a.lag_bytes == 0 && a.queued_changes == 0;
    }
    bool synced() {
        drain();
        const auto a = active_->status();
        const auto s = standby_->status();
        return a.connected && a.initial_done && s.initial_done && a.lag_bytes == 0 &&
               a.queued_changes == 0;
    }
    std::string describe_active() {
        const auto a = active_->status();
        return fmt::format("active connected={} initial={} lag={} queued={} sent={} errors={}",
                           a.connected, a.initial_done, a.lag_bytes, a.queued_changes, a.files_sent,
                           a.errors);
    }
    std::string describe() {
        const auto a = active_->status();
        const auto s = standby_->status();
        return fmt::format(
            "active connected={} initial={} lag={} queued={} oldest_ns={} sent={} errors={}; "
            "standby connected={} initial={} applied={} errors={}",
            a.connected, a.initial_done, a.lag_bytes, a.queued_changes, a.oldest_unacked_ns,
            a.files_sent, a.errors, s.connected, s.initial_done, s.files_applied, s.errors);
    }
    void drain() {
        auto take = [&](Engine& e, std::vector<SyncEvent>& out) {
            e.drain_events([&](const SyncEvent& ev) { out.push_back(ev); });
        };
        if (active_) take(*active_, active_events_);
        if (standby_) take(*standby_, standby_events_);
    }
    static bool has_event(const std::vector<SyncEvent>& evs, SyncEvent::Kind k) {
        return std::any_of(evs.begin(), evs.end(), [&](const SyncEvent& e) { return e.kind == k; });
    }
    std::string A(const std::string& rel) const { return act_ + "/" + rel; }
    std::string S(const std::string& rel) const { return stby_ + "/" + rel; }

    test::TmpDir tmp_;
    Key key_ = kKey;
    std::chrono::milliseconds io_timeout_ = 1500ms;
    std::unique_ptr<NetnsPair> net_;
    std::string base_, act_, stby_;
    bool tmpfs_ = false;
    std::unique_ptr<Engine> active_;
    std::unique_ptr<Engine> standby_;
    std::vector<SyncEvent> active_events_, standby_events_;
};

TEST_F(SyncPair, FileAndAppendModesReplicateWithDeleteAndRename) {
    start_both();
    write_text(A("vm/1001/msg0001.txt"), "hello voicemail");
    ASSERT_TRUE(
        eventually([&] { return read_text(S("vm/1001/msg0001.txt")) == "hello voicemail"; }));
    ASSERT_EQ(::chmod(A("vm/1001/msg0001.txt").c_str(), 0600), 0);
    write_text(A("vm/1001/msg0001.txt"), "second version");
    ASSERT_TRUE(
        eventually([&] { return read_text(S("vm/1001/msg0001.txt")) == "second version"; }));
    struct stat sa {
    }, ss{};
    ASSERT_EQ(::stat(A("vm/1001/msg0001.txt").c_str(), &sa), 0);
    ASSERT_EQ(::stat(S("vm/1001/msg0001.txt").c_str(), &ss), 0);
    EXPECT_EQ(sa.st_mode & 07777, ss.st_mode & 07777);
    EXPECT_EQ(sa.st_mtim.tv_sec, ss.st_mtim.tv_sec);
    EXPECT_EQ(sa.st_mtim.tv_nsec, ss.st_mtim.tv_nsec);

    // Append: many small writes on one open file.
    {
        fs::create_directories(A("cdr"));
        FILE* f = std::fopen(A("cdr/Master.csv").c_str(), "a");
        ASSERT_NE(f, nullptr);
        std::string expect;
        for (int i = 0; i < 200; ++i) {
            const auto line = fmt::format("\"1001\",\"1002\",\"call {}\"\n", i);
            std::fputs(line.c_str(), f);
            std::fflush(f);
            expect += line;
        }
        std::fclose(f);
        ASSERT_TRUE(eventually([&] { return read_text(S("cdr/Master.csv")) == expect; }));
    }

    fs::rename(A("vm/1001/msg0001.txt"), A("vm/1001/msg0002.txt"));
    ASSERT_TRUE(eventually([&] {
        return !fs::exists(S("vm/1001/msg0001.txt")) &&
               read_text(S("vm/1001/msg0002.txt")) == "second version";
    }));
    fs::remove(A("vm/1001/msg0002.txt"));
    ASSERT_TRUE(eventually([&] { return !fs::exists(S("vm/1001/msg0002.txt")); }));
    fs::create_directories(A("vm/1002/INBOX"));
    write_text(A("vm/1002/INBOX/a.txt"), "in a new directory");
    ASSERT_TRUE(
        eventually([&] { return read_text(S("vm/1002/INBOX/a.txt")) == "in a new directory"; }));
    fs::remove_all(A("vm/1002"));
    ASSERT_TRUE(eventually([&] { return !fs::exists(S("vm/1002/INBOX/a.txt")); }));
    ASSERT_TRUE(eventually([&] { return synced(); }));
    EXPECT_FALSE(has_temp(stby_));
}

TEST_F(SyncPair, InitialSyncMovesOnlyWhatDiffersAndDeletesExtras) {
    for (int i = 0; i < 20; ++i)
        write_text(A(fmt::format("vm/f{}.txt", i)), fmt::format("content {}", i));
    // The standby already holds 15 identical copies (same bytes, mode and mtime), one stale copy
    // and one file the active no longer has.
    for (int i = 0; i < 15; ++i) {
        const auto rel = fmt::format("vm/f{}.txt", i);
        write_text(S(rel), fmt::format("content {}", i));
        struct stat st {};
        ASSERT_EQ(::stat(A(rel).c_str(), &st), 0);
        const timespec t[2] = {st.st_atim, st.st_mtim};
        ASSERT_EQ(::utimensat(AT_FDCWD, S(rel).c_str(), t, 0), 0);
        ASSERT_EQ(::chmod(S(rel).c_str(), st.st_mode & 07777), 0);
    }
    write_text(S("vm/f15.txt"), "stale");
    write_text(S("vm/extra.txt"), "gone on the active");
    start_both();
    EXPECT_EQ(active_->status().files_sent, 5u) << "4 missing + 1 stale";
    for (int i = 0; i < 20; ++i)
        EXPECT_EQ(read_text(S(fmt::format("vm/f{}.txt", i))), fmt::format("content {}", i));
    EXPECT_FALSE(fs::exists(S("vm/extra.txt")));
    drain();
    EXPECT_TRUE(has_event(active_events_, SyncEvent::Kind::InitialSyncDone));

    // On-demand full backup: checksums compare, nothing differs, success is reported.
    active_->request_full_sync();
    ASSERT_TRUE(eventually([&] {
        drain();
        return has_event(active_events_, SyncEvent::Kind::BackupSuccess);
    }));
    const auto st = active_->status();
    EXPECT_EQ(st.full_backup.last_result, BackupResult::Success);
    EXPECT_GT(st.full_backup.last_time_ms, 0);
}

TEST_F(SyncPair, KeepalivesNeverLandInsideAPayload) {
    io_timeout_ = 200ms;  // a ping every 50 ms, many of them during each large payload
    start_both();
    std::string big(64 << 20, 'k');
    for (std::size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    for (int i = 0; i < 3; ++i) write_text(A(fmt::format("vm/large{}.wav", i)), big);
    ASSERT_TRUE(eventually([&] { return synced(); }, 60s)) << describe();
    for (int i = 0; i < 3; ++i) EXPECT_EQ(read_text(S(fmt::format("vm/large{}.wav", i))), big);
    drain();
    EXPECT_FALSE(has_event(standby_events_, SyncEvent::Kind::PeerRefused));
    EXPECT_EQ(standby_->status().errors, 0u);
}

TEST_F(SyncPair, QuarantineKeepsTheLosersDataAndPullsAFullCopy) {
    write_text(A("vm/shared.txt"), "the winner's version");
    start_both();
    // Split brain: the standby-to-be wrote its own data while it was active.
    write_text(S("vm/shared.txt"), "the loser's version");
    write_text(S("vm/only-on-loser.txt"), "written during the partition");
    standby_->quarantine(7);
    ASSERT_TRUE(eventually([&] {
        drain();
        return has_event(standby_events_, SyncEvent::Kind::Quarantined);
    }));
    ASSERT_TRUE(eventually([&] {
        return synced() && read_text(S("vm/shared.txt")) == "the winner's version";
    })) << describe();
    EXPECT_FALSE(fs::exists(S("vm/only-on-loser.txt")));
    std::string kept;
    for (const auto& e : fs::directory_iterator(base_ + "/state-b/quarantine")) {
        EXPECT_TRUE(e.path().filename().string().starts_with("7-")) << e.path();
        kept = read_text(e.path().string() + "/0/only-on-loser.txt");
        EXPECT_EQ(read_text(e.path().string() + "/0/shared.txt"), "the loser's version");
    }
    EXPECT_EQ(kept, "written during the partition");
}

TEST_F(SyncPair, WrongKeyIsRefusedAndNothingMoves) {
    write_text(A("vm/secret.txt"), "x");
    start_active();
    start_standby(Key{9, 9});
    ASSERT_TRUE(eventually([&] {
        drain();
        return has_event(active_events_, SyncEvent::Kind::PeerRefused) &&
               has_event(standby_events_, SyncEvent::Kind::PeerRefused);
    }));
    EXPECT_FALSE(active_->status().connected);
    EXPECT_FALSE(fs::exists(S("vm/secret.txt")));
}

TEST_F(SyncPair, LinkCutMidTransferThenCatchUp) {
    start_both();
    std::string big(48 << 20, 'v');
    for (std::size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    write_text(A("vm/big.wav"), big);
    ASSERT_TRUE(eventually([&] { return active_->status().bytes_sent > 0; }));
    net_->link(false);
    ASSERT_TRUE(
        eventually([&] { return !active_->status().connected && !standby_->status().connected; }));
    EXPECT_FALSE(has_temp(stby_)) << "a half-received file is discarded";
    if (fs::exists(S("vm/big.wav"))) {
        EXPECT_EQ(read_text(S("vm/big.wav")), big) << "whole or absent";
    }
    write_text(A("vm/during-cut.txt"), "written while the link was down");
    net_->link(true);
    ASSERT_TRUE(eventually([&] { return synced(); }, 30s));
    EXPECT_EQ(read_text(S("vm/big.wav")), big);
    EXPECT_EQ(read_text(S("vm/during-cut.txt")), "written while the link was down");
    EXPECT_FALSE(has_temp(stby_));
}

TEST_F(SyncPair, ReceiverKilledMidFileLeavesNoPartialFileAndCatchesUp) {
    write_text(A("vm/old.txt"), "before");
    start_active();
    auto peer = spawn_standby();
    ASSERT_TRUE(eventually([&] { return active_drained(); })) << describe_active();
    EXPECT_EQ(read_text(S("vm/old.txt")), "before");
    std::string big(96 << 20, 'r');
    for (std::size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    write_text(A("vm/rec.wav"), big);
    ASSERT_TRUE(eventually([&] { return has_temp(stby_); })) << "transfer started";
    peer->kill();  // SIGKILL while the temp file is being written
    EXPECT_FALSE(fs::exists(S("vm/rec.wav"))) << "the target name never shows a partial file";
    peer = spawn_standby();
    ASSERT_TRUE(
        eventually([&] { return active_drained() && read_text(S("vm/rec.wav")) == big; }, 30s))
        << describe_active();
    EXPECT_FALSE(has_temp(stby_)) << "the restarted receiver removed the partial temp file";
}

TEST_F(SyncPair, ActiveRestartMidTransferCatchesUp) {
    start_both();
    std::string big(32 << 20, 'q');
    for (std::size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    write_text(A("vm/big.wav"), big);
    ASSERT_TRUE(eventually([&] { return active_->status().bytes_sent > 0; }));
    active_.reset();  // the agent stops (or crashes) on the active
    write_text(A("vm/while-down.txt"), "changed while the agent was down");
    start_active();
    ASSERT_TRUE(eventually([&] { return synced(); }, 30s)) << describe();
    EXPECT_EQ(read_text(S("vm/big.wav")), big);
    EXPECT_EQ(read_text(S("vm/while-down.txt")), "changed while the agent was down");
    EXPECT_FALSE(has_temp(stby_));
}

TEST_F(SyncPair, FileChangingWhileSentNeverLandsMixed) {
    start_both();
    std::atomic<bool> stop{false};
    std::atomic<int> versions{0};
    constexpr std::size_t kSize = 2 << 20;
    std::thread writer([&] {
        // Rewrites in place (no rename): every version is one repeated byte.
        for (int v = 0; !stop && v < 200; ++v) {
            const int fd = ::open(A("vm/rec.raw").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) {
                fs::create_directories(A("vm"));
                continue;
            }
            const std::string data(kSize, static_cast<char>('A' + v % 26));
            std::size_t off = 0;
            while (off < data.size())
                off += static_cast<std::size_t>(
                    std::max<ssize_t>(0, ::write(fd, data.data() + off, 65536)));
            ::close(fd);
            versions = v + 1;
            // Some versions stay put long enough to be copied, most do not.
            if (v % 10 == 0) std::this_thread::sleep_for(50ms);
        }
    });
    int observations = 0;
    bool mixed = false;
    const auto end = std::chrono::steady_clock::now() + 4s;
    while (std::chrono::steady_clock::now() < end && versions < 200) {
        const auto s = read_text(S("vm/rec.raw"));
        if (!s.empty()) {
            ++observations;
            if (s.size() != kSize || s.find_first_not_of(s[0]) != std::string::npos) {
                if (!mixed) {
                    ADD_FAILURE() << "standby copy: size " << s.size() << " first byte " << s[0]
                                  << " first other at " << s.find_first_not_of(s[0]);
                }
                mixed = true;
            }
        }
    }
    stop = true;
    writer.join();
    EXPECT_FALSE(mixed) << "the standby showed a torn or mixed version";
    ASSERT_TRUE(eventually(
        [&] { return synced() && read_text(S("vm/rec.raw")) == read_text(A("vm/rec.raw")); }));
    EXPECT_GT(observations, 0);
    EXPECT_FALSE(has_temp(stby_));
}

TEST_F(SyncPair, StandbyDiskFullRaisesAnEventLeavesNothingTornAndCatchesUp) {
    ASSERT_EQ(::mount("tmpfs", stby_.c_str(), "tmpfs", 0, "size=8m"), 0) << std::strerror(errno);
    tmpfs_ = true;
    write_text(S("filler"), std::string(6 << 20, 'f'));  // outside the roots, same filesystem
    start_both();
    const std::string big(4 << 20, 'x');
    write_text(A("vm/big.wav"), big);
    ASSERT_TRUE(eventually([&] {
        drain();
        return has_event(standby_events_, SyncEvent::Kind::DiskFull) &&
               has_event(active_events_, SyncEvent::Kind::DiskFull);
    }));
    EXPECT_FALSE(fs::exists(S("vm/big.wav")));
    EXPECT_FALSE(has_temp(stby_));
    fs::remove(S("filler"));
    ASSERT_TRUE(eventually([&] { return synced() && read_text(S("vm/big.wav")) == big; }, 20s));
}

// Counts rows and runs PRAGMA integrity_check on a fresh read-only connection.
bool check_db(const std::string& path, std::int64_t& rows, std::string& why) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        why = "open";
        sqlite3_close(db);
        return false;
    }
    bool ok = true;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const std::string r = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        if (r != "ok") {
            ok = false;
            why = r;
        }
    } else {
        ok = false;
        why = sqlite3_errmsg(db);
    }
    sqlite3_finalize(st);
    if (ok &&
        sqlite3_prepare_v2(db, "SELECT count(*), coalesce(sum(n),0) FROM cdr", -1, &st, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        rows = sqlite3_column_int64(st, 0);
        // Each transaction inserts 5 rows numbered consecutively: a mixed copy breaks the sum.
        if (rows % 5 != 0) {
            ok = false;
            why = fmt::format("{} rows: a partial transaction", rows);
        }
    } else if (ok) {
        ok = false;
        why = sqlite3_errmsg(db);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok;
}

TEST_F(SyncPair, SqliteUnderContinuousWritesIsAlwaysConsistentAndMovesForward) {
    fs::create_directories(A("db"));
    sqlite3* w = nullptr;
    ASSERT_EQ(sqlite3_open(A("db/pbx.db").c_str(), &w), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(w,
                           "PRAGMA journal_mode=WAL; CREATE TABLE cdr(id INTEGER PRIMARY KEY, n "
                           "INTEGER, pad TEXT);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    start_both();
    std::atomic<bool> stop{false};
    std::atomic<std::int64_t> committed{0};
    std::thread writer([&] {
        for (int t = 0; !stop; ++t) {
            std::string sql = "BEGIN;";
            for (int i = 0; i < 5; ++i)
                sql += fmt::format("INSERT INTO cdr(n, pad) VALUES({}, printf('%.200c','x'));",
                                   t * 5 + i);
            sql += "COMMIT;";
            if (sqlite3_exec(w, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK)
                committed += 5;
            std::this_thread::sleep_for(2ms);
        }
    });
    std::int64_t last = 0;
    int observations = 0;
    std::string failure;
    // A reader that keeps the replica open (the standby's web UI, say): snapshots applied
    // through SQLite reach it; each read is one consistent transaction.
    sqlite3* keep = nullptr;
    std::int64_t keep_first = -1;
    std::int64_t keep_last = -1;
    const auto end = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < end && failure.empty()) {
        if (!fs::exists(S("db/pbx.db"))) continue;
        std::int64_t rows = 0;
        std::string why;
        if (!check_db(S("db/pbx.db"), rows, why)) {
            failure = why;
            break;
        }
        if (rows < last) failure = fmt::format("went back from {} to {} rows", last, rows);
        last = rows;
        ++observations;
        if (keep == nullptr && rows > 0) {
            ASSERT_EQ(sqlite3_open_v2(S("db/pbx.db").c_str(), &keep, SQLITE_OPEN_READONLY, nullptr),
                      SQLITE_OK);
        }
        if (keep != nullptr) {
            sqlite3_stmt* st = nullptr;
            if (sqlite3_prepare_v2(keep, "SELECT count(*) FROM cdr", -1, &st, nullptr) ==
                    SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW) {
                const std::int64_t n = sqlite3_column_int64(st, 0);
                if (n % 5 != 0 || n < keep_last)
                    failure = fmt::format("open reader saw {} rows after {}", n, keep_last);
                if (keep_first < 0) keep_first = n;
                keep_last = n;
            } else {
                failure = fmt::format("open reader: {}", sqlite3_errmsg(keep));
            }
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(keep);
    stop = true;
    writer.join();
    sqlite3_close(w);
    write_text(A("db/README"), "not a database: sent as a plain file");
    EXPECT_EQ(failure, "");
    EXPECT_GT(observations, 10);
    EXPECT_GT(last, 0) << "the replica moved forward while the writer ran";
    EXPECT_GT(keep_last, keep_first) << "a reader that kept it open saw it move forward too";
    ASSERT_TRUE(eventually([&] {
        std::int64_t rows = 0;
        std::string why;
        return synced() && check_db(S("db/pbx.db"), rows, why) && rows == committed.load();
    }));
    // A WAL database gives a WAL replica (snapshots are applied through SQLite), whose -wal is
    // part of it.
    {
        sqlite3* r = nullptr;
        ASSERT_EQ(sqlite3_open_v2(S("db/pbx.db").c_str(), &r, SQLITE_OPEN_READONLY, nullptr),
                  SQLITE_OK);
        sqlite3_stmt* st = nullptr;
        ASSERT_EQ(sqlite3_prepare_v2(r, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
        sqlite3_finalize(st);
        sqlite3_close(r);
    }
    ASSERT_TRUE(eventually([&] { return read_text(S("db/README")) == read_text(A("db/README")); }));
}

}  // namespace
}  // namespace ha::sync
