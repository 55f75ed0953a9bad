#include "sync/fsutil.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <vector>

#include "common/log.hpp"
#include "sync/wire.hpp"

namespace ha::sync {

std::string_view to_string(Mode m) {
    switch (m) {
        case Mode::File:
            return "file";
        case Mode::Append:
            return "append";
        case Mode::Sqlite:
            return "sqlite";
    }
    return "?";
}

std::string path_key(std::uint8_t root, std::string_view path) {
    std::string k(1, static_cast<char>(root));
    k += path;
    return k;
}

bool key_at_or_under(std::string_view k, std::uint8_t root, std::string_view path) {
    if (k.empty() || static_cast<std::uint8_t>(k[0]) != root) return false;
    const std::string_view p = k.substr(1);
    return path.empty() || p == path ||
           (p.size() > path.size() && p.starts_with(path) && p[path.size()] == '/');
}

std::int64_t mtime_ns_of(const struct stat& st) {
    return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

Result<UniqueFd> open_root(const std::string& path, bool create) {
    if (path.empty() || path.front() != '/')
        return fail(fmt::format("sync root '{}': not absolute", path));
    if (create) {
        std::string cur;
        std::size_t pos = 1;
        while (pos <= path.size()) {
            std::size_t end = path.find('/', pos);
            if (end == std::string::npos) end = path.size();
            cur = path.substr(0, end);
            if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
                return last_errno(fmt::format("mkdir {}", cur));
            pos = end + 1;
        }
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return last_errno(fmt::format("open sync root {}", path));
    return UniqueFd(fd);
}

Result<UniqueFd> open_beneath(const UniqueFd& root, std::string_view rel, int flags,
                              unsigned mode) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) != 0 ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const std::string p(rel);
    const long fd = ::syscall(SYS_openat2, root.get(), p.c_str(), &how, sizeof how);
    if (fd < 0) return last_errno(fmt::format("openat2 {}", p));
    return UniqueFd(static_cast<int>(fd));
}

Result<UniqueFd> open_parent(const UniqueFd& root, std::string_view rel, bool create,
                             std::string& leaf) {
    const auto slash = rel.rfind('/');
    if (slash == std::string_view::npos) {
        leaf = std::string(rel);
        auto d = open_beneath(root, ".", O_RDONLY | O_DIRECTORY);
        return d;
    }
    leaf = std::string(rel.substr(slash + 1));
    const auto dir = rel.substr(0, slash);
    auto d = open_beneath(root, dir, O_RDONLY | O_DIRECTORY);
    if (d || !create || d.error().code != std::errc::no_such_file_or_directory) return d;
    // Create one component at a time under the already-opened parent so no symlink is followed.
    HA_TRY_CTX(cur, open_beneath(root, ".", O_RDONLY | O_DIRECTORY), "open root");
    std::size_t pos = 0;
    while (pos < dir.size()) {
        std::size_t end = dir.find('/', pos);
        if (end == std::string_view::npos) end = dir.size();
        const std::string comp(dir.substr(pos, end - pos));
        if (::mkdirat(cur.get(), comp.c_str(), 0755) != 0 && errno != EEXIST)
            return last_errno(fmt::format("mkdir {}", comp));
        HA_TRY_CTX(next, open_beneath(cur, comp, O_RDONLY | O_DIRECTORY), "open parent");
        cur = std::move(next);
        pos = end + 1;
    }
    return cur;
}

Status remove_at(const UniqueFd& dir, const std::string& name) {
    if (::unlinkat(dir.get(), name.c_str(), 0) == 0 || errno == ENOENT) return {};
    if (errno != EISDIR && errno != EPERM) return last_errno(fmt::format("unlink {}", name));
    const int fd =
        ::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return last_errno(fmt::format("open dir {}", name));
    UniqueFd sub(fd);
    DIR* d = ::fdopendir(::dup(sub.get()));
    if (d == nullptr) return last_errno(fmt::format("fdopendir {}", name));
    // A dup shares the directory offset with the original fd: start from the top.
    ::rewinddir(d);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
        const std::string_view n = e->d_name;
        if (n != "." && n != "..") names.emplace_back(n);
    }
    ::closedir(d);
    for (const auto& n : names) {
        if (auto st = remove_at(sub, n); !st) return st;
    }
    if (::unlinkat(dir.get(), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
        return last_errno(fmt::format("rmdir {}", name));
    return {};
}

namespace {

Status copy_tree(int from_dir, const std::string& name, int to_dir) {
    struct stat st {};
    if (::fstatat(from_dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return last_errno(fmt::format("stat {}", name));
    const timespec times[2] = {st.st_atim, st.st_mtim};
    if (S_ISDIR(st.st_mode)) {
        if (::mkdirat(to_dir, name.c_str(), st.st_mode & 07777) != 0 && errno != EEXIST)
            return last_errno(fmt::format("mkdir {}", name));
        const int src =
            ::openat(from_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (src < 0) return last_errno(fmt::format("open {}", name));
        UniqueFd s(src);
        const int dst =
            ::openat(to_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dst < 0) return last_errno(fmt::format("open copy of {}", name));
        UniqueFd d(dst);
        DIR* dir = ::fdopendir(::dup(src));
        if (dir == nullptr) return last_errno(fmt::format("opendir {}", name));
        ::rewinddir(dir);
        std::vector<std::string> names;
        while (dirent* e = ::readdir(dir)) {
            const std::string_view n = e->d_name;
            if (n != "." && n != "..") names.emplace_back(n);
        }
        ::closedir(dir);
        for (const auto& n : names) {
            if (auto r = copy_tree(src, n, dst); !r) return r;
        }
        ::futimens(dst, times);
        ::fsync(dst);
        return {};
    }
    if (!S_ISREG(st.st_mode)) return {};  // symlinks and specials are never synced either
    const int src = ::openat(from_dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0) return last_errno(fmt::format("open {}", name));
    UniqueFd s(src);
    const int dst =
        ::openat(to_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                 st.st_mode & 07777);
    if (dst < 0) return last_errno(fmt::format("create copy of {}", name));
    UniqueFd d(dst);
    std::uint64_t left = static_cast<std::uint64_t>(st.st_size);
    while (left > 0) {
        const ssize_t n = ::copy_file_range(src, nullptr, dst, nullptr, left, 0);
        if (n < 0) return last_errno(fmt::format("copy {}", name));
        if (n == 0) break;
        left -= static_cast<std::uint64_t>(n);
    }
    ::futimens(dst, times);
    if (::fsync(dst) != 0) return last_errno(fmt::format("fsync copy of {}", name));
    return {};
}

}  // namespace

Status move_tree(const UniqueFd& from_dir, const std::string& name, const UniqueFd& to_dir) {
    if (::renameat(from_dir.get(), name.c_str(), to_dir.get(), name.c_str()) == 0) return {};
    if (errno != EXDEV) return last_errno(fmt::format("move {}", name));
    if (auto st = copy_tree(from_dir.get(), name, to_dir.get()); !st) return st;
    ::fsync(to_dir.get());
    return remove_at(from_dir, name);
}

namespace {
std::size_t remove_temps_in(int dirfd) {
    std::size_t n = 0;
    DIR* d = ::fdopendir(::dup(dirfd));
    if (d == nullptr) return 0;
    // A dup shares the directory offset with the original fd: start from the top.
    ::rewinddir(d);
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(d)) {
        const std::string_view name = e->d_name;
        if (name == "." || name == "..") continue;
        if (e->d_type == DT_DIR) {
            subdirs.emplace_back(name);
        } else if (name.starts_with(kTempPrefix)) {
            if (::unlinkat(dirfd, e->d_name, 0) == 0) ++n;
        }
    }
    ::closedir(d);
    for (const auto& s : subdirs) {
        const int fd = ::openat(dirfd, s.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        n += remove_temps_in(fd);
        ::close(fd);
    }
    return n;
}
}  // namespace

std::size_t remove_stale_temps(const UniqueFd& root) {
    return remove_temps_in(root.get());
}

bool is_sqlite_side_file(std::string_view rel) {
    return rel.ends_with("-wal") || rel.ends_with("-shm") || rel.ends_with("-journal");
}

std::string sqlite_db_of(std::string_view rel) {
    for (std::string_view suffix : {"-wal", "-shm", "-journal"}) {
        if (rel.ends_with(suffix)) return std::string(rel.substr(0, rel.size() - suffix.size()));
    }
    return std::string(rel);
}

}  // namespace ha::sync
