// The active's side of the engine: watcher events into the coalescing queue, the send pump
// (header from memory, payload by sendfile from the page cache), acks, manifest diff, backups.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "sync/fsutil.hpp"
#include "sync/snapshot.hpp"
#include "sync/worker.hpp"

namespace ha::sync {

namespace {
// The send window. Larger than what the standby holds back (two commit jobs and an open batch of at
// most 64 MiB each, see engine_standby.cpp) so a full sync keeps streaming while the standby's disk
// catches up.
constexpr std::size_t kMaxOutstandingFrames = 16384;
constexpr std::uint64_t kMaxOutstandingBytes = 256ULL << 20;
constexpr std::uint64_t kResyncDelayNs = 1'000'000'000;
constexpr std::size_t kMaxWriting = 1u << 16;
// After a write to a database, how often its wal-index header is looked at, and when a snapshot is
// taken regardless (a header we cannot read, a change that moves no header). A commit makes its
// frames visible only after it has fsynced them (synchronous=FULL), which a busy disk can stretch
// far past the settle time: the header is then looked at for `kSqliteLateCommitNs` more, less
// often as time goes on (a tenth of the time since the write, 150 us to 10 ms).
constexpr std::uint64_t kSqliteCheckNs = 150'000;
constexpr std::uint64_t kSqliteSettleNs = 2'000'000;
constexpr std::uint64_t kSqliteLateCommitNs = 10'000'000'000;
constexpr std::uint64_t kSqliteLateCheckMaxNs = 10'000'000;
// Whole files from this size on are hashed while they are sent (checksum trailer, wire.hpp).
constexpr std::uint64_t kTrailerMinBytes = 1ULL << 20;
constexpr std::size_t kMaxOpenSources = 256;
// Payloads up to this size go out from the buffer their checksum was computed from.
constexpr std::uint64_t kInlineMaxBytes = 4096;

}  // namespace

void Engine::Worker::on_watch_events() {
    std::vector<WatchEvent> evs;
    if (auto st = watcher_->read(evs); !st) {
        ++errors_;
        log::error("sync", "watcher: {}", st.error().message());
    }
    const std::uint64_t now = mono_ns();
    for (auto& ev : evs) {
        if (ev.kind == WatchEvent::Kind::Overflow) {
            log::warn("sync", "inotify queue overflow: resync by manifest");
            resync_due_ns_ = now;
            continue;
        }
        const Mode mode = cfg_.roots[ev.root].mode;
        if (mode == Mode::Sqlite) {
            // Readers (our own snapshot included) write the -shm for their read marks: that is
            // not a change, and following it would loop.
            if (ev.path.ends_with("-shm") && ev.kind != WatchEvent::Kind::Moved) continue;
            // Any other change to a database or its side files means "take a new snapshot" once
            // the commit is visible.
            sqlite_changed(ev.root, sqlite_db_of(ev.path), now);
            if (ev.kind == WatchEvent::Kind::Moved)
                sqlite_changed(ev.root, sqlite_db_of(ev.to), now);
            continue;
        }
        const std::string k = path_key(ev.root, ev.path);
        switch (ev.kind) {
            case WatchEvent::Kind::Modified:
                if (mode == Mode::Append) {
                    (void)queue_.push_sync(ev.root, ev.path, now);
                } else if (writing_.size() < kMaxWriting) {
                    // A writer is at it: its close-write sends the file.
                    writing_.insert(k);
                }
                break;
            case WatchEvent::Kind::Changed:
            case WatchEvent::Kind::Removed:
                writing_.erase(k);
                if (ev.kind == WatchEvent::Kind::Removed) srcs_.erase(k);
                (void)queue_.push_sync(ev.root, ev.path, now);
                break;
            case WatchEvent::Kind::Moved:
                writing_.erase(k);
                writing_.erase(path_key(ev.root, ev.to));
                srcs_.erase(k);
                srcs_.erase(path_key(ev.root, ev.to));
                (void)queue_.push_rename(ev.root, ev.path, ev.to, now);
                break;
            case WatchEvent::Kind::Overflow:
                break;
        }
    }
    if (queue_.overflowed()) {
        queue_.clear();
        queue_.clear_overflow();
        resync_due_ns_ = now;
    }
}

std::string Engine::Worker::sqlite_wal_header(std::uint8_t root, const std::string& db) {
    auto shm = open_beneath(root_fds_[root], db + "-shm", O_RDONLY | O_NOFOLLOW);
    if (!shm) return {};
    std::string hdr(48, '\0');
    if (::pread(shm->get(), hdr.data(), hdr.size(), 0) != static_cast<ssize_t>(hdr.size()))
        return {};
    return hdr;
}

void Engine::Worker::sqlite_changed(std::uint8_t root, const std::string& db, std::uint64_t now) {
    const std::string k = path_key(root, db);
    const std::string hdr = sqlite_wal_header(root, db);
    auto w = sqlite_watch_.try_emplace(k, SqliteWatch{now, 0, 0, false}).first;
    if (w->second.settled) w->second = SqliteWatch{now, 0, 0, false};  // a new write
    if (!hdr.empty()) {
        auto it = sqlite_hdr_.find(k);
        if (it == sqlite_hdr_.end() || it->second != hdr) {
            // Committed already (we were woken after the writer finished). Keep watching for
            // the rest of a burst, but the queued snapshot covers the past.
            (void)queue_.push_sync(root, db, now, true);
            w->second.first_seen_ns = now;
        }
    } else {
        // No wal-index to read (rollback journal, or not a database): snapshot now and once
        // more after the writes settle. A rollback-mode commit in progress keeps the snapshot
        // busy-waiting on its lock until it is done.
        (void)queue_.push_sync(root, db, now, true);
    }
    w->second.next_check_ns = now + kSqliteCheckNs;
    w->second.deadline_ns = now + kSqliteSettleNs;
}

std::size_t Engine::Worker::sqlite_pending() const {
    return static_cast<std::size_t>(
        std::count_if(sqlite_watch_.begin(), sqlite_watch_.end(),
                      [](const auto& kv) { return !kv.second.settled; }));
}

void Engine::Worker::sqlite_timers(std::uint64_t now) {
    for (auto it = sqlite_watch_.begin(); it != sqlite_watch_.end();) {
        auto& w = it->second;
        if (now < w.next_check_ns && (w.settled || now < w.deadline_ns)) {
            ++it;
            continue;
        }
        const auto root = static_cast<std::uint8_t>(it->first[0]);
        const std::string db = it->first.substr(1);
        const std::string hdr = sqlite_wal_header(root, db);
        const auto last = sqlite_hdr_.find(it->first);
        const bool moved = !hdr.empty() && (last == sqlite_hdr_.end() || last->second != hdr);
        if (moved || (!w.settled && now >= w.deadline_ns)) {
            (void)queue_.push_sync(root, db, w.first_seen_ns, true);
            if (moved || hdr.empty()) {
                it = sqlite_watch_.erase(it);
                continue;
            }
            // No commit visible yet: the snapshot covers what is, and the header is watched
            // for the commit that may still come.
            w.settled = true;
            w.deadline_ns = w.first_seen_ns + kSqliteLateCommitNs;
        } else if (w.settled && now >= w.deadline_ns) {
            // Given up: a writer that died mid-commit never moves the header, and the next
            // opener's recovery writes the files again.
            it = sqlite_watch_.erase(it);
            continue;
        }
        w.next_check_ns =
            now + std::clamp((now - w.first_seen_ns) / 10, kSqliteCheckNs, kSqliteLateCheckMaxNs);
        ++it;
    }
}

void Engine::Worker::listen_start() {
    const IpAddr& bind_addr = cfg_.listen.family != 0 ? cfg_.listen : IpAddr{cfg_.peer.family, {}};
    const int fd = ::socket(bind_addr.is_v6() ? AF_INET6 : AF_INET,
                            SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return;
    UniqueFd s(fd);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    std::memset(&ss, 0, sizeof ss);
    socklen_t len = 0;
    if (bind_addr.is_v6()) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(cfg_.port);
        std::memcpy(&s6->sin6_addr, bind_addr.bytes.data(), 16);
        len = sizeof *s6;
    } else {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        s4->sin_family = AF_INET;
        s4->sin_port = htons(cfg_.port);
        std::memcpy(&s4->sin_addr, bind_addr.bytes.data(), 4);
        len = sizeof *s4;
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 4) != 0) {
        // The address may not be configured yet (link coming up): retry.
        log::warn("sync", "listen {}:{}: {}", bind_addr.to_string(), cfg_.port,
                  std::strerror(errno));
        next_listen_try_ns_ = mono_ns() + 1'000'000'000;
        return;
    }
    listen_fd_ = std::move(s);
    set_slot_fd(kListen, listen_fd_.get());
}

