#include "sync/replica.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "common/log.hpp"
#include "sync/fsutil.hpp"
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

// Closes and drops the connections in `conns` (values with a `db`) whose key `match` selects.
template <typename Map, typename Match>
void close_if(Map& conns, Match&& match) {
    std::erase_if(conns, [&](auto& kv) {
        if (!match(kv.first)) return false;
        sqlite3_close_v2(kv.second.db);
        return true;
    });
}

// A PASSIVE checkpoint (on the checkpointer thread: it never waits for, nor blocks, readers and
// the writer) is asked for after every snapshot while the WAL holds this many frames, as
// SQLite's default autocheckpoint would. The WAL starts over once one of them has copied every
// frame; the file is then cut back to 4 MiB (journal_size_limit).
constexpr int kCheckpointFrames = 1000;
// Each snapshot adds the whole database to the WAL, and while snapshots keep coming a background
// checkpoint seldom catches up with all of it, which is when the WAL could start over. Past
// max(kWalCapMin, kWalCapTimes x the database), or once the WAL is bigger than the space left
// beside it, the WAL is emptied (TRUNCATE) before the next snapshot goes in, on the committer
// thread, or that snapshot is refused: the WAL must never take the space its own checkpoint
// needs (a full disk would then stay full).
constexpr off_t kWalCapMin = off_t{8} << 20;
constexpr off_t kWalCapTimes = 4;

// Opens a replica for the engine's use: its WAL persists on close, closing never checkpoints,
// commits need no fsync (synchronous=NORMAL), and checkpoints happen only when asked for.
sqlite3* open_replica(const UniqueFd& dir, const std::string& leaf, std::string& why) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(proc_path(dir, leaf).c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
        why = fmt::format("open replica: {}", db != nullptr ? sqlite3_errmsg(db) : "?");
        sqlite3_close_v2(db);
        return nullptr;
    }
    int persist = 1;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
    sqlite3_busy_timeout(db, 2000);
    sqlite3_wal_autocheckpoint(db, 0);
    sqlite3_exec(db, "PRAGMA journal_size_limit=4194304", nullptr, nullptr, nullptr);
    return db;
}

