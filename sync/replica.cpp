#include "sync/replica.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/log.hpp"
#include "sync/snapshot.hpp"

namespace ha::sync {

namespace {

// The 100-byte header of a file in `dir`. Only for files this process holds no SQLite locks on:
// closing any descriptor of a file drops every POSIX lock the process has on it.
bool read_header(const UniqueFd& dir, const std::string& name, unsigned char (&hdr)[100]) {
    const int fd = ::openat(dir.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    const UniqueFd f(fd);
    return ::pread(fd, hdr, sizeof hdr, 0) == static_cast<ssize_t>(sizeof hdr);
}

std::string proc_path(const UniqueFd& dir, const std::string& name) {
    return fmt::format("/proc/self/fd/{}/{}", dir.get(), name);
}

// A URI for SQLite's immutable mode: the snapshot is read without locks and without creating a
// -wal/-shm beside it (it is a whole database with an empty WAL).
std::string immutable_uri(const UniqueFd& dir, const std::string& name) {
    std::string uri = "file:";
    for (const char c : proc_path(dir, name)) {
        if (c == '%' || c == '?' || c == '#') {
            uri += fmt::format("%{:02X}", static_cast<unsigned char>(c));
        } else {
            uri += c;
        }
    }
    return uri + "?immutable=1";
}

void set_mtime(const UniqueFd& dir, const std::string& name, std::int64_t mtime_ns) {
    const timespec times[2] = {{0, UTIME_OMIT},
                               {static_cast<time_t>(mtime_ns / 1'000'000'000),
                                static_cast<long>(mtime_ns % 1'000'000'000)}};
    ::utimensat(dir.get(), name.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

}  // namespace

SqliteReplicas::~SqliteReplicas() {
    close_all();
}

bool SqliteReplicas::apply(const std::string& key, const SharedFd& dir, const std::string& tmp,
                           const std::string& leaf, std::int64_t mtime_ns, std::string& why) {
    unsigned char hdr[100];
    if (!read_header(*dir, tmp, hdr) || !sqlite_header_is_wal(hdr, sizeof hdr)) {
        why = "snapshot not in WAL mode";
        return false;
    }
    struct stat st {};
    if (::fstatat(dir->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
        close(key);
        why = "no replica yet";
        return false;
    }
    auto it = open_.find(key);
    if (it != open_.end() && (it->second.dev != st.st_dev || it->second.ino != st.st_ino)) {
        close(key);  // replaced behind our back: start over with the file that has the name
        it = open_.end();
    }
    if (it == open_.end()) {
        unsigned char rhdr[100];
        if (!read_header(*dir, leaf, rhdr) || !sqlite_header_is_wal(rhdr, sizeof rhdr)) {
            why = "replica not in WAL mode";
            return false;
        }
        Replica r;
        r.dir = dir;
        r.leaf = leaf;
        r.dev = st.st_dev;
        r.ino = st.st_ino;
        if (sqlite3_open_v2(proc_path(*dir, leaf).c_str(), &r.db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
            why = fmt::format("open replica: {}", r.db != nullptr ? sqlite3_errmsg(r.db) : "?");
            sqlite3_close_v2(r.db);
            return false;
        }
        int persist = 1;
        sqlite3_file_control(r.db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
        sqlite3_db_config(r.db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
        sqlite3_exec(r.db, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
        sqlite3_busy_timeout(r.db, 2000);
        it = open_.emplace(key, std::move(r)).first;
    }
    Replica& r = it->second;
    sqlite3* src = nullptr;
    int rc = sqlite3_open_v2(immutable_uri(*dir, tmp).c_str(), &src,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, nullptr);
    if (rc == SQLITE_OK) {
        sqlite3_backup* b = sqlite3_backup_init(r.db, "main", src, "main");
        if (b == nullptr) {
            rc = sqlite3_errcode(r.db);
        } else {
            // One step: the whole copy is one transaction of the replica.
            rc = sqlite3_backup_step(b, -1);
            sqlite3_backup_finish(b);
        }
    }
    sqlite3_close_v2(src);
    if (rc != SQLITE_DONE) {
        // Nothing committed; the rename path replaces the replica (e.g. a new page size).
        why = fmt::format("apply to replica: {}", sqlite3_errstr(rc));
        close(key);
        return false;
    }
    // The manifest compares the newest mtime of the database and its -wal with the active's.
    set_mtime(*dir, leaf, mtime_ns);
    set_mtime(*dir, leaf + "-wal", mtime_ns);
    ::unlinkat(dir->get(), tmp.c_str(), 0);
    return true;
}

int SqliteReplicas::sync(const std::string& key) {
    auto it = open_.find(key);
    if (it == open_.end()) return EBADF;
    Replica& r = it->second;
    if (!r.wal) {
        const std::string wal = r.leaf + "-wal";
        r.wal = UniqueFd(::openat(r.dir->get(), wal.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!r.wal) return errno;
    }
    return ::fdatasync(r.wal.get()) == 0 ? 0 : errno;
}

void SqliteReplicas::close(const std::string& key) {
    auto it = open_.find(key);
    if (it == open_.end()) return;
    sqlite3_close_v2(it->second.db);
    open_.erase(it);
}

void SqliteReplicas::close_under(std::uint8_t root, std::string_view path) {
    for (auto it = open_.begin(); it != open_.end();) {
        const std::string_view k = it->first;
        const std::string_view p = k.substr(1);
        const bool under =
            static_cast<std::uint8_t>(k[0]) == root &&
            (path.empty() || p == path ||
             (p.size() > path.size() && p.starts_with(path) && p[path.size()] == '/'));
        if (!under) {
            ++it;
            continue;
        }
        sqlite3_close_v2(it->second.db);
        it = open_.erase(it);
    }
}

void SqliteReplicas::close_all() {
    for (auto& [k, r] : open_) sqlite3_close_v2(r.db);
    open_.clear();
}

}  // namespace ha::sync
