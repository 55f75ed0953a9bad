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

#include "common/clock.hpp"
#include "common/log.hpp"
#include "netns_util.hpp"
#include "sync/engine.hpp"
#include "sync/wire.hpp"
#include "tmpdir.hpp"

namespace ha::sync {

// Readable parameter names in gtest's output.
void PrintTo(Mode m, std::ostream* os) {
    *os << to_string(m);
}

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
        ASSERT_TRUE(settles([&] { return synced(); })) << "initial sync: " << describe();
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
    // A status published after `since_` covers every change the test made before it.
    bool active_drained() {
        drain();
        const auto a = active_->status();
        return a.as_of_ns > since_ && a.drained();
    }
    bool synced() {
        drain();
        const auto a = active_->status();
        const auto s = standby_->status();
        return a.as_of_ns > since_ && a.drained() && s.initial_done;
    }
    // eventually(), but drained() only counts from now on.
    template <typename F>
    bool settles(F&& f, std::chrono::milliseconds deadline = 15s) {
        since_ = mono_ns();
        return eventually(std::forward<F>(f), deadline);
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
    std::uint64_t since_ = 0;
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
        settles([&] { return read_text(S("vm/1002/INBOX/a.txt")) == "in a new directory"; }));
    fs::remove_all(A("vm/1002"));
    ASSERT_TRUE(settles([&] { return !fs::exists(S("vm/1002/INBOX/a.txt")); }));
    ASSERT_TRUE(settles([&] { return synced(); }));
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

TEST_F(SyncPair, FullBackupStatusShowsProgressWhileInProgress) {
    // The guide's Full Backup Status: "In progress" with files, bytes, rate and ETA while the
    // standby's initial sync (a backup in the backup log) runs; Idle and a result after it.
    constexpr int kFiles = 256;
    constexpr std::size_t kSize = 2 << 20;
    std::string body(kSize, 'b');
    for (int i = 0; i < kFiles; ++i) {
        body[0] = static_cast<char>('a' + i % 26);
        write_text(A(fmt::format("vm/rec{}.wav", i)), body);
    }
    start_active();
    start_standby();
    FullBackupStatus mid;
    bool seen = false;
    bool midway = false;
    const auto end = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < end) {
        drain();
        const auto fb = active_->status().full_backup;
        if (fb.in_progress) {
            seen = true;
            if (fb.bytes_done > 0 && fb.bytes_done < fb.bytes_total && fb.rate_Bps > 0) {
                mid = fb;
                midway = true;
            }
        } else if (seen && fb.last_result != BackupResult::None) {
            break;
        }
        std::this_thread::sleep_for(1ms);
    }
    ASSERT_TRUE(seen) << "never In progress: " << describe();
    ASSERT_TRUE(midway) << "no observation with progress and a rate";
    EXPECT_EQ(mid.files_total, static_cast<std::uint64_t>(kFiles));
    EXPECT_EQ(mid.bytes_total, kFiles * kSize);
    EXPECT_LE(mid.files_done, mid.files_total);
    // ETA: what is left at the measured rate, in whole seconds (the fields are read one by one,
    // so allow for a publish between two of them): never more than all of it at that rate.
    EXPECT_LE(mid.eta_s, mid.bytes_total / mid.rate_Bps + 1);
    const auto done = active_->status().full_backup;
    EXPECT_FALSE(done.in_progress);
    EXPECT_EQ(done.last_result, BackupResult::Success);
    EXPECT_GT(done.last_time_ms, 0);
}