void set_mtime(const UniqueFd& dir, const std::string& name, std::int64_t mtime_ns) {
    const timespec times[2] = {{0, UTIME_OMIT},
                               {static_cast<time_t>(mtime_ns / 1'000'000'000),
                                static_cast<long>(mtime_ns % 1'000'000'000)}};
    ::utimensat(dir.get(), name.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

}  // namespace

SqliteReplicas::SqliteReplicas() : ckpt_(std::make_unique<Checkpointer>()) {}

SqliteReplicas::~SqliteReplicas() {
    close_all();
}

SqliteReplicas::Checkpointer::~Checkpointer() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    thread_.reset();  // joins
    for (auto& [k, c] : conns_) sqlite3_close_v2(c.db);
}

void SqliteReplicas::Checkpointer::request(const std::string& key, const SharedFd& dir,
                                           const std::string& leaf) {
    if (!thread_) {
        auto t = SmallThread::start("ha-sync-ckpt", [this] { loop(); });
        if (!t) {
            // The WAL cap in apply() still bounds the WAL, on the committer thread.
            log::warn("sync", "checkpointer: {}", t.error().message());
            return;
        }
        thread_ = std::move(*t);
    }
    {
        std::lock_guard lk(mu_);
        if (std::find(todo_.begin(), todo_.end(), key) != todo_.end()) return;
        auto& c = conns_[key];
        if (c.db == nullptr) {
            c.dir = dir;
            c.leaf = leaf;
        }
        todo_.push_back(key);
    }
    cv_.notify_one();
}

template <typename Match>
void SqliteReplicas::Checkpointer::forget(Match&& match) {
    std::unique_lock lk(mu_);
    std::erase_if(todo_, [&](const std::string& k) { return match(k); });
    idle_cv_.wait(lk, [&] { return busy_.empty() || !match(busy_); });
    close_if(conns_, match);
}

void SqliteReplicas::Checkpointer::loop() {
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait(lk, [&] { return stop_ || !todo_.empty(); });
        if (stop_) return;
        busy_ = std::move(todo_.front());
        todo_.pop_front();
        Conn& c = conns_[busy_];  // nodes stay put; forget() waits while busy_ names it
        lk.unlock();
        std::string why;
        if (c.db == nullptr) c.db = open_replica(*c.dir, c.leaf, why);
        if (c.db != nullptr) {
            // PASSIVE: never waits for readers or the writer; what it cannot copy yet stays.
            const int rc = sqlite3_wal_checkpoint_v2(c.db, "main", SQLITE_CHECKPOINT_PASSIVE,
                                                     nullptr, nullptr);
            if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                log::warn("sync", "checkpoint of replica {}: {}", c.leaf, sqlite3_errstr(rc));
            // The checkpoint wrote the database: give it back the mtime of its last snapshot
            // (the -wal carries it), which the manifest compares.
            struct stat wal {};
            const std::string wal_name = c.leaf + "-wal";
            if (::fstatat(c.dir->get(), wal_name.c_str(), &wal, AT_SYMLINK_NOFOLLOW) == 0)
                set_mtime(*c.dir, c.leaf, mtime_ns_of(wal));
        } else {
            log::warn("sync", "checkpoint of replica {}: {}", c.leaf, why);
        }
        lk.lock();
        busy_.clear();
        idle_cv_.notify_all();
    }
}

template <typename Match>
void SqliteReplicas::close_matching(Match&& match) {
    close_if(open_, match);
    ckpt_->forget(match);
}

SqliteReplicas::Outcome SqliteReplicas::apply(const std::string& key, const SharedFd& dir,
                                              const std::string& tmp, const std::string& leaf,
                                              std::int64_t mtime_ns, std::string& why, int& err) {
    unsigned char hdr[100];
    if (!read_header(*dir, tmp, hdr) || !sqlite_header_is_wal(hdr, sizeof hdr)) {
        why = "snapshot not in WAL mode";
        return Outcome::Declined;
    }
    struct stat st {};
    if (::fstatat(dir->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
        close(key);
        why = "no replica yet";
        return Outcome::Declined;
    }
    auto it = open_.find(key);
    if (it != open_.end() && (it->second.dev != st.st_dev || it->second.ino != st.st_ino)) {
        close(key);  // replaced behind our back: start over with the file that has the name
        it = open_.end();
    }
    if (it == open_.end()) {
        unsigned char rhdr[100];
        ckpt_->forget([&](const std::string& k) { return k == key; });  // before reading it
        if (!read_header(*dir, leaf, rhdr) || !sqlite_header_is_wal(rhdr, sizeof rhdr)) {
            why = "replica not in WAL mode";
            return Outcome::Declined;
        }
        Replica r;
        r.dir = dir;
        r.leaf = leaf;
        r.dev = st.st_dev;
        r.ino = st.st_ino;
        r.db = open_replica(*dir, leaf, why);
        if (r.db == nullptr) return Outcome::Declined;
        it = open_.emplace(key, std::move(r)).first;
        // Map nodes do not move: the hook may keep a pointer to its Replica.
        sqlite3_wal_hook(
            it->second.db,
            [](void* ctx, sqlite3* /*db*/, const char* /*name*/, int frames) -> int {
                static_cast<Replica*>(ctx)->wal_frames = frames;
                return SQLITE_OK;
            },
            &it->second);
    }
    Replica& r = it->second;
    struct stat snap {};
    struct stat wal {};
    const std::string wal_name = leaf + "-wal";
    struct statvfs vfs {};
    const off_t avail = ::fstatvfs(dir->get(), &vfs) == 0
                            ? static_cast<off_t>(vfs.f_bavail * vfs.f_frsize)
                            : std::numeric_limits<off_t>::max();
    if (::fstatat(dir->get(), tmp.c_str(), &snap, AT_SYMLINK_NOFOLLOW) == 0 &&
        ::fstatat(dir->get(), wal_name.c_str(), &wal, AT_SYMLINK_NOFOLLOW) == 0 &&
        (wal.st_size > std::max(kWalCapMin, kWalCapTimes * snap.st_size) || wal.st_size > avail)) {
        ckpt_->forget([&](const std::string& k) { return k == key; });
        sqlite3_busy_timeout(r.db, 200);
        const int rc =
            sqlite3_wal_checkpoint_v2(r.db, "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        sqlite3_busy_timeout(r.db, 2000);
        if (rc != SQLITE_OK) {
            why = fmt::format("replica WAL of {} bytes could not be emptied: {}", wal.st_size,
                              sqlite3_errstr(rc));
            err = (rc & 0xff) == SQLITE_FULL ? ENOSPC : EIO;
            return Outcome::Failed;
        }
    }
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
        // Nothing committed (the backup is one transaction). A new page size (READONLY) or a
        // damaged replica is replaced by rename; a full disk or an I/O error would hit that too.
        why = fmt::format("apply to replica: {}", sqlite3_errstr(rc));
        if ((rc & 0xff) == SQLITE_FULL) {
            // The WAL may be what filled the disk: give its space back if it can be emptied now
            // (best effort), so that the retry, once there is room, goes through.
            sqlite3_busy_timeout(r.db, 200);
            sqlite3_wal_checkpoint_v2(r.db, "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        }
        close(key);
        switch (rc & 0xff) {
            case SQLITE_FULL:
                err = ENOSPC;
                return Outcome::Failed;
            case SQLITE_IOERR:
            case SQLITE_BUSY:
            case SQLITE_LOCKED:
            case SQLITE_NOMEM:
                err = EIO;
                return Outcome::Failed;
            default:
                return Outcome::Declined;
        }
    }
    // The manifest compares the newest mtime of the database and its -wal with the active's.
    set_mtime(*dir, leaf + "-wal", mtime_ns);
    set_mtime(*dir, leaf, mtime_ns);
    ::unlinkat(dir->get(), tmp.c_str(), 0);
    if (r.wal_frames >= kCheckpointFrames) {
        ckpt_->request(key, dir, leaf);
    }
    return Outcome::Applied;
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

bool SqliteReplicas::retire(const std::string& key, const SharedFd& dir, const std::string& leaf) {
    auto match = [&](const std::string& k) { return k == key; };
    ckpt_->forget(match);  // its connections are done before we read the file below
    const std::string wal_name = leaf + "-wal";
    auto wal_empty = [&] {
        struct stat wal {};
        return ::fstatat(dir->get(), wal_name.c_str(), &wal, AT_SYMLINK_NOFOLLOW) != 0 ||
               wal.st_size == 0;
    };
    bool ok = wal_empty();
    if (!ok) {
        auto it = open_.find(key);
        sqlite3* db = it != open_.end() ? it->second.db : nullptr;
        bool opened = false;
        unsigned char hdr[100];
        if (db == nullptr) {
            // A -wal beside a database not in WAL mode is never read: nothing to fold in.
            if (!read_header(*dir, leaf, hdr) || !sqlite_header_is_wal(hdr, sizeof hdr)) {
                ok = true;
            } else {
                std::string why;
                db = open_replica(*dir, leaf, why);
                opened = db != nullptr;
            }
        }
        if (db != nullptr) {
            // A reader still on an older snapshot holds the checkpoint back: wait briefly.
            sqlite3_busy_timeout(db, 200);
            ok = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr,
                                           nullptr) == SQLITE_OK &&
                 wal_empty();
        }
        if (opened) sqlite3_close_v2(db);
    }
    close_if(open_, match);  // the checkpointer let go of it above
    return ok;
}

void SqliteReplicas::close(const std::string& key) {
    close_matching([&](const std::string& k) { return k == key; });
}

void SqliteReplicas::close_under(std::uint8_t root, std::string_view path) {
    close_matching([&](const std::string& k) { return key_at_or_under(k, root, path); });
}

void SqliteReplicas::close_all() {
    close_matching([](const std::string&) { return true; });
}

}  // namespace ha::sync
