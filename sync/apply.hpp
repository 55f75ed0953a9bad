// The standby's side of a transfer: turns validated frames into files without ever exposing a torn
// one. Whole files go to a temp file beside the target (created 0600, O_EXCL) and are checked
// against their checksum; the checked ones are handed out (take_files) for a CommitJob, which makes
// them durable and only then renames them into place (committer.hpp). Appends land only at the
// expected offset (else NeedFull), are visible at once, and are rolled back on a checksum
// mismatch; their files are handed out (take_appends) to be made durable before their acks.
// Used by the engine thread only; not thread-safe.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sync/committer.hpp"
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
    // Ok: a whole file is checked and waits in take_files(); an append is in place and its file
    // waits in take_appends() (last_append() is its index there).
    AckStatus end();
    // For a file whose checksum trailed its payload: the value to check at end().
    void set_checksum(std::uint64_t sum) { cur_.checksum = sum; }
    // The connection died mid-frame: drop the temp file, or cut a half-applied append back to
    // where it started. Nothing partial stays visible.
    void abort();

    // Applied at once (visible); the directories to fsync before the ack go to `dirs`.
    AckStatus apply_delete(std::uint8_t root, std::string_view path, std::vector<SharedFd>& dirs);
    AckStatus apply_rename(std::uint8_t root, std::string_view from, std::string_view to,
                           std::vector<SharedFd>& dirs);

    // Checked whole files since the last call, in arrival order, for a CommitJob.
    std::vector<CommitJob::File> take_files();
    [[nodiscard]] std::size_t pending_files() const { return files_.size(); }
    [[nodiscard]] std::uint64_t pending_bytes() const { return pending_bytes_; }
    // Files appended to since the last call (one entry per file), for a CommitJob.
    std::vector<CommitJob::Append> take_appends();
    [[nodiscard]] bool appends_pending() const { return !appends_.empty(); }
    [[nodiscard]] std::size_t last_append() const { return last_append_; }
    // An append could not be made durable: cut the file back to `size` (not acknowledged, so the
    // active re-sends from there after the manifest exchange).
    void truncate_append(const CommitJob::Append& a);

    // Drops the cached directories and append targets (their names may have moved).
    void forget_caches();

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
    Applier(std::vector<OpenRoot> roots, std::shared_ptr<const ChecksumKey> key);
    AckStatus fail_with(AckStatus s, std::string why);
    void discard();
    // The parent directory of `path` (created when asked), from a small cache: a full sync writes
    // thousands of files into a few directories. Deletes and renames empty the cache, since they
    // may move or remove a cached directory.
    Result<SharedFd> parent_dir(std::uint8_t root, std::string_view path, bool create,
                                std::string& leaf);
    // Append targets stay open between appends (a CDR file gets one per call); same invalidation.
    Result<SharedFd> append_target(std::uint8_t root, std::string_view path);

    std::vector<OpenRoot> roots_;
    std::shared_ptr<const ChecksumKey> key_;
    std::uint32_t tmp_salt_ = 0;
    std::uint32_t tmp_counter_ = 0;
    // The transfer in progress.
    FrameHeader cur_{};
    std::string cur_path_;
    SharedFd dir_;
    UniqueFd out_;         // whole file: the temp file
    SharedFd append_out_;  // append: the target
    std::string tmp_name_;
    std::string leaf_;
    std::optional<PayloadChecksum> hasher_;
    std::uint64_t written_ = 0;
    AckStatus pending_ = AckStatus::Ok;
    std::string last_error_;

    std::unordered_map<std::string, SharedFd> dirs_;     // root + dir path
    std::unordered_map<std::string, SharedFd> targets_;  // root + file path
    std::vector<CommitJob::File> files_;
    std::uint64_t pending_bytes_ = 0;
    struct OpenAppend {
        dev_t dev;
        ino_t ino;
    };
    std::vector<CommitJob::Append> appends_;
    std::vector<OpenAppend> append_ids_;
    OpenAppend append_id_{};  // the target of the append in progress
    std::size_t last_append_ = 0;
};

}  // namespace ha::sync
