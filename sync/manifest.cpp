#include "sync/manifest.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "common/log.hpp"
#include "sync/fsutil.hpp"
#include "sync/wire.hpp"

namespace ha::sync {

namespace {

// Reads through a buffer, not a mapping: a file the PBX truncates while it is being read would
// turn an access to the mapping into SIGBUS, and that would take the agent down.
Result<std::uint64_t> checksum_fd(int fd, std::uint64_t size, const ChecksumKey& key) {
    PayloadChecksum sum(key);
    std::vector<std::uint8_t> buf(std::min<std::uint64_t>(size, std::uint64_t{256} << 10));
    std::uint64_t done = 0;
    while (done < size) {
        const ssize_t n =
            ::pread(fd, buf.data(),
                    static_cast<std::size_t>(std::min<std::uint64_t>(size - done, buf.size())),
                    static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return last_errno("pread");
        }
        if (n == 0) break;  // shrank meanwhile: the sum will not match, the file is sent again
        sum.update(buf.data(), static_cast<std::size_t>(n));
        done += static_cast<std::uint64_t>(n);
    }
    return sum.finish();
}

Status scan_dir(int dirfd, const std::string& prefix, Mode mode, bool with_checksums,
                const ChecksumKey& key, Manifest& out, int depth) {
    if (depth > 64) return fail(fmt::format("scan {}: too deep", prefix));
    DIR* d = ::fdopendir(::dup(dirfd));
    if (d == nullptr) return last_errno(fmt::format("opendir {}", prefix));
    // A dup shares the directory offset with the original fd: start from the top.
    ::rewinddir(d);
    std::vector<std::pair<std::string, unsigned char>> names;
    while (dirent* e = ::readdir(d)) {
        const std::string_view n = e->d_name;
        if (n == "." || n == ".." || n.starts_with(kTempPrefix)) continue;
        names.emplace_back(std::string(n), e->d_type);
    }
    ::closedir(d);
    for (const auto& [name, type] : names) {
        std::string rel = prefix;
        if (!rel.empty()) rel += '/';
        rel += name;
        struct stat st {};
        if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;  // raced delete
        if (S_ISDIR(st.st_mode)) {
            const int sub =
                ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) continue;
            UniqueFd subfd(sub);
            if (auto s = scan_dir(sub, rel, mode, with_checksums, key, out, depth + 1); !s)
                return s;
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (mode == Mode::Sqlite && is_sqlite_side_file(rel)) {
            // Readers write the -shm (read marks) without changing the database: not a version.
            if (rel.ends_with("-shm")) continue;
            auto& db = out[sqlite_db_of(rel)];
            db.mtime_ns = std::max(db.mtime_ns, mtime_ns_of(st));
            continue;
        }
        auto& e = out[rel];
        e.size = static_cast<std::uint64_t>(st.st_size);
        e.mtime_ns = std::max(e.mtime_ns, mtime_ns_of(st));
        e.mode = st.st_mode & 07777;
        if (with_checksums && mode != Mode::Sqlite) {
            const int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) continue;
            UniqueFd f(fd);
            auto sum = checksum_fd(fd, e.size, key);
            if (sum) e.checksum = *sum;
        }
    }
    return {};
}

}  // namespace

Result<Manifest> scan_root(const UniqueFd& root, Mode mode, bool with_checksums,
                           const ChecksumKey& key) {
    Manifest m;
    if (auto st = scan_dir(root.get(), "", mode, with_checksums, key, m, 0); !st)
        return unexpected(st.error());
    if (mode == Mode::Sqlite) {
        // A side file whose database is gone is not a database.
        std::erase_if(m, [](const auto& kv) { return kv.second.mode == 0 && kv.second.size == 0; });
    }
    return m;
}

std::vector<DiffItem> diff_manifest(const Manifest& active, const Manifest& standby, Mode mode) {
    std::vector<DiffItem> out;
    for (const auto& [path, a] : active) {
        const auto it = standby.find(path);
        if (it == standby.end()) {
            out.push_back({path, DiffItem::Action::SendWhole, 0, a.size});
            continue;
        }
        const auto& s = it->second;
        if (mode == Mode::Sqlite) {
            // The replica is a snapshot, so its size differs; the newest mtime of the db and its
            // WAL at snapshot time is what identifies it. A full backup always takes a new one.
            if (s.mtime_ns != a.mtime_ns || s.checksum.has_value())
                out.push_back({path, DiffItem::Action::SendWhole, 0, a.size});
            continue;
        }
        bool same = s.size == a.size && s.mtime_ns == a.mtime_ns && s.mode == a.mode;
        if (s.checksum && a.checksum) same = s.size == a.size && *s.checksum == *a.checksum;
        if (same) continue;
        // An append-only file the standby holds a prefix of continues where the standby stopped;
        // with checksums (full backup) only a whole-file compare is trusted.
        if (mode == Mode::Append && !s.checksum && s.size < a.size) {
            out.push_back({path, DiffItem::Action::SendAppend, s.size, a.size - s.size});
        } else {
            out.push_back({path, DiffItem::Action::SendWhole, 0, a.size});
        }
    }
    for (const auto& [path, s] : standby) {
        if (!active.contains(path)) out.push_back({path, DiffItem::Action::Delete, 0, 0});
    }
    return out;
}

}  // namespace ha::sync
