// The standby's side of a transfer: turns validated frames into files without ever exposing a torn
// one. Whole files go to a temp file beside the target (created 0600, O_EXCL), are checked
// against their checksum, fsynced, renamed into place, and the directory is fsynced. Appends land
// only at the expected offset (else NeedFull) and are rolled back on a checksum mismatch.
// Used by the engine thread only; not thread-safe.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/keyfile.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sync/fsutil.hpp"
#include "sync/wire.hpp"

namespace ha::sync {

class Applier {
  public:
    // Opens (creating) every root and removes temp files a killed receiver left behind.
    static Result<Applier> create(const std::vector<Root>& roots,
                                  std::shared_ptr<const ChecksumKey> key);

    // File / Append frames: begin, stream the payload, end. A failure in begin or write is
    // remembered and reported by end(); the payload is still consumed (framing stays intact).
    void begin(const FrameHeader& h, std::string_view path);
    void write(std::span<const std::uint8_t> chunk);
    AckStatus end();
    // The connection died mid-frame: drop the temp file, or cut a half-applied append back to
    // where it started. Nothing partial stays visible.
    void abort();

    AckStatus apply_delete(std::uint8_t root, std::string_view path);
    AckStatus apply_rename(std::uint8_t root, std::string_view from, std::string_view to);

    // Group commit: whole files that passed their checksum wait (as fsync-less temp files) until
    // commit(), which makes them durable with one syncfs() per filesystem and renames them into
    // place. Turns a per-file fsync into one per batch for trees of small files. Off by default.
    void set_group_commit(bool on) { group_commit_ = on; }
    [[nodiscard]] std::size_t pending_files() const { return deferred_.size(); }
    [[nodiscard]] std::uint64_t pending_bytes() const { return pending_bytes_; }
    // Returns how many deferred files could not be installed (their temp files are removed).
    std::size_t commit();

    // Appends under group commit are written (visible) at once but made durable together by
    // sync_appends(), one fdatasync per file, before their acks leave. Returns the paths whose
    // fdatasync failed; each of those files was cut back to where its batch started.
    [[nodiscard]] bool appends_pending() const { return !dirty_appends_.empty(); }
    std::vector<std::string> sync_appends();

    // fsyncs the directories of files renamed since the last call. Call before sending the acks
    // of those files. Returns how many fsyncs failed.
    std::size_t sync_dirs();

    // Why the last non-Ok status happened ("write x: No space left on device").
    [[nodiscard]] const std::string& last_error() const { return last_error_; }
    [[nodiscard]] const UniqueFd& root_fd(std::size_t i) const { return roots_[i].fd; }
    [[nodiscard]] std::size_t root_count() const { return roots_.size(); }
    [[nodiscard]] Mode root_mode(std::size_t i) const { return roots_[i].mode; }

  private:
    struct OpenRoot {
        UniqueFd fd;
        Mode mode;
        std::string path;
    };
    Applier(std::vector<OpenRoot> roots, std::shared_ptr<const ChecksumKey> key)
        : roots_(std::move(roots)), key_(std::move(key)) {}
    AckStatus fail_with(AckStatus s, std::string why);
    void discard();

    std::vector<OpenRoot> roots_;
    std::shared_ptr<const ChecksumKey> key_;
    // The transfer in progress.
    FrameHeader cur_{};
    std::string cur_path_;
    UniqueFd dir_;
    UniqueFd out_;
    std::string tmp_name_;
    std::string leaf_;
    std::optional<PayloadChecksum> hasher_;
    struct DirtyDir {
        UniqueFd fd;
        dev_t dev;
        ino_t ino;
    };
    std::vector<DirtyDir> dirty_;
    void mark_dirty(UniqueFd dir);
    AckStatus install(const UniqueFd& dir, const std::string& tmp, const std::string& leaf,
                      bool sqlite, const std::string& path);
    struct Pending {
        UniqueFd dir;
        std::string tmp, leaf, path;
        bool sqlite;
    };
    std::vector<Pending> deferred_;
    struct DirtyAppend {
        UniqueFd fd;
        dev_t dev;
        ino_t ino;
        std::uint64_t batch_start;  // the file's size before the first unsynced append
        std::string path;
    };
    std::vector<DirtyAppend> dirty_appends_;
    std::uint64_t pending_bytes_ = 0;
    bool group_commit_ = false;
    std::uint64_t written_ = 0;
    AckStatus pending_ = AckStatus::Ok;
    std::string last_error_;
};

}  // namespace ha::sync
