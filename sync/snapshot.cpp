#include "sync/snapshot.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/atomic_file.hpp"
#include "common/log.hpp"

namespace ha::sync {

namespace {
struct Db {
    sqlite3* h = nullptr;
    ~Db() {
        if (h != nullptr) sqlite3_close_v2(h);
    }
};
}  // namespace

Result<UniqueFd> sqlite_snapshot(const std::string& db_path, const std::string& tmp_dir,
                                 int busy_ms) {
    if (auto st = make_dirs(tmp_dir, 0700); !st) return unexpected(st.error().wrap("snapshot dir"));
    std::uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<std::uint64_t>(::getpid());
    const std::string tmp = fmt::format("{}/snap-{:016x}.db", tmp_dir, r);
    Db src;
    Db dst;
    auto sqlite_fail = [&](sqlite3* h, const char* what) {
        std::string msg =
            fmt::format("sqlite {} {}: {}", what, db_path, h != nullptr ? sqlite3_errmsg(h) : "?");
        ::unlink(tmp.c_str());
        return fail(std::move(msg), std::errc::io_error);
    };
    if (sqlite3_open_v2(db_path.c_str(), &src.h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
        return sqlite_fail(src.h, "open");
    // sqlite3_busy_timeout() sleeps 1, 2, 5, 10... ms between tries: one busy moment (a commit
    // in progress) would cost ~20 ms of replica lag. Retry every 200 us instead.
    int max_tries = busy_ms * 5;
    sqlite3_busy_handler(
        src.h,
        [](void* ctx, int count) -> int {
            if (count >= *static_cast<int*>(ctx)) return 0;
            sqlite3_sleep(0);
            ::usleep(200);
            return 1;
        },
        &max_tries);
    if (sqlite3_open_v2(tmp.c_str(), &dst.h,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
        return sqlite_fail(dst.h, "open snapshot");
    // The snapshot is a private temp file made durable by the receiver: no journal, no fsyncs.
    sqlite3_exec(dst.h, "PRAGMA synchronous=OFF; PRAGMA journal_mode=OFF", nullptr, nullptr,
                 nullptr);
    sqlite3_backup* b = sqlite3_backup_init(dst.h, "main", src.h, "main");
    if (b == nullptr) return sqlite_fail(dst.h, "backup_init");
    int rc = SQLITE_OK;
    for (int tries = 0; tries < busy_ms * 5 + 1; ++tries) {
        // -1: all pages in one step, i.e. inside one read transaction of the source.
        rc = sqlite3_backup_step(b, -1);
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
        ::usleep(200);
    }
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        ::unlink(tmp.c_str());
        // NOTADB: a plain file in a sqlite root; the caller sends it as a file.
        return fail(fmt::format("sqlite backup {}: {}", db_path, sqlite3_errstr(rc)),
                    rc == SQLITE_NOTADB ? std::errc::invalid_argument : std::errc::io_error);
    }
    if (sqlite3_exec(dst.h, "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr) != SQLITE_OK)
        return sqlite_fail(dst.h, "journal_mode");
    sqlite3_close_v2(dst.h);
    dst.h = nullptr;
    const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    const int err = errno;
    ::unlink(tmp.c_str());
    if (fd < 0) return errno_error(err, fmt::format("open snapshot {}", tmp));
    return UniqueFd(fd);
}

}  // namespace ha::sync
