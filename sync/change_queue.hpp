// The active's pending changes, coalesced per path. Entries are state-based ("make the standby's
// copy of this path match ours"), so ten writes to one file while the standby is slow cost one
// transfer. Renames are kept as their own ordered entries. Bounded: past `capacity` distinct paths
// the queue reports overflow and the engine falls back to a manifest resync. Pure, no I/O.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

namespace ha::sync {

struct Change {
    enum class Kind : std::uint8_t { Sync, Rename };
    Kind kind = Kind::Sync;
    std::uint8_t root = 0;
    std::string path;    // Sync: the path; Rename: the source
    std::string to;      // Rename: the target
    bool whole = false;  // Sync: send the whole file even in append mode
    std::uint64_t first_seen_ns = 0;
};

class ChangeQueue {
  public:
    explicit ChangeQueue(std::size_t capacity = 1u << 20) : capacity_(capacity) {}

    // Returns false (and sets overflowed()) when a new path does not fit.
    bool push_sync(std::uint8_t root, const std::string& path, std::uint64_t now_ns,
                   bool whole = false);
    // A pending Sync of the target is dropped: the rename replaces whatever it was.
    bool push_rename(std::uint8_t root, const std::string& from, const std::string& to,
                     std::uint64_t now_ns);
    std::optional<Change> pop();
    void clear();

    [[nodiscard]] std::size_t size() const { return fifo_.size(); }
    [[nodiscard]] bool empty() const { return fifo_.empty(); }
    [[nodiscard]] std::uint64_t oldest_ns() const { return fifo_.empty() ? 0 : oldest(); }
    [[nodiscard]] bool overflowed() const { return overflowed_; }
    void clear_overflow() { overflowed_ = false; }

  private:
    [[nodiscard]] std::uint64_t oldest() const;
    void add_time(std::uint64_t t) { ++times_[t]; }
    void remove_time(std::uint64_t t);
    std::size_t capacity_;
    std::list<Change> fifo_;
    std::unordered_map<std::string, std::list<Change>::iterator> index_;  // Sync entries only
    bool overflowed_ = false;
    // first_seen_ns of every entry (count per time): the oldest in O(1) for status, which is
    // published while a full sync holds tens of thousands of entries.
    std::map<std::uint64_t, std::uint32_t> times_;
};

}  // namespace ha::sync
