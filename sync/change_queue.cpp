#include "sync/change_queue.hpp"
#include "sync/fsutil.hpp"

#include <algorithm>

namespace ha::sync {

bool ChangeQueue::push_sync(std::uint8_t root, const std::string& path, std::uint64_t now_ns,
                            bool whole) {
    const auto k = path_key(root, path);
    if (auto it = index_.find(k); it != index_.end()) {
        it->second->whole = it->second->whole || whole;
        return true;
    }
    if (fifo_.size() >= capacity_) {
        overflowed_ = true;
        return false;
    }
    fifo_.push_back(Change{Change::Kind::Sync, root, path, {}, whole, now_ns});
    add_time(now_ns);
    index_.emplace(k, std::prev(fifo_.end()));
    return true;
}

bool ChangeQueue::push_rename(std::uint8_t root, const std::string& from, const std::string& to,
                              std::uint64_t now_ns) {
    std::uint64_t first = now_ns;
    if (auto it = index_.find(path_key(root, to)); it != index_.end()) {
        first = std::min(first, it->second->first_seen_ns);
        remove_time(it->second->first_seen_ns);
        fifo_.erase(it->second);
        index_.erase(it);
    }
    if (fifo_.size() >= capacity_) {
        overflowed_ = true;
        return false;
    }
    fifo_.push_back(Change{Change::Kind::Rename, root, from, to, false, first});
    add_time(first);
    return true;
}

std::optional<Change> ChangeQueue::pop() {
    if (fifo_.empty()) return std::nullopt;
    Change c = std::move(fifo_.front());
    if (c.kind == Change::Kind::Sync) index_.erase(path_key(c.root, c.path));
    remove_time(c.first_seen_ns);
    fifo_.pop_front();
    return c;
}

void ChangeQueue::clear() {
    fifo_.clear();
    index_.clear();
    times_.clear();
}

void ChangeQueue::remove_time(std::uint64_t t) {
    if (auto it = times_.find(t); it != times_.end() && --it->second == 0) times_.erase(it);
}

std::uint64_t ChangeQueue::oldest() const {
    // Coalesced entries keep their first time but renames can move an old time later in the list.
    return times_.empty() ? 0 : times_.begin()->first;
}

}  // namespace ha::sync
