#include "sync/watcher.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <optional>

#include "common/log.hpp"
#include "sync/wire.hpp"

namespace ha::sync {

namespace {
constexpr std::uint32_t kBaseMask = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE |
                                    IN_CREATE | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;
std::string join(const std::string& a, std::string_view b) {
    return a.empty() ? std::string(b) : a + "/" + std::string(b);
}
}  // namespace

Result<Watcher> Watcher::create(const std::vector<Root>& roots) {
    const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return last_errno("inotify_init1");
    Watcher w(UniqueFd(fd), roots);
    for (std::size_t i = 0; i < roots.size(); ++i) {
        if (auto st = w.add_tree(static_cast<std::uint8_t>(i), "", nullptr); !st)
            return unexpected(st.error());
    }
    return w;
}

std::string Watcher::abs(std::uint8_t root, const std::string& rel) const {
    return rel.empty() ? roots_[root].path : roots_[root].path + "/" + rel;
}

Status Watcher::add_tree(std::uint8_t root, const std::string& rel,
                         std::vector<WatchEvent>* report) {
    const std::string path = abs(root, rel);
    const std::uint32_t mask = kBaseMask | IN_MODIFY;
    const int wd = ::inotify_add_watch(fd_.get(), path.c_str(), mask);
    if (wd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return {};  // gone again already
        return last_errno(fmt::format("inotify_add_watch {}", path));
    }
    wds_[wd] = Dir{root, rel};
    const int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return {};
    DIR* d = ::fdopendir(dfd);
    if (d == nullptr) {
        ::close(dfd);
        return {};
    }
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(d)) {
        const std::string_view n = e->d_name;
        if (n == "." || n == ".." || n.starts_with(kTempPrefix)) continue;
        if (e->d_type == DT_DIR) {
            subdirs.emplace_back(n);
        } else if (report != nullptr && e->d_type == DT_REG) {
            report->push_back({WatchEvent::Kind::Changed, root, join(rel, n), {}});
        }
    }
    ::closedir(d);
    for (const auto& s : subdirs) {
        if (auto st = add_tree(root, join(rel, s), report); !st) return st;
    }
    return {};
}

Status Watcher::read(std::vector<WatchEvent>& out) {
    alignas(inotify_event) char buf[64 * 1024];
    struct PendingFrom {
        std::uint32_t cookie;
        std::uint8_t root;
        std::string path;
        bool dir;
    };
    std::optional<PendingFrom> from;
    auto flush_from = [&] {
        if (from) out.push_back({WatchEvent::Kind::Removed, from->root, from->path, {}});
        from.reset();
    };
    for (bool more = true; more;) {
        const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return last_errno("read inotify");
        }
        // A read that left room for another full event took everything queued: no second read
        // just to see EAGAIN (the engine's poll is re-armed and reports what comes next).
        more = static_cast<std::size_t>(n) + sizeof(inotify_event) + NAME_MAX + 1 > sizeof buf;
        for (ssize_t off = 0; off < n;) {
            const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
            off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
            if ((ev->mask & IN_Q_OVERFLOW) != 0) {
                out.push_back({WatchEvent::Kind::Overflow, 0, {}, {}});
                continue;
            }
            auto it = wds_.find(ev->wd);
            if ((ev->mask & IN_IGNORED) != 0) {
                if (it != wds_.end()) wds_.erase(it);
                continue;
            }
            if (it == wds_.end() || ev->len == 0) continue;
            const std::string_view name(ev->name);
            if (name.starts_with(kTempPrefix)) continue;
            const std::uint8_t root = it->second.root;
            const std::string rel = join(it->second.rel, name);
            const bool dir = (ev->mask & IN_ISDIR) != 0;
            if ((ev->mask & IN_MOVED_FROM) != 0) {
                flush_from();
                from = PendingFrom{ev->cookie, root, rel, dir};
                continue;
            }
            if ((ev->mask & IN_MOVED_TO) != 0) {
                if (from && from->cookie == ev->cookie && from->root == root) {
                    out.push_back({WatchEvent::Kind::Moved, root, from->path, rel});
                    if (dir) {
                        // The moved directory keeps its watches: rewrite their paths.
                        const std::string old_prefix = from->path;
                        for (auto& [wd, d] : wds_) {
                            if (d.root != root) continue;
                            if (d.rel == old_prefix) {
                                d.rel = rel;
                            } else if (d.rel.starts_with(old_prefix + "/")) {
                                d.rel = rel + d.rel.substr(old_prefix.size());
                            }
                        }
                    }
                    from.reset();
                    continue;
                }
                flush_from();
                if (dir) {
                    if (auto st = add_tree(root, rel, &out); !st) return st;
                } else {
                    out.push_back({WatchEvent::Kind::Changed, root, rel, {}});
                }
                continue;
            }
            flush_from();
            if ((ev->mask & IN_CREATE) != 0) {
                if (dir) {
                    if (auto st = add_tree(root, rel, &out); !st) return st;
                }
                continue;
            }
            if ((ev->mask & IN_DELETE) != 0) {
                out.push_back({WatchEvent::Kind::Removed, root, rel, {}});
                continue;
            }
            if (dir) continue;
            if ((ev->mask & IN_MODIFY) != 0) {
                out.push_back({WatchEvent::Kind::Modified, root, rel, {}});
            } else if ((ev->mask & IN_CLOSE_WRITE) != 0 && roots_[root].mode != Mode::Sqlite) {
                out.push_back({WatchEvent::Kind::Changed, root, rel, {}});
            }
        }
    }
    flush_from();
    return {};
}

}  // namespace ha::sync