void Engine::Worker::accept_conn() {
    for (;;) {
        const int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        UniqueFd s(fd);
        // The handshake is short and bounded; do it inline with socket timeouts.
        timeval tv{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        auto session = handshake_server(s);
        if (!session) {
            // A wrong key or protocol is an operator problem (event); a reset or timeout during
            // the handshake is the network (log only).
            const auto& err = session.error();
            const bool refused =
                err.code == std::errc::permission_denied || err.code == std::errc::invalid_argument;
            log::logf(refused ? log::Level::Error : log::Level::Warn, "sync",
                      "refused connection: {}", err.message());
            if (refused) {
                ++errors_;
                emit(SyncEvent::Kind::PeerRefused, err.message());
            }
            continue;
        }
        adopt(std::move(s), *session);
    }
}

void Engine::Worker::pump() {
    for (int budget = 0; conn_ && budget < 256; ++budget) {
        if (!flush()) return;
        if (!streaming_) return;
        if (outstanding_.size() >= kMaxOutstandingFrames ||
            outstanding_bytes_ >= kMaxOutstandingBytes)
            return;
        if (queue_.empty()) {
            if (job_ && !job_->done_sent) {
                job_->done_sent = true;
                const std::uint64_t seq = next_seq_++;
                send_frame(FrameHeader{.type = FrameType::SyncDone, .seq = seq, .aux = job_->id},
                           "");
                outstanding_.push_back({seq, 0, 0, 0, {}, FrameType::SyncDone, true});
                continue;
            }
            return;
        }
        auto c = queue_.pop();
        prepare(*c);
    }
}

void Engine::Worker::job_skip(const std::string& k, bool failed, std::string_view why) {
    if (!job_ || job_->paths.erase(k) == 0) return;
    ++job_->files_done;
    if (failed) {
        ++job_->failures;
        job_->failure = std::string(why);
    }
}

bool Engine::Worker::unchanged_since(std::uint8_t root, const std::string& path, int fd,
                                     std::uint64_t size, std::int64_t mtime_ns) {
    // inotify queues IN_MODIFY when a write happens, so reading the watcher now sees every write
    // that came before; a write still under way has already moved the mtime.
    if (watcher_) on_watch_events();
    struct stat b {};
    return !writing_.contains(path_key(root, path)) && ::fstat(fd, &b) == 0 &&
           b.st_size == static_cast<off_t>(size) && mtime_ns_of(b) == mtime_ns;
}

Result<SharedFd> Engine::Worker::open_source(std::uint8_t root, const std::string& path, bool keep,
                                             struct stat& st) {
    const std::string k = path_key(root, path);
    if (keep) {
        // A CDR file gets an append per call: keep it open, and check by a stat of the name that
        // it still is the file we hold (a rotation renames another file over it). A symlink on
        // the way leads to another inode, and so to openat2, which refuses it.
        if (auto it = srcs_.find(k); it != srcs_.end()) {
            if (::fstatat(root_fds_[root].get(), path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                it->second.dev == st.st_dev && it->second.ino == st.st_ino)
                return it->second.fd;
            srcs_.erase(it);
        }
    }
    // O_NOATIME: with relatime every read after a write would dirty the inode just to move its
    // atime (an eighth of the engine's CPU at 1 000 CDR lines/s). Needs CAP_FOWNER or ownership.
    constexpr int kFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;
    auto fd = open_beneath(root_fds_[root], path, kFlags | (noatime_ ? O_NOATIME : 0));
    if (!fd && noatime_ && fd.error().code == std::errc::operation_not_permitted) {
        noatime_ = false;
        fd = open_beneath(root_fds_[root], path, kFlags);
    }
    if (!fd) return unexpected(fd.error());
    if (::fstat(fd->get(), &st) != 0) return last_errno(fmt::format("fstat {}", path));
    auto shared = std::make_shared<const UniqueFd>(std::move(*fd));
    if (keep && S_ISREG(st.st_mode)) {
        if (srcs_.size() >= kMaxOpenSources) srcs_.clear();
        srcs_.emplace(k, OpenSource{shared, st.st_dev, st.st_ino});
    }
    return shared;
}

void Engine::Worker::emit_file(std::uint8_t root, const std::string& path, SharedFd fd,
                               std::uint64_t offset, std::uint64_t len, std::int64_t mtime_ns,
                               std::uint32_t mode, FrameType type, std::uint64_t first_seen,
                               std::uint64_t file_size) {
    const std::string k = path_key(root, path);
    const Mode root_mode = cfg_.roots[root].mode;
    // A file being rewritten is not sent now: its close-write event comes when the writer is
    // done. Appends never rewrite what was read, and snapshots are private files.
    const bool check_writer = type == FrameType::File && root_mode == Mode::File;
    // Large files carry their checksum in a trailer and are hashed while they are sent (flush);
    // snapshots keep it in the header, where an unchanged database is recognised before sending.
    const bool trailer =
        type == FrameType::File && root_mode != Mode::Sqlite && len >= kTrailerMinBytes;
    std::uint64_t sum = 0;
    bool in_buffer = false;  // the whole payload came in with the checksum pass's first read
    if (trailer) {
        if (check_writer) {
            if (watcher_) on_watch_events();
            if (writing_.contains(k)) return job_skip(k, false, "");
        }
    } else {
        // The checksum pass reads the bytes through a bounded buffer; the payload itself goes
        // from the page cache to the socket by sendfile. If the file changes in between, the
        // receiver's check fails and the file is sent again: the standby never installs a mix.
        PayloadChecksum h(*csum_key_);
        std::uint64_t done = 0;
        while (done < len) {
            const std::size_t want =
                static_cast<std::size_t>(std::min<std::uint64_t>(len - done, scratch_.size()));
            const ssize_t n =
                ::pread(fd->get(), scratch_.data(), want, static_cast<off_t>(offset + done));
            if (n <= 0) break;  // shrank: the checksum of what is there will not match the padding
            h.update(scratch_.data(), static_cast<std::size_t>(n));
            if (done == 0 && static_cast<std::uint64_t>(n) == len) in_buffer = true;
            done += static_cast<std::uint64_t>(n);
        }
        if (check_writer &&
            (done != len || !unchanged_since(root, path, fd->get(), file_size, mtime_ns)))
            return job_skip(k, false, "");
        sum = h.finish();
        if (root_mode == Mode::Sqlite) {
            auto [it, fresh] = sqlite_sent_sum_.try_emplace(k, sum);
            if (!fresh && it->second == sum) return job_skip(k, false, "");
            it->second = sum;
        }
    }
    const std::uint64_t seq = next_seq_++;
    FrameHeader fh{.type = type,
                   .root = root,
                   .file_mode = mode & 07777,
                   .seq = seq,
                   .offset = offset,
                   .length = len,
                   .mtime_ns = mtime_ns,
                   .checksum = sum,
                   .aux = trailer ? kFileTrailer : 0};
    auto& c = *conn_;
    if (in_buffer && len <= kInlineMaxBytes) {
        // A few bytes (a CDR line): they are in user space for the checksum already, and one
        // send of header and payload costs far less than a send plus a sendfile (measured: the
        // splice path was a quarter of the engine's CPU at 1 000 lines/s).
        send_frame(fh, path, std::string_view(reinterpret_cast<const char*>(scratch_.data()), len));
    } else {
        send_frame(fh, path);
        c.src = std::move(fd);
        c.src_off = offset;
        c.src_left = len;
        c.src_failed = false;
    }
    if (trailer) {
        c.src_sum.emplace(*csum_key_);
        c.hashed_to = offset;
        c.trailer = SyncConn::Trailer{seq, root, path, file_size, mtime_ns, check_writer};
    }
    const bool in_job = job_ && job_->paths.erase(k) > 0;
    outstanding_.push_back({seq, len, first_seen, root, path, type, in_job});
    outstanding_bytes_ += len;
    ++files_sent_;
    if (root_mode == Mode::Append) sent_offset_[k] = file_size;
}

void Engine::Worker::prepare(const Change& c) {
    const std::string k = path_key(c.root, c.path);
    const auto& root = root_fds_[c.root];
    const Mode mode = cfg_.roots[c.root].mode;
    auto send_delete = [&](const std::string& p) {
        const std::uint64_t seq = next_seq_++;
        send_frame(FrameHeader{.type = FrameType::Delete, .root = c.root, .seq = seq}, p);
        const bool in_job = job_ && job_->paths.erase(path_key(c.root, p)) > 0;
        outstanding_.push_back({seq, 0, c.first_seen_ns, c.root, p, FrameType::Delete, in_job});
        sent_offset_.erase(path_key(c.root, p));
    };
    if (c.kind == Change::Kind::Rename) {
        struct stat st {};
        auto from = open_beneath(root, c.path, O_PATH | O_NOFOLLOW);
        auto to = open_beneath(root, c.to, O_PATH | O_NOFOLLOW);
        if (!from && to && ::fstat(to->get(), &st) == 0) {
            const std::uint64_t seq = next_seq_++;
            send_frame(
                FrameHeader{
                    .type = FrameType::Rename, .root = c.root, .seq = seq, .length = c.to.size()},
                c.path, c.to);
            outstanding_.push_back(
                {seq, 0, c.first_seen_ns, c.root, c.to, FrameType::Rename, false});
            if (auto it = sent_offset_.find(k); it != sent_offset_.end()) {
                sent_offset_[path_key(c.root, c.to)] = it->second;
                sent_offset_.erase(it);
            }
            return;
        }
        // Things moved on since: fall back to syncing both names by content.
        (void)queue_.push_sync(c.root, c.path, c.first_seen_ns);
        (void)queue_.push_sync(c.root, c.to, c.first_seen_ns, true);
        return;
    }
    if (mode == Mode::Sqlite) {
        struct stat st {};
        // O_PATH: closing a readable descriptor of the database would drop the SQLite locks this
        // process holds on it (POSIX locks are per process); SQLite opens it for the snapshot.
        auto db = open_beneath(root, c.path, O_PATH | O_NOFOLLOW);
        if (!db) {
            if (db.error().code == std::errc::no_such_file_or_directory) return send_delete(c.path);
            return job_skip(k, true, db.error().message());
        }
        if (::fstat(db->get(), &st) != 0 || !S_ISREG(st.st_mode)) return job_skip(k, false, "");
        std::int64_t mtime = mtime_ns_of(st);
        struct stat wst {};
        if (auto wal = open_beneath(root, c.path + "-wal", O_PATH | O_NOFOLLOW);
            wal && ::fstat(wal->get(), &wst) == 0)
            mtime = std::max(mtime, mtime_ns_of(wst));
        const std::string abs = cfg_.roots[c.root].path + "/" + c.path;
        // Read before the snapshot: a commit that moves the header later is snapshot again.
        if (auto hdr = sqlite_wal_header(c.root, c.path); !hdr.empty()) sqlite_hdr_[k] = hdr;
        auto snap = sqlite_snapshot(abs);
        if (!snap && snap.error().code == std::errc::invalid_argument) {
            // Not a database (a README, a dump): it is sent as it is.
            auto plain = open_beneath(root, c.path, O_RDONLY | O_NOFOLLOW);
            if (!plain) return job_skip(k, true, plain.error().message());
            const auto size = static_cast<std::uint64_t>(st.st_size);
            return emit_file(c.root, c.path, std::make_shared<const UniqueFd>(std::move(*plain)), 0,
                             size, mtime_ns_of(st), st.st_mode, FrameType::File, c.first_seen_ns,
                             size);
        }
        if (!snap) {
            ++errors_;
            log::warn("sync", "snapshot {}: {}", abs, snap.error().message());
            schedule_resync();
            return job_skip(k, true, snap.error().message());
        }
        struct stat sst {};
        ::fstat(snap->get(), &sst);
        const auto size = static_cast<std::uint64_t>(sst.st_size);
        return emit_file(c.root, c.path, std::make_shared<const UniqueFd>(std::move(*snap)), 0,
                         size, mtime, st.st_mode, FrameType::File, c.first_seen_ns, size);
    }
    struct stat st {};
    auto fd = open_source(c.root, c.path, mode == Mode::Append, st);
    if (!fd) {
        const auto& code = fd.error().code;
        if (code == std::errc::no_such_file_or_directory || code == std::errc::not_a_directory)
            return send_delete(c.path);
        // ELOOP/EXDEV: a symlink or a path leaving the root. Never followed, never sent.
        log::warn("sync", "not syncing {}: {}", c.path, fd.error().message());
        return job_skip(k, false, "");
    }
    if (S_ISDIR(st.st_mode)) {
        auto m = scan_root(**fd, mode, false, *csum_key_);
        if (m) {
            for (const auto& [p, e] : *m)
                (void)queue_.push_sync(c.root, c.path + "/" + p, c.first_seen_ns);
        }
        return job_skip(k, false, "");
    }
    if (!S_ISREG(st.st_mode)) return job_skip(k, false, "");
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (mode == Mode::Append && !c.whole) {
        if (auto it = sent_offset_.find(k); it != sent_offset_.end() && size >= it->second) {
            if (size == it->second) return job_skip(k, false, "");
            return emit_file(c.root, c.path, std::move(*fd), it->second, size - it->second,
                             mtime_ns_of(st), st.st_mode, FrameType::Append, c.first_seen_ns, size);
        }
    }
    emit_file(c.root, c.path, std::move(*fd), 0, size, mtime_ns_of(st), st.st_mode, FrameType::File,
              c.first_seen_ns, size);
}

void Engine::Worker::schedule_resync() {
    // Exponential backoff per failed round (1, 2, 4, 8, 10 s): a disk that stays full must not
    // turn into a manifest per second, and one that was cleared is caught up within seconds. The
    // many failures of one round (every refused file) do not count separately.
    if (resync_due_ns_ != 0) return;
    resync_backoff_ns_ =
        std::clamp<std::uint64_t>(resync_backoff_ns_ * 2, kResyncDelayNs, 10 * kResyncDelayNs);
    resync_due_ns_ = mono_ns() + resync_backoff_ns_;
}

void Engine::Worker::start_full_backup(std::string_view why) {
    log::info("sync", "full backup requested reason={}", why);
    if (role_ != Role::Active) return;
    if (!conn_) {
        e_.cells_.fb_last_result.store(static_cast<std::uint8_t>(BackupResult::Failed),
                                       std::memory_order_relaxed);
        e_.cells_.fb_last_time.store(wall_ms(), std::memory_order_relaxed);
        emit(SyncEvent::Kind::BackupFailed, "standby not connected");
        return;
    }
    full_pending_ = true;  // starts once the current job (if any) is over
}

void Engine::Worker::request_manifest(bool full) {
    for (auto& m : peer_manifest_) m.clear();
    awaiting_req_ = next_req_id_++;
    if (full) awaiting_req_ |= 1ULL << 63;  // remember it is a full backup
    send_frame(
        FrameHeader{
            .type = FrameType::ManifestRequest, .seq = awaiting_req_, .aux = full ? 1u : 0u},
        "");
}

void Engine::Worker::on_manifest_end(std::uint64_t req) {
    if (req != 0 && req != awaiting_req_) {
        log::warn("sync", "stale manifest req={} awaiting={}", req, awaiting_req_);
        return;
    }
    awaiting_req_ = 0;
    const bool full = (req >> 63) != 0;
    Job job;
    job.id = req;
    job.full = full;
    job.start_ns = mono_ns();
    for (std::size_t i = 0; i < cfg_.roots.size(); ++i) {
        const auto r = static_cast<std::uint8_t>(i);
        const Mode mode = cfg_.roots[i].mode;
        auto local = scan_root(root_fds_[i], mode, full, *csum_key_);
        if (!local) {
            ++job.failures;
            job.failure = local.error().message();
            continue;
        }
        const auto& peer = peer_manifest_[i];
        if (mode == Mode::Append) {
            for (const auto& [p, e] : peer) sent_offset_[path_key(r, p)] = e.size;
        }
        for (const auto& item : diff_manifest(*local, peer, mode)) {
            const bool whole = item.action == DiffItem::Action::SendWhole;
            if (whole) sent_offset_.erase(path_key(r, item.path));
            (void)queue_.push_sync(r, item.path, job.start_ns, whole);
            job.paths.insert(path_key(r, item.path));
            ++job.files_total;
            job.bytes_total += item.bytes;
        }
        peer_manifest_[i].clear();
    }
    log::info("sync", "{} started files={} bytes={}", full ? "full backup" : "initial sync",
              job.files_total, job.bytes_total);
    job_ = std::move(job);
    streaming_ = true;
    publish(mono_ns(), true);
}

void Engine::Worker::on_ack(const FrameHeader& h) {
    if (outstanding_.empty() || outstanding_.front().seq != h.seq) {
        const std::string why = fmt::format("ack for seq {} out of order (expected {})", h.seq,
                                            outstanding_.empty() ? 0 : outstanding_.front().seq);
        ++errors_;
        emit(SyncEvent::Kind::PeerRefused, why);
        drop_conn(why);
        return;
    }
    Outstanding o = std::move(outstanding_.front());
    outstanding_.pop_front();
    outstanding_bytes_ -= o.bytes;
    if (o.type == FrameType::Ping) --outstanding_pings_;
    const auto status = static_cast<AckStatus>(h.aux);
    if (o.type == FrameType::SyncDone) {
        finish_job();
        return;
    }
    if (o.type == FrameType::Ping) return;
    const std::string k = path_key(o.root, o.path);
    if (o.abandoned) {
        // We dropped it ourselves (the file changed while it was sent); its close-write event
        // brings the new version.
        if (o.in_job && job_) ++job_->files_done;
        return;
    }
    if (status == AckStatus::Ok) {
        if (std::exchange(disk_full_reported_, false)) {
            log::info("sync", "standby has space again path={}", o.path);
            emit(SyncEvent::Kind::Restored, "disk-full");
        }
        if (o.in_job && job_) {
            ++job_->files_done;
            job_->bytes_done += o.bytes;
        }
        return;
    }
    switch (status) {
        case AckStatus::Ok:
            break;
        case AckStatus::NeedFull:
        case AckStatus::ChecksumMismatch:
            sent_offset_.erase(k);
            sqlite_sent_sum_.erase(k);
            (void)queue_.push_sync(o.root, o.path, o.first_seen_ns, true);
            if (o.in_job && job_) job_->paths.insert(k);
            if (status == AckStatus::ChecksumMismatch) {
                log::debug("sync", "checksum mismatch on the standby, resending path={}", o.path);
            }
            break;
        case AckStatus::NoSpace:
        case AckStatus::IoError:
        case AckStatus::Refused: {
            ++errors_;
            sent_offset_.erase(k);
            sqlite_sent_sum_.erase(k);
            const std::string why = fmt::format("standby: {} for {}", to_string(status), o.path);
            if (status == AckStatus::NoSpace) {
                if (!disk_full_reported_) {
                    log::error("sync", "standby disk full path={}", o.path);
                    emit(SyncEvent::Kind::DiskFull, why);
                }
                disk_full_reported_ = true;
            } else {
                log::error("sync", "{}", why);
                emit(status == AckStatus::Refused ? SyncEvent::Kind::PeerRefused
                                                  : SyncEvent::Kind::ApplyFailed,
                     why);
            }
            if (job_) {
                if (o.in_job) ++job_->files_done;
                ++job_->failures;
                job_->failure = why;
            }
            // Retry by manifest once things may have cleared (space freed, file fixed).
            if (status != AckStatus::Refused) schedule_resync();
            break;
        }
    }
}

void Engine::Worker::finish_job() {
    if (!job_) return;
    Job j = std::move(*job_);
    job_.reset();
    const std::uint64_t ms = (mono_ns() - j.start_ns) / 1'000'000;
    const bool ok = j.failures == 0;
    if (ok && !initial_done_) initial_done_ = true;
    // The guide's backup log lists the standby's initial sync (after a boot or a reconnect) as a
    // backup too: it is the same copy of everything that differs, and Full Backup Status shows
    // it "In progress".
    const bool initial = j.initial();
    if (j.full || initial) {
        e_.cells_.fb_last_result.store(
            static_cast<std::uint8_t>(ok ? BackupResult::Success : BackupResult::Failed),
            std::memory_order_relaxed);
        e_.cells_.fb_last_time.store(wall_ms(), std::memory_order_relaxed);
        const char* what = initial ? "initial sync" : "full backup";
        if (ok) {
            log::info("sync", "{} done files={} bytes={} ms={}", what, j.files_total, j.bytes_done,
                      ms);
            emit(SyncEvent::Kind::BackupSuccess,
                 fmt::format("{}: {} files, {} bytes in {} ms", what, j.files_total, j.bytes_done,
                             ms),
                 j.files_total, j.bytes_done, ms);
        } else {
            log::error("sync", "{} failed failures={} last={}", what, j.failures, j.failure);
            emit(SyncEvent::Kind::BackupFailed, fmt::format("{}: {}", what, j.failure),
                 j.files_done, j.bytes_done, ms);
        }
    }
    if (ok && initial) {
        emit(SyncEvent::Kind::InitialSyncDone, "standby caught up", j.files_total, j.bytes_done,
             ms);
    } else if (!j.full && !initial) {
        log::info("sync", "resync {} files={} bytes={} ms={}", ok ? "done" : "failed",
                  j.files_total, j.bytes_done, ms);
    }
    if (!ok) {
        schedule_resync();
    } else {
        resync_backoff_ns_ = 0;
    }
    publish(mono_ns(), true);
}

void Engine::Worker::fail_job(std::string_view why) {
    if (!job_) return;
    const bool initial = job_->initial();
    if (job_->full || initial) {
        e_.cells_.fb_last_result.store(static_cast<std::uint8_t>(BackupResult::Failed),
                                       std::memory_order_relaxed);
        e_.cells_.fb_last_time.store(wall_ms(), std::memory_order_relaxed);
        const char* what = initial ? "initial sync" : "full backup";
        log::error("sync", "{} failed: {}", what, why);
        emit(SyncEvent::Kind::BackupFailed, fmt::format("{}: {}", what, why), job_->files_done,
             job_->bytes_done, (mono_ns() - job_->start_ns) / 1'000'000);
    }
    job_.reset();
}

}  // namespace ha::sync
