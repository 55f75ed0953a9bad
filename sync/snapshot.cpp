#include "sync/snapshot.hpp"

#include <sqlite3.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

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

bool sqlite_header_is_wal(const unsigned char* header, std::size_t len) {
    static constexpr char kMagic[] = "SQLite format 3";  // with its NUL: 16 bytes
    return len >= 20 && std::memcmp(header, kMagic, sizeof kMagic) == 0 && header[18] == 2 &&
           header[19] == 2;
}

Result<UniqueFd> sqlite_snapshot(const std::string& db_path, int busy_ms) {
    Db src;
    Db dst;
    auto sqlite_fail = [&](sqlite3* h, const char* what) {
        return fail(
            fmt::format("sqlite {} {}: {}", what, db_path, h != nullptr ? sqlite3_errmsg(h) : "?"),
            std::errc::io_error);
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
            ::usleep(200);
            return 1;
        },
        &max_tries);
    if (sqlite3_open_v2(":memory:", &dst.h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
        SQLITE_OK)
        return sqlite_fail(dst.h, "open memory copy");
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
        // NOTADB: a plain file in a sqlite root; the caller sends it as a file.
        return fail(fmt::format("sqlite backup {}: {}", db_path, sqlite3_errstr(rc)),
                    rc == SQLITE_NOTADB ? std::errc::invalid_argument : std::errc::io_error);
    }
    // The pages as they are, page 1 included: its file format bytes still say WAL for a WAL
    // database (an in-memory copy cannot be in WAL mode itself, but its image can).
    sqlite3_int64 size = 0;
    unsigned char* image = sqlite3_serialize(dst.h, "main", &size, 0);
    if (image == nullptr && size != 0) return sqlite_fail(dst.h, "serialize");
    const int fd = ::memfd_create("ha-sync-snapshot", MFD_CLOEXEC);
    if (fd < 0) {
        sqlite3_free(image);
        return last_errno("memfd_create");
    }
    UniqueFd out(fd);
    std::size_t done = 0;
    while (done < static_cast<std::size_t>(size)) {
        const ssize_t n = ::write(fd, image + done, static_cast<std::size_t>(size) - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            sqlite3_free(image);
            return errno_error(err, "write snapshot");
        }
        done += static_cast<std::size_t>(n);
    }
    sqlite3_free(image);
    return out;
}

}  // namespace ha::sync