TEST_F(SyncPair, KeepalivesNeverLandInsideAPayload) {
    io_timeout_ = 200ms;  // a ping every 50 ms, many of them during each large payload
    start_both();
    std::string big(64 << 20, 'k');
    for (std::size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    for (int i = 0; i < 3; ++i) write_text(A(fmt::format("vm/large{}.wav", i)), big);
    ASSERT_TRUE(settles([&] { return synced(); }, 60s)) << describe();
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
    ASSERT_TRUE(settles([&] {
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
    ASSERT_TRUE(settles([&] { return synced(); }, 30s));
    EXPECT_EQ(read_text(S("vm/big.wav")), big);
    EXPECT_EQ(read_text(S("vm/during-cut.txt")), "written while the link was down");
    EXPECT_FALSE(has_temp(stby_));
}

TEST_F(SyncPair, ReceiverKilledMidFileLeavesNoPartialFileAndCatchesUp) {
    write_text(A("vm/old.txt"), "before");
    start_active();
    auto peer = spawn_standby();
    ASSERT_TRUE(settles([&] { return active_drained(); })) << describe_active();
    EXPECT_EQ(read_text(S("vm/old.txt")), "before");
    std::string big(96 << 20, 'r');
    for (std::size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    write_text(A("vm/rec.wav"), big);
    ASSERT_TRUE(eventually([&] { return has_temp(stby_); })) << "transfer started";
    peer->kill();  // SIGKILL while the temp file is being written
    EXPECT_FALSE(fs::exists(S("vm/rec.wav"))) << "the target name never shows a partial file";
    peer = spawn_standby();
    ASSERT_TRUE(settles([&] { return active_drained() && read_text(S("vm/rec.wav")) == big; }, 30s))
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
    ASSERT_TRUE(settles([&] { return synced(); }, 30s)) << describe();
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
    ASSERT_TRUE(settles(
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
    ASSERT_TRUE(settles([&] { return synced() && read_text(S("vm/big.wav")) == big; }, 20s));
}

// Counts rows and runs PRAGMA integrity_check on a fresh read-only connection.
bool check_db(const std::string& path, std::int64_t& rows, std::string& why) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        why = "open";
        sqlite3_close(db);
        return false;
    }
    sqlite3_busy_timeout(db, 2000);
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

// A WAL database with the cdr table check_db() reads, open for writing (nullptr on failure).
sqlite3* create_cdr_db(const std::string& path) {
    fs::create_directories(fs::path(path).parent_path());
    sqlite3* w = nullptr;
    if (sqlite3_open(path.c_str(), &w) != SQLITE_OK) {
        ADD_FAILURE() << "open " << path << ": " << sqlite3_errmsg(w);
        sqlite3_close(w);
        return nullptr;
    }
    sqlite3_busy_timeout(w, 5000);
    if (sqlite3_exec(w,
                     "PRAGMA journal_mode=WAL; CREATE TABLE cdr(id INTEGER PRIMARY KEY, n "
                     "INTEGER, pad TEXT);",
                     nullptr, nullptr, nullptr) != SQLITE_OK) {
        ADD_FAILURE() << "create " << path << ": " << sqlite3_errmsg(w);
        sqlite3_close(w);
        return nullptr;
    }
    return w;
}

// A VFS over the default one whose fsync of a -wal file takes `kSlowWalSync`: a commit whose WAL
// write (seen by inotify) comes long before its wal-index header update (a memory write nobody
// sees), as on a slow or busy disk. The default VFS's file object is used as it is; only its
// methods table is swapped, for a copy whose xSync sleeps first.
constexpr auto kSlowWalSync = 40ms;
struct SlowWalVfs {
    static inline sqlite3_vfs* base = nullptr;
    static inline sqlite3_vfs vfs{};
    static inline const sqlite3_io_methods* real = nullptr;
    static inline sqlite3_io_methods slow{};

    static int sync(sqlite3_file* f, int flags) {
        std::this_thread::sleep_for(kSlowWalSync);
        return real->xSync(f, flags);
    }
    static int open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
        const int rc = base->xOpen(base, name, f, flags, out);
        if (rc != SQLITE_OK || (flags & SQLITE_OPEN_WAL) == 0 || f->pMethods == nullptr) return rc;
        if (real == nullptr) {
            real = f->pMethods;
            slow = *real;
            slow.xSync = &sync;
        }
        if (f->pMethods == real) f->pMethods = &slow;
        return rc;
    }
    static const char* install() {
        if (base == nullptr) {
            base = sqlite3_vfs_find(nullptr);
            vfs = *base;
            vfs.zName = "slow-wal-sync";
            vfs.pNext = nullptr;
            vfs.xOpen = &open;
            sqlite3_vfs_register(&vfs, 0);
        }
        return vfs.zName;
    }
};

std::int64_t replica_rows(const std::string& path) {
    std::int64_t rows = -1;
    std::string why;
    return check_db(path, rows, why) ? rows : -1;
}

TEST_F(SyncPair, SqliteCommitVisibleLongAfterItsWalWriteStillReachesTheStandby) {
    sqlite3* w = create_cdr_db(A("db/pbx.db"));
    ASSERT_NE(w, nullptr);
    start_both();
    ASSERT_TRUE(settles([&] { return synced() && replica_rows(S("db/pbx.db")) == 0; }))
        << describe();
    // A second writer whose commits fsync the WAL slowly (synchronous=FULL syncs it before the
    // header moves), like a PBX worker on a busy disk. Each commit is the only write for a while:
    // nothing after it would wake the watcher again.
    sqlite3* slow = nullptr;
    ASSERT_EQ(sqlite3_open_v2(A("db/pbx.db").c_str(), &slow, SQLITE_OPEN_READWRITE,
                              SlowWalVfs::install()),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(slow, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr), SQLITE_OK);
    for (std::int64_t i = 1; i <= 3; ++i) {
        // Five rows a transaction, as check_db() wants them.
        ASSERT_EQ(sqlite3_exec(slow,
                               "INSERT INTO cdr(n, pad) SELECT value, 'x' FROM "
                               "(WITH RECURSIVE c(value) AS (SELECT 1 UNION ALL SELECT value + 1 "
                               "FROM c WHERE value < 5) SELECT value FROM c)",
                               nullptr, nullptr, nullptr),
                  SQLITE_OK);
        EXPECT_TRUE(settles([&] { return synced() && replica_rows(S("db/pbx.db")) == 5 * i; }, 5s))
            << "commit " << i << ": the standby has " << replica_rows(S("db/pbx.db")) << " rows; "
            << describe();
        std::this_thread::sleep_for(100ms);
    }
    sqlite3_close(slow);
    sqlite3_close(w);
}

TEST_F(SyncPair, SqliteUnderContinuousWritesIsAlwaysConsistentAndMovesForward) {
    sqlite3* w = create_cdr_db(A("db/pbx.db"));
    ASSERT_NE(w, nullptr);
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
            sqlite3_busy_timeout(keep, 2000);
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
    ASSERT_TRUE(settles([&] {
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

// ---------------------------------------------------------------- every fault, in every mode
//
// A writer keeps changing one root (whole files rewritten in place / a CSV appended to / SQLite
// transactions) while a fault hits; the standby's copy is checked all along (never torn, mixed
// or garbage) and must equal the active's once the fault is gone and the writer has stopped.

enum class Fault : std::uint8_t { LinkCut, ReceiverKilled, ActiveRestart, DiskFull };
std::string_view fault_name(Fault f) {
    switch (f) {
        case Fault::LinkCut:
            return "LinkCut";
        case Fault::ReceiverKilled:
            return "ReceiverKilled";
        case Fault::ActiveRestart:
            return "ActiveRestart";
        case Fault::DiskFull:
            return "DiskFull";
    }
    return "?";
}

void PrintTo(Fault f, std::ostream* os) {
    *os << fault_name(f);
}

constexpr std::size_t kFileSize = 512 << 10;  // one version of a rewritten file
constexpr int kFiles = 6;
constexpr std::size_t kLine = 64;  // one CSV line

std::string csv_line(std::int64_t i) {
    auto l = fmt::format("{:010},1001,1002,ANSWERED,", i);
    l.resize(kLine - 1, 'x');
    return l + "\n";
}

class SyncFault : public SyncPair, public ::testing::WithParamInterface<std::tuple<Mode, Fault>> {
  protected:
    Mode mode() const { return std::get<0>(GetParam()); }
    Fault fault() const { return std::get<1>(GetParam()); }

    // The writer: runs until stop_, counting what it committed.
    void write_loop() {
        fs::create_directories(A("vm/w"));
        fs::create_directories(A("cdr"));
        fs::create_directories(A("db"));
        sqlite3* db = nullptr;
        if (mode() == Mode::Sqlite) {
            sqlite3_open(A("db/fault.db").c_str(), &db);
            // As the PBX would: the engine's snapshot may hold a read lock for a moment.
            sqlite3_busy_timeout(db, 5000);
            sqlite3_exec(db,
                         "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER "
                         "PRIMARY KEY, n INTEGER, pad TEXT)",
                         nullptr, nullptr, nullptr);
        }
        const int csv = ::open(A("cdr/fault.csv").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        for (std::int64_t v = 1; !stop_; ++v) {
            switch (mode()) {
                case Mode::File: {
                    // In place (no rename): every version is one repeated byte.
                    const auto path = A(fmt::format("vm/w/f{}.bin", v % kFiles));
                    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
                    const std::string data(kFileSize, static_cast<char>('A' + v % 26));
                    for (std::size_t off = 0; fd >= 0 && off < data.size();) {
                        const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
                        if (n <= 0) break;
                        off += static_cast<std::size_t>(n);
                    }
                    ::close(fd);
                    std::this_thread::sleep_for(15ms);
                    break;
                }
                case Mode::Append: {
                    // 32 lines per write, one write per ms (2 MB/s: fills the full disk soon).
                    std::string lines;
                    for (int i = 0; i < 32; ++i) lines += csv_line(committed_ + i);
                    if (::write(csv, lines.data(), lines.size()) ==
                        static_cast<ssize_t>(lines.size()))
                        committed_ += 32;
                    std::this_thread::sleep_for(1ms);
                    break;
                }
                case Mode::Sqlite: {
                    std::string sql = "BEGIN;";
                    for (int i = 0; i < 5; ++i)
                        sql += fmt::format(
                            "INSERT INTO t(n, pad) VALUES({}, printf('%.300c','x'));", v * 5 + i);
                    sql += "COMMIT;";
                    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK)
                        committed_ += 5;
                    std::this_thread::sleep_for(3ms);
                    break;
                }
            }
        }
        ::close(csv);
        sqlite3_close(db);
    }

    // The standby's copy right now: "" when whole (or absent), else what is wrong.
    std::string check_standby() {
        switch (mode()) {
            case Mode::File:
                for (int i = 0; i < kFiles; ++i) {
                    const auto s = read_text(S(fmt::format("vm/w/f{}.bin", i)));
                    if (s.empty()) continue;
                    if (s.size() != kFileSize || s.find_first_not_of(s[0]) != std::string::npos)
                        return fmt::format("f{}.bin: {} bytes, mixed={}", i, s.size(),
                                           s.find_first_not_of(s[0]) != std::string::npos);
                }
                return {};
            case Mode::Append: {
                const auto s = read_text(S("cdr/fault.csv"));
                for (std::size_t off = 0; off < s.size(); off += kLine) {
                    const auto want = csv_line(static_cast<std::int64_t>(off / kLine));
                    if (s.compare(off, std::min(kLine, s.size() - off), want, 0,
                                  std::min(kLine, s.size() - off)) != 0)
                        return fmt::format("fault.csv: {} bytes, not a prefix at {}", s.size(),
                                           off);
                }
                return {};
            }
            case Mode::Sqlite: {
                if (!fs::exists(S("db/fault.db"))) return {};
                sqlite3* r = nullptr;
                std::string why;
                if (sqlite3_open_v2(S("db/fault.db").c_str(), &r, SQLITE_OPEN_READONLY, nullptr) !=
                    SQLITE_OK) {
                    why = "open";
                } else {
                    // A reader of a live WAL database waits out a recovery or a checkpoint.
                    sqlite3_busy_timeout(r, 2000);
                    sqlite3_stmt* st = nullptr;
                    if (sqlite3_prepare_v2(r, "PRAGMA integrity_check", -1, &st, nullptr) !=
                            SQLITE_OK ||
                        sqlite3_step(st) != SQLITE_ROW) {
                        // On a full disk a reader of a WAL database may fail to grow its -shm:
                        // it cannot read for now, which is not a damaged copy.
                        const int code = sqlite3_errcode(r) & 0xff;
                        const bool full_disk_read = fault() == Fault::DiskFull &&
                                                    (code == SQLITE_IOERR || code == SQLITE_FULL);
                        if (!full_disk_read) why = fmt::format("integrity: {}", sqlite3_errmsg(r));
                        sqlite3_finalize(st);
                        sqlite3_close(r);
                        return why;
                    }
                    if (std::string_view(
                            reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) != "ok")
                        why =
                            fmt::format("integrity: {}",
                                        reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
                    sqlite3_finalize(st);
                    if (why.empty() &&
                        sqlite3_prepare_v2(r, "SELECT count(*) FROM t", -1, &st, nullptr) ==
                            SQLITE_OK &&
                        sqlite3_step(st) == SQLITE_ROW) {
                        if (sqlite3_column_int64(st, 0) % 5 != 0)
                            why = fmt::format("{} rows: a partial transaction",
                                              sqlite3_column_int64(st, 0));
                    } else if (why.empty() && sqlite3_errcode(r) != SQLITE_OK) {
                        // No table yet: the replica predates the writer's first commit.
                        if (std::string_view(sqlite3_errmsg(r)).find("no such table") ==
                            std::string_view::npos)
                            why = sqlite3_errmsg(r);
                    }
                    sqlite3_finalize(st);
                }
                sqlite3_close(r);
                return why;
            }
        }
        return {};
    }

    bool standby_equals_active() {
        switch (mode()) {
            case Mode::File:
                for (int i = 0; i < kFiles; ++i) {
                    const auto rel = fmt::format("vm/w/f{}.bin", i);
                    if (read_text(S(rel)) != read_text(A(rel))) return false;
                }
                return true;
            case Mode::Append:
                return read_text(S("cdr/fault.csv")) == read_text(A("cdr/fault.csv"));
            case Mode::Sqlite: {
                sqlite3* r = nullptr;
                if (sqlite3_open_v2(S("db/fault.db").c_str(), &r, SQLITE_OPEN_READONLY, nullptr) !=
                    SQLITE_OK) {
                    sqlite3_close(r);
                    return false;
                }
                sqlite3_busy_timeout(r, 2000);
                sqlite3_stmt* st = nullptr;
                std::int64_t rows = -1;
                if (sqlite3_prepare_v2(r, "SELECT count(*) FROM t", -1, &st, nullptr) ==
                        SQLITE_OK &&
                    sqlite3_step(st) == SQLITE_ROW)
                    rows = sqlite3_column_int64(st, 0);
                sqlite3_finalize(st);
                sqlite3_close(r);
                return rows == committed_.load();
            }
        }
        return false;
    }

    // Watches the standby for `d`, recording the first problem seen.
    void observe_for(std::chrono::milliseconds d) {
        const auto end = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < end) {
            if (auto why = check_standby(); !why.empty() && problem_.empty()) problem_ = why;
            std::this_thread::sleep_for(2ms);
        }
    }

    std::atomic<bool> stop_{false};
    std::atomic<std::int64_t> committed_{0};
    std::string problem_;
};

TEST_P(SyncFault, StandbyCopyIsNeverTornAndCatchesUp) {
    const bool disk_full = fault() == Fault::DiskFull;
    if (disk_full) {
        // A small standby filesystem, nearly full (the filler is outside the roots).
        ASSERT_EQ(::mount("tmpfs", stby_.c_str(), "tmpfs", 0, "size=8m"), 0)
            << std::strerror(errno);
        tmpfs_ = true;
        write_text(S("filler"), std::string(std::size_t{6} << 20, 'f'));
    }
    start_active();
    std::unique_ptr<Child> peer;
    if (fault() == Fault::ReceiverKilled) {
        peer = spawn_standby();
        ASSERT_TRUE(settles([&] { return active_drained(); })) << describe_active();
    } else {
        start_standby();
        ASSERT_TRUE(settles([&] { return synced(); })) << describe();
    }
    std::thread writer([&] { write_loop(); });
    struct Join {  // a failed ASSERT returns early: stop the writer first
        std::atomic<bool>& stop;
        std::thread& t;
        ~Join() {
            stop = true;
            if (t.joinable()) t.join();
        }
    } join{stop_, writer};
    observe_for(400ms);  // it streams
    switch (fault()) {
        case Fault::LinkCut:
            net_->link(false);
            observe_for(2500ms);  // past io_timeout: both sides drop the connection
            net_->link(true);
            break;
        case Fault::ReceiverKilled:
            peer->kill();  // SIGKILL, whatever it was doing
            observe_for(500ms);
            peer = spawn_standby();
            break;
        case Fault::ActiveRestart:
            active_.reset();
            observe_for(500ms);
            start_active();
            break;
        case Fault::DiskFull:
            ASSERT_TRUE(eventually([&] {
                drain();
                observe_for(20ms);
                return has_event(active_events_, SyncEvent::Kind::DiskFull);
            })) << describe();
            fs::remove(S("filler"));
            break;
    }
    observe_for(500ms);  // catching up while the writer goes on
    stop_ = true;
    writer.join();
    const std::int64_t committed = committed_.load();
    (void)committed;
    ASSERT_TRUE(settles(
        [&] {
            if (auto why = check_standby(); !why.empty() && problem_.empty()) problem_ = why;
            return active_drained() && standby_equals_active();
        },
        30s))
        << describe_active();
    EXPECT_EQ(problem_, "") << "the standby showed a torn, mixed or damaged copy";
    EXPECT_FALSE(has_temp(stby_));
    drain();
    if (disk_full) {
        EXPECT_TRUE(has_event(active_events_, SyncEvent::Kind::Restored)) << "disk full cleared";
    } else if (fault() == Fault::ActiveRestart) {
        EXPECT_TRUE(has_event(standby_events_, SyncEvent::Kind::Disconnected));
    } else {
        EXPECT_TRUE(has_event(active_events_, SyncEvent::Kind::Disconnected));
    }
}

INSTANTIATE_TEST_SUITE_P(
    EveryModeEveryFault, SyncFault,
    ::testing::Combine(::testing::Values(Mode::File, Mode::Append, Mode::Sqlite),
                       ::testing::Values(Fault::LinkCut, Fault::ReceiverKilled,
                                         Fault::ActiveRestart, Fault::DiskFull)),
    [](const ::testing::TestParamInfo<std::tuple<Mode, Fault>>& p) {
        return std::string(to_string(std::get<0>(p.param))) +
               std::string(fault_name(std::get<1>(p.param)));
    });

}  // namespace
}  // namespace ha::sync
