// The standby's apply logic and its commit jobs: temp file + checksum, then durable + rename;
// append offsets; deletes, renames; stale temp cleanup and refusal of paths that would leave the
// root.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "sync/apply.hpp"
#include "tmpdir.hpp"

namespace ha::sync {
namespace {

using test::read_text;
using test::TmpDir;
using test::write_text;
namespace fs = std::filesystem;
const Key kRawKey{3, 4};
const auto kKey = std::make_shared<const ChecksumKey>(kRawKey);

std::span<const std::uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

AckStatus send_file(Applier& a, std::uint8_t root, std::string_view path, std::string_view content,
                    std::uint64_t checksum_override = 0, bool split = true) {
    FrameHeader h{.type = FrameType::File,
                  .root = root,
                  .file_mode = 0640,
                  .length = content.size(),
                  .mtime_ns = 1'700'000'000'123456789,
                  .checksum = checksum_override != 0
                                  ? checksum_override
                                  : payload_checksum(*kKey, content.data(), content.size())};
    a.begin(h, path);
    if (split && content.size() > 1) {
        a.write(bytes(content.substr(0, content.size() / 2)));
        a.write(bytes(content.substr(content.size() / 2)));
    } else {
        a.write(bytes(content));
    }
    return a.end();
}

AckStatus send_append(Applier& a, std::string_view path, std::uint64_t offset,
                      std::string_view data, bool corrupt = false) {
    FrameHeader h{
        .type = FrameType::Append,
        .root = 0,
        .offset = offset,
        .length = data.size(),
        .mtime_ns = 5,
        .checksum = payload_checksum(*kKey, data.data(), data.size()) + (corrupt ? 1 : 0)};
    a.begin(h, path);
    a.write(bytes(data));
    return a.end();
}

// What the committer thread does with what the applier handed out, run here on the test thread.
CommitJob commit(Applier& a, std::vector<SharedFd> dirs = {}) {
    CommitJob job;
    job.files = a.take_files();
    job.appends = a.take_appends();
    job.dirs = std::move(dirs);
    run_commit_job(job);
    return job;
}

AckStatus install_file(Applier& a, std::string_view path, std::string_view content) {
    const AckStatus s = send_file(a, 0, path, content);
    if (s != AckStatus::Ok) return s;
    auto job = commit(a);
    return job.files.empty() ? AckStatus::IoError : job.files.front().status;
}

bool has_temp(const std::string& dir) {
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
        if (e.path().filename().string().starts_with(kTempPrefix)) return true;
    }
    return false;
}

TEST(Applier, WholeFileLandsWithModeAndMtimeAndNoTempLeft) {
    TmpDir t;
    auto a = Applier::create({{t.path(), Mode::File}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_EQ(send_file(*a, 0, "vm/1001/msg.wav", "voice data"), AckStatus::Ok);
    EXPECT_FALSE(fs::exists(t / "vm/1001/msg.wav")) << "checked, not yet durable: not visible";
    auto job = commit(*a);
    ASSERT_EQ(job.files.size(), 1u);
    EXPECT_EQ(job.files[0].status, AckStatus::Ok);
    EXPECT_EQ(job.error, "");
    EXPECT_EQ(read_text(t / "vm/1001/msg.wav"), "voice data");
    struct stat st {};
    ASSERT_EQ(::stat((t / "vm/1001/msg.wav").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(st.st_mtim.tv_sec, 1'700'000'000);
    EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);
    EXPECT_FALSE(has_temp(t.path()));
    EXPECT_EQ(install_file(*a, "vm/1001/msg.wav", ""), AckStatus::Ok) << "empty files too";
    EXPECT_EQ(read_text(t / "vm/1001/msg.wav"), "");
}

TEST(Applier, ChecksumMismatchKeepsTheOldVersionWhole) {
    TmpDir t;
    write_text(t / "cfg.conf", "old version");
    auto a = Applier::create({{t.path(), Mode::File}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_EQ(send_file(*a, 0, "cfg.conf", "new version", 12345), AckStatus::ChecksumMismatch);
    EXPECT_EQ(read_text(t / "cfg.conf"), "old version");
    EXPECT_FALSE(has_temp(t.path()));
}

TEST(Applier, AppendAtTheExpectedOffsetOnlyElseNeedFull) {
    TmpDir t;
    write_text(t / "cdr.csv", "line1\n");
    auto a = Applier::create({{t.path(), Mode::Append}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_EQ(send_append(*a, "cdr.csv", 6, "line2\n"), AckStatus::Ok);
    EXPECT_EQ(read_text(t / "cdr.csv"), "line1\nline2\n");
    EXPECT_EQ(send_append(*a, "cdr.csv", 6, "line2\n"), AckStatus::NeedFull) << "replayed append";
    EXPECT_EQ(send_append(*a, "cdr.csv", 20, "x"), AckStatus::NeedFull) << "gap";
    EXPECT_EQ(read_text(t / "cdr.csv"), "line1\nline2\n");
    EXPECT_EQ(send_append(*a, "cdr.csv", 12, "line3\n", true), AckStatus::ChecksumMismatch);
    EXPECT_EQ(read_text(t / "cdr.csv"), "line1\nline2\n") << "a bad append is rolled back";
    EXPECT_EQ(send_append(*a, "missing.csv", 0, "x"), AckStatus::NeedFull);
    EXPECT_FALSE(fs::exists(t / "missing.csv"));
}

TEST(Applier, AJobInstallsItsFilesInArrivalOrder) {
    TmpDir t;
    write_text(t / "a.wav", "old a");
    auto a = Applier::create({{t.path(), Mode::File}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_EQ(send_file(*a, 0, "a.wav", "new a"), AckStatus::Ok);
    EXPECT_EQ(send_file(*a, 0, "d/b.wav", "new b"), AckStatus::Ok);
    EXPECT_EQ(send_file(*a, 0, "a.wav", "newer a"), AckStatus::Ok) << "same name twice in a batch";
    EXPECT_EQ(a->pending_files(), 3u);
    EXPECT_EQ(read_text(t / "a.wav"), "old a") << "nothing visible before commit";
    EXPECT_FALSE(fs::exists(t / "d/b.wav"));
    EXPECT_EQ(a->pending_bytes(), 17u);
    auto job = commit(*a);
    ASSERT_EQ(job.files.size(), 3u);
    for (const auto& f : job.files) EXPECT_EQ(f.status, AckStatus::Ok) << f.path;
    EXPECT_EQ(read_text(t / "a.wav"), "newer a");
    EXPECT_EQ(read_text(t / "d/b.wav"), "new b");
    EXPECT_EQ(a->pending_files(), 0u);
    EXPECT_FALSE(has_temp(t.path()));
}

TEST(Applier, AppendsAreVisibleAtOnceAndHandedOutOncePerFile) {
    TmpDir t;
    write_text(t / "cdr.csv", "l0\n");
    write_text(t / "other.csv", "");
    auto a = Applier::create({{t.path(), Mode::Append}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->appends_pending());
    EXPECT_EQ(send_append(*a, "cdr.csv", 3, "l1\n"), AckStatus::Ok);
    EXPECT_EQ(a->last_append(), 0u);
    EXPECT_EQ(send_append(*a, "cdr.csv", 6, "l2\n"), AckStatus::Ok)
        << "offset follows the unsynced one";
    EXPECT_EQ(a->last_append(), 0u) << "same file, same entry";
    EXPECT_EQ(send_append(*a, "other.csv", 0, "x"), AckStatus::Ok);
    EXPECT_EQ(a->last_append(), 1u);
    EXPECT_TRUE(a->appends_pending());
    EXPECT_EQ(read_text(t / "cdr.csv"), "l0\nl1\nl2\n") << "visible before the fdatasync";
    EXPECT_EQ(send_append(*a, "cdr.csv", 9, "bad\n", true), AckStatus::ChecksumMismatch);
    EXPECT_EQ(read_text(t / "cdr.csv"), "l0\nl1\nl2\n") << "a bad append is still rolled back";
    auto job = commit(*a);
    ASSERT_EQ(job.appends.size(), 2u);
    EXPECT_EQ(job.appends[0].path, "cdr.csv");
    EXPECT_EQ(job.appends[0].batch_start, 3u);
    EXPECT_EQ(job.appends[1].batch_start, 0u);
    for (const auto& ap : job.appends) EXPECT_EQ(ap.status, AckStatus::Ok);
    EXPECT_FALSE(a->appends_pending());
    EXPECT_EQ(send_append(*a, "cdr.csv", 9, "l3\n"), AckStatus::Ok);
    EXPECT_EQ(read_text(t / "cdr.csv"), "l0\nl1\nl2\nl3\n");
    job = commit(*a);
    ASSERT_EQ(job.appends.size(), 1u);
    EXPECT_EQ(job.appends[0].batch_start, 9u);
    // A group that could not be made durable is cut back to where it started.
    EXPECT_EQ(send_append(*a, "cdr.csv", 12, "l4\n"), AckStatus::Ok);
    a->truncate_append(a->take_appends().at(0));
    EXPECT_EQ(read_text(t / "cdr.csv"), "l0\nl1\nl2\nl3\n");
    EXPECT_FALSE(has_temp(t.path()));
}

TEST(Applier, AbortMidFrameLeavesNothingPartial) {
    TmpDir t;
    write_text(t / "cdr.csv", "line1\n");
    write_text(t / "vm.wav", "old");
    auto a = Applier::create({{t.path(), Mode::Append}}, kKey);
    ASSERT_TRUE(a);
    FrameHeader h{.type = FrameType::Append, .offset = 6, .length = 100, .checksum = 1};
    a->begin(h, "cdr.csv");
    a->write(bytes("half of an append"));
    a->abort();
    EXPECT_EQ(read_text(t / "cdr.csv"), "line1\n");
    FrameHeader f{.type = FrameType::File, .length = 100, .checksum = 1};
    a->begin(f, "vm.wav");
    a->write(bytes("half of a file"));
    a->abort();
    EXPECT_EQ(read_text(t / "vm.wav"), "old");
    EXPECT_FALSE(has_temp(t.path()));
    EXPECT_EQ(a->end(), AckStatus::IoError) << "no transfer in progress after abort";
}

TEST(Applier, RemovesPartialFilesOfAKilledReceiverAtStart) {
    TmpDir t;
    write_text(t / "d/.ha-sync-tmp.msg.wav.deadbeef", "half a file");
    write_text(t / "d/msg.wav", "whole");
    auto a = Applier::create({{t.path(), Mode::File}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_FALSE(has_temp(t.path()));
    EXPECT_EQ(read_text(t / "d/msg.wav"), "whole");
}

TEST(Applier, RefusesToWriteThroughASymlinkOutOfTheRoot) {
    TmpDir t;
    TmpDir outside;
    ASSERT_TRUE(fs::create_directories(t / "root"));
    ASSERT_EQ(::symlink(outside.path().c_str(), (t / "root/escape").c_str()), 0);
    write_text(outside / "victim", "untouched");
    auto a = Applier::create({{t / "root", Mode::File}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_EQ(send_file(*a, 0, "escape/victim", "pwned"), AckStatus::Refused);
    EXPECT_EQ(read_text(outside / "victim"), "untouched");
    std::vector<SharedFd> dirs;
    EXPECT_EQ(a->apply_delete(0, "escape/victim", dirs), AckStatus::Refused);
    EXPECT_TRUE(dirs.empty());
    EXPECT_EQ(read_text(outside / "victim"), "untouched");
    EXPECT_NE(a->last_error().find("escape/victim"), std::string::npos) << a->last_error();
}

TEST(Applier, DeletesFilesAndTreesAndRenames) {
    TmpDir t;
    write_text(t / "a", "A");
    write_text(t / "dir/x", "X");
    write_text(t / "dir/sub/y", "Y");
    auto a = Applier::create({{t.path(), Mode::File}}, kKey);
    ASSERT_TRUE(a);
    std::vector<SharedFd> dirs;
    EXPECT_EQ(a->apply_rename(0, "a", "moved/b", dirs), AckStatus::Ok);
    EXPECT_EQ(read_text(t / "moved/b"), "A") << "visible at once";
    EXPECT_FALSE(fs::exists(t / "a"));
    EXPECT_EQ(dirs.size(), 2u) << "both directories are synced before the ack";
    EXPECT_EQ(a->apply_rename(0, "nope", "c", dirs), AckStatus::NeedFull);
    EXPECT_EQ(install_file(*a, "dir/x", "X2"), AckStatus::Ok) << "caches the directory";
    EXPECT_EQ(a->apply_delete(0, "dir", dirs), AckStatus::Ok);
    EXPECT_FALSE(fs::exists(t / "dir"));
    EXPECT_EQ(a->apply_delete(0, "never-existed/z", dirs), AckStatus::Ok);
    EXPECT_EQ(dirs.size(), 3u);
    auto job = commit(*a, std::move(dirs));
    EXPECT_EQ(job.error, "");
    // A write into a directory that was cached before a delete goes to the new directory.
    EXPECT_EQ(install_file(*a, "dir/again", "new"), AckStatus::Ok);
    EXPECT_EQ(read_text(t / "dir/again"), "new");
}

TEST(Applier, SqliteReplaceRemovesStaleSideFiles) {
    TmpDir t;
    write_text(t / "pbx.db", "old db");
    write_text(t / "pbx.db-wal", "stale wal that must not be replayed");
    write_text(t / "pbx.db-shm", "shm");
    auto a = Applier::create({{t.path(), Mode::Sqlite}}, kKey);
    ASSERT_TRUE(a);
    EXPECT_EQ(install_file(*a, "pbx.db", "snapshot"), AckStatus::Ok);
    EXPECT_EQ(read_text(t / "pbx.db"), "snapshot");
    EXPECT_FALSE(fs::exists(t / "pbx.db-wal"));
    EXPECT_FALSE(fs::exists(t / "pbx.db-shm"));
}

}  // namespace
}  // namespace ha::sync
