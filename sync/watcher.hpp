// Recursive inotify watcher over the sync roots. inotify rather than fanotify: it needs no
// CAP_SYS_ADMIN, reports renames as cookie-paired MOVED_FROM/MOVED_TO (fanotify's FAN_RENAME
// needs 5.17 and a filesystem mark), and the per-directory cost is fine for PBX trees.
// File roots send on close-after-write and use writes only to know a file is being rewritten;
// append and sqlite roots send on every write (sqlite ignores close-write: a reader opening the
// -wal read-write, our own snapshot included, closes it "after writing" without writing).
// Owned and read by the engine thread only.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sync/fsutil.hpp"

namespace ha::sync {

struct WatchEvent {
    // Changed: closed after writing, or moved in. Modified: written to (a writer may still be at
    // it).
    enum class Kind : std::uint8_t { Changed, Modified, Removed, Moved, Overflow };
    Kind kind = Kind::Changed;
    std::uint8_t root = 0;
    std::string path;  // root-relative
    std::string to;    // Moved: target
};

class Watcher {
  public:
    // Watches every directory under every root; files already present are not reported.
    static Result<Watcher> create(const std::vector<Root>& roots);
    [[nodiscard]] const UniqueFd& fd() const { return fd_; }
    // Reads everything pending (non-blocking). A directory that appears is watched and every
    // file inside it is reported Changed (it may have filled before the watch was in place).
    Status read(std::vector<WatchEvent>& out);
    [[nodiscard]] std::size_t watch_count() const { return wds_.size(); }

  private:
    struct Dir {
        std::uint8_t root = 0;
        std::string rel;  // "" for the root itself
    };
    Watcher(UniqueFd fd, std::vector<Root> roots) : fd_(std::move(fd)), roots_(std::move(roots)) {}
    Status add_tree(std::uint8_t root, const std::string& rel, std::vector<WatchEvent>* report);
    [[nodiscard]] std::string abs(std::uint8_t root, const std::string& rel) const;

    UniqueFd fd_;
    std::vector<Root> roots_;
    std::unordered_map<int, Dir> wds_;
};

}  // namespace ha::sync
