// Manifest scanning and the diff that decides what moves when a standby joins.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sync/manifest.hpp"
#include "sync/wire.hpp"
#include "tmpdir.hpp"

namespace ha::sync {
namespace {

using test::TmpDir;
using test::write_text;
using A = DiffItem::Action;
const ChecksumKey kKey(Key{1, 2});

ManifestEntry e(std::uint64_t size, std::int64_t mtime, std::uint32_t mode = 0644) {
    return ManifestEntry{size, mtime, mode, std::nullopt};
}

TEST(ManifestDiff, SendsOnlyMissingOrDifferentFilesAndDeletesExtras) {
    Manifest active{{"same", e(10, 100)},
                    {"newer", e(10, 200)},
                    {"missing", e(5, 1)},
                    {"chmod", e(1, 1, 0600)}};
    Manifest standby{
        {"same", e(10, 100)}, {"newer", e(10, 100)}, {"extra", e(3, 3)}, {"chmod", e(1, 1, 0644)}};
    auto d = diff_manifest(active, standby, Mode::File);
    std::vector<DiffItem> want{{"chmod", A::SendWhole, 0, 1},
                               {"missing", A::SendWhole, 0, 5},
                               {"newer", A::SendWhole, 0, 10},
                               {"extra", A::Delete, 0, 0}};
    EXPECT_EQ(d, want);
}

TEST(ManifestDiff, AppendModeContinuesFromTheStandbysSize) {
    Manifest active{{"cdr.csv", e(1000, 5)}, {"rotated.csv", e(10, 5)}};
    Manifest standby{{"cdr.csv", e(600, 4)}, {"rotated.csv", e(50, 4)}};
    auto d = diff_manifest(active, standby, Mode::Append);
    std::vector<DiffItem> want{{"cdr.csv", A::SendAppend, 600, 400},
                               {"rotated.csv", A::SendWhole, 0, 10}};
    EXPECT_EQ(d, want);
}

TEST(ManifestDiff, ChecksumsDecideWhenPresent) {
    Manifest active{{"a", {4, 1, 0644, 11}}, {"b", {4, 1, 0644, 22}}};
    Manifest standby{{"a", {4, 9, 0644, 11}}, {"b", {4, 1, 0644, 23}}};
    auto d = diff_manifest(active, standby, Mode::File);
    std::vector<DiffItem> want{{"b", A::SendWhole, 0, 4}};
    EXPECT_EQ(d, want);
    // An append file with a wrong prefix is refetched whole under a full (checksummed) backup.
    auto d2 = diff_manifest(Manifest{{"c", {8, 2, 0644, 1}}}, Manifest{{"c", {4, 1, 0644, 2}}},
                            Mode::Append);
    ASSERT_EQ(d2.size(), 1u);
    EXPECT_EQ(d2[0].action, A::SendWhole);
}

TEST(ManifestDiff, SqliteComparesSnapshotTimeNotSize) {
    Manifest active{{"pbx.db", e(4096, 50)}, {"old.db", e(8192, 10)}};
    Manifest standby{{"pbx.db", e(8192, 40)}, {"old.db", e(4096, 10)}};
    auto d = diff_manifest(active, standby, Mode::Sqlite);
    std::vector<DiffItem> want{{"pbx.db", A::SendWhole, 0, 4096}};
    EXPECT_EQ(d, want);
}

TEST(ManifestScan, ListsRegularFilesSkipsSymlinksAndTemps) {
    TmpDir t;
    write_text(t / "a.txt", "aaa");
    write_text(t / "sub/b.txt", "bb");
    write_text(t / "sub/.ha-sync-tmp.b.txt.1234", "partial");
    ASSERT_EQ(::symlink("/etc/passwd", (t / "sub/link").c_str()), 0);
    ASSERT_EQ(::chmod((t / "a.txt").c_str(), 0600), 0);
    auto root = open_root(t.path(), false);
    ASSERT_TRUE(root);
    auto m = scan_root(*root, Mode::File, true, kKey);
    ASSERT_TRUE(m);
    ASSERT_EQ(m->size(), 2u);
    EXPECT_EQ(m->at("a.txt").size, 3u);
    EXPECT_EQ(m->at("a.txt").mode, 0600u);
    EXPECT_EQ(m->at("a.txt").checksum, payload_checksum(kKey, "aaa", 3));
    EXPECT_EQ(m->at("sub/b.txt").size, 2u);
    auto again = scan_root(*root, Mode::File, false, kKey);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->size(), 2u) << "a second scan through the same fd sees everything again";
}

TEST(ManifestScan, SqliteFoldsWalIntoItsDatabaseAndIgnoresShm) {
    TmpDir t;
    write_text(t / "pbx.db", "db");
    write_text(t / "pbx.db-wal", "wal");
    write_text(t / "orphan.db-wal", "x");
    const timespec old_time[2] = {{0, UTIME_OMIT}, {1000, 0}};
    const timespec new_time[2] = {{0, UTIME_OMIT}, {2000, 5}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (t / "pbx.db").c_str(), old_time, 0), 0);
    ASSERT_EQ(::utimensat(AT_FDCWD, (t / "pbx.db-wal").c_str(), new_time, 0), 0);
    // Readers write the -shm: a newer one is not a newer database.
    write_text(t / "pbx.db-shm", "shm");
    auto root = open_root(t.path(), false);
    ASSERT_TRUE(root);
    auto m = scan_root(*root, Mode::Sqlite, false, kKey);
    ASSERT_TRUE(m);
    ASSERT_EQ(m->size(), 1u);
    EXPECT_EQ(m->at("pbx.db").mtime_ns, 2000'000'000'005);
}

}  // namespace
}  // namespace ha::sync
