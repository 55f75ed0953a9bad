// SQLite snapshots and replicas: a snapshot is a whole database in a memfd that keeps the source's
// journal mode; a WAL snapshot is applied to a WAL replica through SQLite (readers that keep the
// replica open see it move forward), anything else is installed by rename, in arrival order.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include "sync/apply.hpp"
#include "sync/replica.hpp"
#include "sync/snapshot.hpp"
#include "tmpdir.hpp"

namespace ha::sync {
namespace {

using test::TmpDir;
namespace fs = std::filesystem;
const auto kKey = std::make_shared<const ChecksumKey>(Key{5, 6});

struct Db {
    sqlite3* h = nullptr;
    explicit Db(const std::string& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
        EXPECT_EQ(sqlite3_open_v2(path.c_str(), &h, flags, nullptr), SQLITE_OK) << path;
    }
    ~Db() { sqlite3_close_v2(h); }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;
    void exec(const std::string& sql) const {
        ASSERT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
            << sql << ": " << sqlite3_errmsg(h);
    }
    [[nodiscard]] std::string text(const std::string& sql) const {
        sqlite3_stmt* st = nullptr;
        std::string out = "error";
        if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return out;
    }
};

std::string read_fd(const UniqueFd& fd) {
    std::string s;
    char buf[65536];
    for (off_t off = 0;;) {
        const ssize_t n = ::pread(fd.get(), buf, sizeof buf, off);
        if (n <= 0) break;
        s.append(buf, static_cast<std::size_t>(n));
        off += n;
    }
    return s;
}

std::string snapshot_of(const std::string& db) {
    auto snap = sqlite_snapshot(db);
    EXPECT_TRUE(snap) << (snap ? "" : snap.error().message());
    return snap ? read_fd(*snap) : std::string();
}

// The standby's side: receive the snapshot as a file frame, then run the job as the committer.
CommitJob deliver(Applier& a, SqliteReplicas& replicas, const std::string& path,
                  const std::string& bytes, std::int64_t mtime_ns = 1'000'000'007) {
    FrameHeader h{.type = FrameType::File,
                  .file_mode = 0640,
                  .length = bytes.size(),
                  .mtime_ns = mtime_ns,
                  .checksum = payload_checksum(*kKey, bytes.data(), bytes.size())};
    a.begin(h, path);
    a.write({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
    EXPECT_EQ(a.end(), AckStatus::Ok);
    CommitJob job;
    job.files = a.take_files();
    run_commit_job(job, &replicas);
    return job;
}

bool has_temp(const std::string& dir) {
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
        if (e.path().filename().string().starts_with(kTempPrefix)) return true;
    }
    return false;
}

TEST(SqliteSnapshot, IsAWholeDatabaseInItsSourcesJournalMode) {
    TmpDir t;
    {
        Db w(t / "wal.db");
        w.exec("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES('x')");
        Db r(t / "rollback.db");
        r.exec("CREATE TABLE t(v); INSERT INTO t VALUES('y')");
        const auto wal = snapshot_of(t / "wal.db");
        const auto rollback = snapshot_of(t / "rollback.db");
        EXPECT_TRUE(
            sqlite_header_is_wal(reinterpret_cast<const unsigned char*>(wal.data()), wal.size()));
        EXPECT_FALSE(sqlite_header_is_wal(reinterpret_cast<const unsigned char*>(rollback.data()),
                                          rollback.size()));
        test::write_text(t / "copy.db", wal);  // the file alone, no -wal beside it
    }
    Db copy(t / "copy.db", SQLITE_OPEN_READONLY);
    EXPECT_EQ(copy.text("SELECT v FROM t"), "x");
    EXPECT_EQ(copy.text("PRAGMA integrity_check"), "ok");
    test::write_text(t / "readme", "not a database");
    auto snap = sqlite_snapshot(t / "readme");
    ASSERT_FALSE(snap);
    EXPECT_EQ(snap.error().code, std::errc::invalid_argument);
}

TEST(SqliteReplicas, WalSnapshotsAreAppliedInPlaceAndOpenReadersFollow) {
    TmpDir act;
    TmpDir stby;
    Db w(act / "pbx.db");
    w.exec("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
    w.exec("INSERT INTO t(v) VALUES('one')");
    auto a = Applier::create({{stby.path(), Mode::Sqlite}}, kKey);
    ASSERT_TRUE(a);
    SqliteReplicas replicas;
    auto job = deliver(*a, replicas, "pbx.db", snapshot_of(act / "pbx.db"));
    ASSERT_EQ(job.files.at(0).status, AckStatus::Ok);  // installed by rename: no replica yet
    Db reader(stby / "pbx.db", SQLITE_OPEN_READONLY);
    EXPECT_EQ(reader.text("SELECT count(*) FROM t"), "1");
    const auto ino_before = fs::status(stby / "pbx.db").type();
    (void)ino_before;
    struct stat before {};
    ASSERT_EQ(::stat((stby / "pbx.db").c_str(), &before), 0);

    w.exec("INSERT INTO t(v) VALUES('two'); INSERT INTO t(v) VALUES('three')");
    job = deliver(*a, replicas, "pbx.db", snapshot_of(act / "pbx.db"), 2'000'000'009);
    ASSERT_EQ(job.files.at(0).status, AckStatus::Ok);
    EXPECT_EQ(job.error, "");
    struct stat after {};
    ASSERT_EQ(::stat((stby / "pbx.db").c_str(), &after), 0);
    EXPECT_EQ(before.st_ino, after.st_ino) << "applied in place, not replaced";
    EXPECT_EQ(reader.text("SELECT count(*) FROM t"), "3") << "a reader that kept it open follows";
    EXPECT_EQ(reader.text("PRAGMA integrity_check"), "ok");
    EXPECT_TRUE(fs::exists(stby / "pbx.db-wal"));
    EXPECT_EQ(after.st_mtim.tv_sec, 2);
    EXPECT_EQ(after.st_mtim.tv_nsec, 9);
    EXPECT_FALSE(has_temp(stby.path()));

    // A rollback-journal database is always installed by rename, its stale side files removed.
    w.exec("PRAGMA journal_mode=DELETE");
    job = deliver(*a, replicas, "pbx.db", snapshot_of(act / "pbx.db"));
    ASSERT_EQ(job.files.at(0).status, AckStatus::Ok);
    ASSERT_EQ(::stat((stby / "pbx.db").c_str(), &after), 0);
    EXPECT_NE(before.st_ino, after.st_ino);
    EXPECT_FALSE(fs::exists(stby / "pbx.db-wal"));
    Db fresh(stby / "pbx.db", SQLITE_OPEN_READONLY);
    EXPECT_EQ(fresh.text("SELECT count(*) FROM t"), "3");
    EXPECT_EQ(fresh.text("PRAGMA journal_mode"), "delete");
}

TEST(SqliteReplicas, APageSizeChangeIsInstalledByRenameAndLaterSnapshotsKeepTheirOrder) {
    TmpDir act;
    TmpDir stby;
    auto a = Applier::create({{stby.path(), Mode::Sqlite}}, kKey);
    ASSERT_TRUE(a);
    SqliteReplicas replicas;
    std::string v1, v2, v3;
    {
        Db w(act / "x.db");
        w.exec("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES(1)");
        v1 = snapshot_of(act / "x.db");
        w.exec(
            "PRAGMA journal_mode=DELETE; PRAGMA page_size=8192; VACUUM; "
            "PRAGMA journal_mode=WAL; INSERT INTO t VALUES(2)");
        v2 = snapshot_of(act / "x.db");
        w.exec("INSERT INTO t VALUES(3)");
        v3 = snapshot_of(act / "x.db");
    }
    ASSERT_EQ(deliver(*a, replicas, "x.db", v1).files.at(0).status, AckStatus::Ok);
    // Both in one job: the first is declined (page size), so the second must not overtake it.
    for (const auto& bytes : {v2, v3}) {
        FrameHeader h{.type = FrameType::File,
                      .length = bytes.size(),
                      .checksum = payload_checksum(*kKey, bytes.data(), bytes.size())};
        a->begin(h, "x.db");
        a->write({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
        ASSERT_EQ(a->end(), AckStatus::Ok);
    }
    CommitJob job;
    job.files = a->take_files();
    run_commit_job(job, &replicas);
    for (const auto& f : job.files) EXPECT_EQ(f.status, AckStatus::Ok);
    Db r(stby / "x.db", SQLITE_OPEN_READONLY);
    EXPECT_EQ(r.text("SELECT group_concat(v) FROM t"), "1,2,3");
    EXPECT_EQ(r.text("PRAGMA page_size"), "8192");
    EXPECT_FALSE(has_temp(stby.path()));
}

TEST(SqliteReplicas, ClosingNeverRemovesTheReplicasWalEvenWithOddNames) {
    TmpDir act;
    TmpDir stby;
    Db w(act / "odd ?#%.db");
    w.exec("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES(1)");
    auto a = Applier::create({{stby.path(), Mode::Sqlite}}, kKey);
    ASSERT_TRUE(a);
    {
        SqliteReplicas replicas;
        (void)deliver(*a, replicas, "odd ?#%.db", snapshot_of(act / "odd ?#%.db"));
        w.exec("INSERT INTO t VALUES(2)");
        (void)deliver(*a, replicas, "odd ?#%.db", snapshot_of(act / "odd ?#%.db"));
        ASSERT_TRUE(fs::exists(stby / "odd ?#%.db-wal"));
    }  // connections closed here: no checkpoint, the WAL stays (it holds the last commit)
    EXPECT_TRUE(fs::exists(stby / "odd ?#%.db-wal"));
    Db r(stby / "odd ?#%.db", SQLITE_OPEN_READONLY);
    EXPECT_EQ(r.text("SELECT count(*) FROM t"), "2");
    EXPECT_EQ(r.text("PRAGMA integrity_check"), "ok");
}

TEST(SqliteReplicas, AReplicaIsReplacedOnlyOnceItsWalIsEmpty) {
    TmpDir act;
    TmpDir stby;
    Db w(act / "r.db");
    w.exec("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES(1)");
    auto a = Applier::create({{stby.path(), Mode::Sqlite}}, kKey);
    ASSERT_TRUE(a);
    SqliteReplicas replicas;
    (void)deliver(*a, replicas, "r.db", snapshot_of(act / "r.db"));
    w.exec("INSERT INTO t VALUES(2)");
    ASSERT_EQ(deliver(*a, replicas, "r.db", snapshot_of(act / "r.db")).files.at(0).status,
              AckStatus::Ok);  // applied: row 2 lives in the replica's WAL
    // A reader in the middle of a read transaction on the replica.
    Db reader(stby / "r.db", SQLITE_OPEN_READONLY);
    reader.exec("BEGIN");
    EXPECT_EQ(reader.text("SELECT count(*) FROM t"), "2");
    w.exec("INSERT INTO t VALUES(3)");
    ASSERT_EQ(deliver(*a, replicas, "r.db", snapshot_of(act / "r.db")).files.at(0).status,
              AckStatus::Ok);  // applied too: the reader keeps its snapshot
    // A rollback-mode snapshot must replace the replica, which removes its -wal: not while the
    // reader's snapshot needs it. Refused, the replica stays whole.
    w.exec("PRAGMA journal_mode=DELETE");
    auto job = deliver(*a, replicas, "r.db", snapshot_of(act / "r.db"));
    EXPECT_EQ(job.files.at(0).status, AckStatus::IoError);
    EXPECT_TRUE(fs::exists(stby / "r.db-wal"));
    EXPECT_FALSE(has_temp(stby.path()));
    {
        Db fresh(stby / "r.db", SQLITE_OPEN_READONLY);
        EXPECT_EQ(fresh.text("SELECT count(*) FROM t"), "3");
    }
    reader.exec("COMMIT");
    job = deliver(*a, replicas, "r.db", snapshot_of(act / "r.db"));
    EXPECT_EQ(job.files.at(0).status, AckStatus::Ok) << "once the reader let go";
    Db after(stby / "r.db", SQLITE_OPEN_READONLY);
    EXPECT_EQ(after.text("SELECT count(*) FROM t"), "3");
    EXPECT_EQ(after.text("PRAGMA journal_mode"), "delete");
    EXPECT_EQ(after.text("PRAGMA integrity_check"), "ok");
}

}  // namespace
}  // namespace ha::sync
