// Engine API, the worker's io_uring loop, the connection and the standby's receive path.
// The active's send path is in engine_active.cpp.
#include "sync/engine.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "common/atomic_file.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "sync/schedule.hpp"
#include "sync/thread.hpp"
#include "sync/worker.hpp"

namespace ha::sync {

std::string_view to_string(Role r) {
    switch (r) {
        case Role::Off:
            return "off";
        case Role::Active:
            return "active";
        case Role::Standby:
            return "standby";
    }
    return "?";
}

std::string_view to_string(SyncEvent::Kind k) {
    using K = SyncEvent::Kind;
    switch (k) {
        case K::Connected:
            return "connected";
        case K::Disconnected:
            return "disconnected";
        case K::InitialSyncDone:
            return "initial-sync-done";
        case K::BackupSuccess:
            return "backup-success";
        case K::BackupFailed:
            return "backup-failed";
        case K::DiskFull:
            return "disk-full";
        case K::PeerRefused:
            return "peer-refused";
        case K::ChecksumMismatch:
            return "checksum-mismatch";
        case K::ApplyFailed:
            return "apply-failed";
        case K::Quarantined:
            return "quarantined";
        case K::Restored:
            return "restored";
    }
    return "?";
}

// ---------------------------------------------------------------- Engine API

Engine::Engine(SyncConfig config) : config_(std::move(config)) {}

Result<std::unique_ptr<Engine>> Engine::create(SyncConfig config) {
    if (config.roots.size() > kMaxRoots)
        return fail(fmt::format("sync: {} roots, at most {}", config.roots.size(), kMaxRoots));
    for (const auto& r : config.roots) {
        if (r.path.empty() || r.path.front() != '/' || r.path.find("/../") != std::string::npos)
            return fail(fmt::format("sync root '{}': must be an absolute path", r.path));
    }
    if (config.peer.family != 4 && config.peer.family != 6)
        return fail("sync: peer address not set");
    if (config.port == 0) return fail("sync: port 0");
    if (config.state_dir.empty() || config.state_dir.front() != '/')
        return fail(fmt::format("sync: state_dir '{}' must be absolute", config.state_dir));
    std::unique_ptr<Engine> e(new Engine(std::move(config)));
    const int cfd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cfd < 0 || efd < 0) return last_errno("eventfd");
    e->cmd_fd_ = UniqueFd(cfd);
    e->event_fd_ = UniqueFd(efd);
    e->worker_ = std::make_unique<Worker>(*e);
    if (auto st = e->worker_->init(); !st) return unexpected(st.error());
    // 1 MiB: the largest frames on it are the watcher's 64 KiB read buffer and SQLite's.
    auto t = SmallThread::start(
        "ha-sync",
        [w = e->worker_.get()] {
            // sendfile() to a reset socket raises SIGPIPE in this thread; blocked, it returns
            // EPIPE.
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &set, nullptr);
            w->run();
        },
        std::size_t{1} << 20);
    if (!t) return unexpected(t.error());
    e->thread_ = std::move(*t);
    return e;
}

Engine::~Engine() {
    if (thread_) {
        push_command({Command::Kind::Stop, Role::Off, 0});
        thread_.reset();  // joins
    }
}

void Engine::push_command(const Command& c) {
    // The agent sends a handful of commands per role change; a full queue is a bug upstream.
    HA_ASSERT(commands_.push(c));
    const std::uint64_t one = 1;
    (void)!::write(cmd_fd_.get(), &one, sizeof one);
}

void Engine::set_role(Role role) {
    push_command({Command::Kind::SetRole, role, 0});
}
void Engine::request_full_sync() {
    push_command({Command::Kind::FullSync, Role::Off, 0});
}
void Engine::quarantine(std::uint64_t term) {
    push_command({Command::Kind::Quarantine, Role::Off, term});
}

SyncStatus Engine::status() const {
    const auto r = std::memory_order_relaxed;
    SyncStatus s;
    s.connected = cells_.connected.load(r);
    s.role = static_cast<Role>(cells_.role.load(r));
    s.as_of_ns = cells_.as_of_ns.load(std::memory_order_acquire);
    s.lag_bytes = cells_.lag_bytes.load(r);
    s.unacked_changes = cells_.unacked.load(r);
    s.queued_changes = cells_.queued.load(r);
    s.oldest_unacked_ns = cells_.oldest_ns.load(r);
    s.bytes_sent = cells_.bytes_sent.load(r);
    s.files_sent = cells_.files_sent.load(r);
    s.bytes_applied = cells_.bytes_applied.load(r);
    s.files_applied = cells_.files_applied.load(r);
    s.initial_done = cells_.initial_done.load(r);
    s.errors = cells_.errors.load(r);
    auto& fb = s.full_backup;
    fb.in_progress = cells_.fb_in_progress.load(r);
    fb.files_done = cells_.fb_files_done.load(r);
    fb.files_total = cells_.fb_files_total.load(r);
    fb.bytes_done = cells_.fb_bytes_done.load(r);
    fb.bytes_total = cells_.fb_bytes_total.load(r);
    fb.rate_Bps = cells_.fb_rate.load(r);
    fb.eta_s = cells_.fb_eta.load(r);
    fb.last_result = static_cast<BackupResult>(cells_.fb_last_result.load(r));
    fb.last_time_ms = cells_.fb_last_time.load(r);
    return s;
}

// ---------------------------------------------------------------- worker plumbing

Engine::Worker::Worker(Engine& engine) : e_(engine), cfg_(engine.config_) {}

Engine::Worker::~Worker() {
    if (ring_ok_) io_uring_queue_exit(&ring_);
}

Status Engine::Worker::init() {
    if (const int rc = io_uring_queue_init(64, &ring_, 0); rc < 0)
        return errno_error(rc, "io_uring_queue_init");
    ring_ok_ = true;
    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
    const bool poll_ok = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_POLL_ADD) &&
                         io_uring_opcode_supported(probe, IORING_OP_POLL_REMOVE);
    if (probe != nullptr) io_uring_free_probe(probe);
    if (!poll_ok)
        return fail("io_uring: IORING_OP_POLL_ADD/POLL_REMOVE not supported",
                    std::errc::not_supported);
    for (const auto& r : cfg_.roots) {
        HA_TRY_CTX(fd, open_root(r.path, true), "sync");
        root_fds_.push_back(std::move(fd));
    }
    csum_key_ = std::make_shared<const ChecksumKey>(cfg_.key);
    peer_manifest_.resize(cfg_.roots.size());
    scratch_.resize(std::size_t{256} << 10);
    return {};
}

void Engine::Worker::set_slot_fd(Slot s, int fd) {
    auto& st = slots_[s];
    if (st.armed != nullptr) {
        // The kernel holds a file reference while a poll is armed: cancel it so a closed socket
        // really goes away. The op is freed when its (cancelled) completion arrives.
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) {
            io_uring_submit(&ring_);
            sqe = io_uring_get_sqe(&ring_);
        }
        HA_ASSERT(sqe != nullptr);
        io_uring_prep_poll_remove(sqe, reinterpret_cast<__u64>(st.armed));
        io_uring_sqe_set_data(sqe, nullptr);
        io_uring_submit(&ring_);
        st.armed = nullptr;
    }
    ++st.gen;
    st.fd = fd;
    st.ready = false;
}

void Engine::Worker::arm(Slot s, unsigned mask) {
    auto& st = slots_[s];
    if (st.fd < 0 || st.armed != nullptr || st.ready) return;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    HA_ASSERT(sqe != nullptr);
    auto* op = new PollOp{s, st.gen};
    io_uring_prep_poll_add(sqe, st.fd, mask);
    io_uring_sqe_set_data(sqe, op);
    st.armed = op;
}

void Engine::Worker::wait(std::chrono::nanoseconds timeout) {
    __kernel_timespec ts{};
    ts.tv_sec = timeout.count() / 1'000'000'000;
    ts.tv_nsec = timeout.count() % 1'000'000'000;
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        log::warn("sync", "io_uring wait err={}", std::strerror(-rc));
    }
    unsigned head = 0;
    unsigned n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        ++n;
        auto* op = static_cast<PollOp*>(io_uring_cqe_get_data(cqe));
        if (op == nullptr) continue;
        auto& st = slots_[op->slot];
        if (op->gen == st.gen) {
            st.armed = nullptr;
            st.ready = true;  // readiness, an error or a hangup: the handler finds out which
        }
        delete op;
    }
    io_uring_cq_advance(&ring_, n);
}

void Engine::Worker::emit(SyncEvent::Kind k, std::string_view detail, std::uint64_t files,
                          std::uint64_t bytes, std::uint64_t duration_ms) {
    SyncEvent ev;
    ev.kind = k;
    ev.wall_ms = wall_ms();
    ev.files = files;
    ev.bytes = bytes;
    ev.duration_ms = duration_ms;
    const std::size_t n = std::min(detail.size(), ev.detail.size() - 1);
    std::memcpy(ev.detail.data(), detail.data(), n);
    if (!e_.events_.push(ev)) {
        e_.cells_.dropped_events.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    const std::uint64_t one = 1;
    (void)!::write(e_.event_fd_.get(), &one, sizeof one);
}

void Engine::Worker::run() {
    set_slot_fd(kCmd, e_.cmd_fd_.get());
    while (!stopping_) {
        arm(kCmd, POLLIN);
        if (watcher_) arm(kWatch, POLLIN);
        if (listen_fd_) arm(kListen, POLLIN);
        if (conn_) {
            arm(kConnIn, POLLIN);
            if (want_write_) arm(kConnOut, POLLOUT);
        }
        if (committer_) arm(kCommit, POLLIN);
        std::uint64_t wait_ns = slots_[kConnIn].ready ? 0 : 50'000'000;
        if (append_due_ns_ != 0) {
            const std::uint64_t t = mono_ns();
            wait_ns = std::min(wait_ns, append_due_ns_ > t ? append_due_ns_ - t : 0);
        }
        if (!sqlite_watch_.empty()) {
            const std::uint64_t t = mono_ns();
            for (const auto& [k, w] : sqlite_watch_) {
                const std::uint64_t due =
                    w.settled ? w.next_check_ns : std::min(w.next_check_ns, w.deadline_ns);
                wait_ns = std::min(wait_ns, due > t ? due - t : 0);
            }
        }
        wait(std::chrono::nanoseconds(wait_ns));
        const std::uint64_t now = mono_ns();
        if (std::exchange(slots_[kCmd].ready, false)) handle_commands();
        if (stopping_) break;
        if (std::exchange(slots_[kWatch].ready, false)) on_watch_events();
        if (std::exchange(slots_[kListen].ready, false)) accept_conn();
        if (std::exchange(slots_[kCommit].ready, false) && committer_) on_commit_done();
        if (std::exchange(slots_[kConnIn].ready, false)) read_conn();
        slots_[kConnOut].ready = false;
        timers(now);
        if (conn_) {
            if (role_ == Role::Active) {
                pump();
            } else {
                if (append_due_ns_ != 0 && mono_ns() >= append_due_ns_) {
                    submit_open(false);
                    send_ready_acks();
                }
                flush();
            }
        }
        publish(now, false);
    }
    set_slot_fd(kCmd, -1);
    conn_.reset();
    flush_commits();
    set_slot_fd(kCommit, -1);
    set_slot_fd(kConnIn, -1);
    set_slot_fd(kConnOut, -1);
    set_slot_fd(kWatch, -1);
    set_slot_fd(kListen, -1);
    // Wait for the cancellations so no PollOp leaks and no socket stays referenced.
    for (int i = 0; i < 10; ++i) wait(std::chrono::milliseconds(1));
}

void Engine::Worker::handle_commands() {
    std::uint64_t v = 0;
    (void)!::read(e_.cmd_fd_.get(), &v, sizeof v);
    Command c;
    while (e_.commands_.pop(c)) {
        switch (c.kind) {
            case Command::Kind::Stop:
                stopping_ = true;
                return;
            case Command::Kind::SetRole:
                apply_role(c.role);
                break;
            case Command::Kind::Quarantine:
                do_quarantine(c.term);
                break;
            case Command::Kind::FullSync:
                if (role_ == Role::Active) {
                    start_full_backup("on demand");
                } else if (role_ == Role::Standby) {
                    want_full_ = true;
                    if (conn_) {
                        send_frame(FrameHeader{.type = FrameType::FullRequest}, "");
                        want_full_ = false;
                    }
                }
                break;
        }
    }
}

void Engine::Worker::apply_role(Role r) {
    if (r == role_) return;
    log::info("sync", "role from={} to={}", to_string(role_), to_string(r));
    if (conn_) drop_conn("role change");
    watcher_.reset();
    set_slot_fd(kWatch, -1);
    set_slot_fd(kListen, -1);
    listen_fd_.reset();
    flush_commits();
    set_slot_fd(kCommit, -1);
    committer_.reset();
    installing_.clear();
    applier_.reset();
    queue_.clear();
    writing_.clear();
    sqlite_watch_.clear();
    sqlite_hdr_.clear();
    sqlite_sent_sum_.clear();
    srcs_.clear();
    if (job_) fail_job("role change");
    role_ = r;
    e_.cells_.role.store(static_cast<std::uint8_t>(r), std::memory_order_relaxed);
    if (r == Role::Active) {
        auto w = Watcher::create(cfg_.roots);
        if (!w) {
            ++errors_;
            log::error("sync", "watcher: {}", w.error().message());
            emit(SyncEvent::Kind::ApplyFailed, w.error().message());
        } else {
            watcher_.emplace(std::move(*w));
            set_slot_fd(kWatch, watcher_->fd().get());
        }
        next_listen_try_ns_ = 0;
        listen_start();
        // Next daily full backup.
        next_backup_wall_s_ = 0;
    } else if (r == Role::Standby) {
        auto a = Applier::create(cfg_.roots, csum_key_);
        auto c = Committer::create();
        if (!a || !c) {
            const std::string why = !a ? a.error().message() : c.error().message();
            ++errors_;
            log::error("sync", "applier: {}", why);
            emit(SyncEvent::Kind::ApplyFailed, why);
        } else {
            applier_.emplace(std::move(*a));
            committer_ = std::move(*c);
            set_slot_fd(kCommit, committer_->done_fd().get());
        }
        next_connect_ns_ = 0;
        backoff_ = std::chrono::milliseconds(0);
    }
}

void Engine::Worker::do_quarantine(std::uint64_t term) {
    if (conn_) drop_conn("quarantine");
    // Nothing may still be renamed into the roots while their content moves away, and no replica
    // may stay open on a moved database.
    if (committer_) {
        for (std::size_t i = 0; i < cfg_.roots.size(); ++i)
            open_job().close_sqlite.emplace_back(static_cast<std::uint8_t>(i), "");
    }
    flush_commits();
    if (applier_) applier_->forget_caches();
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
    const std::string base = fmt::format("{}/quarantine/{}-{}", cfg_.state_dir, term, stamp);
    std::uint64_t moved = 0;
    std::string failure;
    for (std::size_t i = 0; i < cfg_.roots.size(); ++i) {
        const std::string dest = fmt::format("{}/{}", base, i);
        if (auto st = make_dirs(dest, 0700); !st) {
            failure = st.error().message();
            continue;
        }
        auto dfd = open_root(dest, false);
        auto rfd = open_root(cfg_.roots[i].path, true);
        if (!dfd || !rfd) {
            failure = !dfd ? dfd.error().message() : rfd.error().message();
            continue;
        }
        DIR* d = ::fdopendir(::dup(rfd->get()));
        if (d == nullptr) continue;
        // A dup shares the directory offset with the original fd: start from the top.
        ::rewinddir(d);
        std::vector<std::string> names;
        while (dirent* ent = ::readdir(d)) {
            const std::string_view n = ent->d_name;
            if (n != "." && n != "..") names.emplace_back(n);
        }
        ::closedir(d);
        for (const auto& n : names) {
            if (auto st = move_tree(*rfd, n, *dfd); !st) {
                failure = st.error()
                              .wrap(fmt::format("quarantine {} to {}", cfg_.roots[i].path, dest))
                              .message();
            } else {
                ++moved;
            }
        }
        ::fsync(rfd->get());
        ::fsync(dfd->get());
    }
    if (failure.empty()) {
        log::warn("sync", "quarantined term={} dir={} entries={}", term, base, moved);
        emit(SyncEvent::Kind::Quarantined, base, moved);
    } else {
        ++errors_;
        log::error("sync", "quarantine term={} failed: {}", term, failure);
        emit(SyncEvent::Kind::ApplyFailed, "quarantine: " + failure, moved);
    }
    initial_done_ = false;
}

void Engine::Worker::publish(std::uint64_t now, bool full) {
    auto& c = e_.cells_;
    const auto r = std::memory_order_relaxed;
    const bool slow = full || now - last_publish_ns_ > 50'000'000;
    c.connected.store(conn_.has_value() && (role_ != Role::Active || streaming_), r);
    c.lag_bytes.store(outstanding_bytes_, r);
    c.unacked.store(outstanding_.size() - outstanding_pings_, r);
    // A database written to whose commit is not snapshot yet is a queued change too, and so are
    // watcher events not read yet: "drained" must not be claimed while a change that was made
    // before this moment is still in the inotify queue (only looked at when nothing else is
    // pending, to keep the syscall off the busy path).
    std::size_t queued = queue_.size() + sqlite_pending();
    if (queued == 0 && outstanding_.size() == outstanding_pings_ && watcher_) {
        int unread = 0;
        if (::ioctl(watcher_->fd().get(), FIONREAD, &unread) == 0 && unread > 0) queued = 1;
    }
    c.queued.store(queued, r);
    c.bytes_sent.store(bytes_sent_, r);
    c.files_sent.store(files_sent_, r);
    c.bytes_applied.store(bytes_applied_, r);
    c.files_applied.store(files_applied_, r);
    c.errors.store(errors_, r);
    c.initial_done.store(initial_done_, r);
    c.as_of_ns.store(mono_ns(), std::memory_order_release);  // after the cells it vouches for
    if (!slow) return;
    last_publish_ns_ = now;
    std::uint64_t oldest = queue_.oldest_ns();
    for (const auto& [k, w] : sqlite_watch_)
        if (!w.settled) oldest = oldest == 0 ? w.first_seen_ns : std::min(oldest, w.first_seen_ns);
    if (!outstanding_.empty()) {
        const auto o = outstanding_.front().first_seen_ns;
        oldest = oldest == 0 ? o : std::min(oldest, o);
    }
    c.oldest_ns.store(oldest == 0 || oldest > now ? 0 : now - oldest, r);
    c.fb_in_progress.store(job_.has_value(), r);
    if (job_) {
        c.fb_files_done.store(job_->files_done, r);
        c.fb_files_total.store(job_->files_total, r);
        c.fb_bytes_done.store(job_->bytes_done, r);
        c.fb_bytes_total.store(job_->bytes_total, r);
        const double secs = static_cast<double>(now - job_->start_ns) / 1e9;
        const auto rate =
            secs > 0.05 ? static_cast<std::uint64_t>(static_cast<double>(job_->bytes_done) / secs)
                        : 0;
        c.fb_rate.store(rate, r);
        const auto left =
            job_->bytes_total > job_->bytes_done ? job_->bytes_total - job_->bytes_done : 0;
        c.fb_eta.store(rate > 0 ? left / rate : 0, r);
    }
}

void Engine::Worker::timers(std::uint64_t now) {
    const auto timeout_ns = static_cast<std::uint64_t>(cfg_.io_timeout.count()) * 1'000'000;
    if (conn_ && now > conn_->last_rx_ns + timeout_ns) {
        drop_conn(fmt::format("nothing from peer for {} ms", cfg_.io_timeout.count()));
    }
    if (role_ == Role::Standby && !conn_ && now >= next_connect_ns_) {
        auto fd = connect_peer();
        Result<Key> session = fd ? handshake_client(*fd) : Result<Key>(unexpected(fd.error()));
        if (fd && session) {
            backoff_ = std::chrono::milliseconds(0);
            adopt(std::move(*fd), *session);
        } else {
            const auto& err = fd ? session.error() : fd.error();
            if (err.code == std::errc::permission_denied) {
                ++errors_;
                emit(SyncEvent::Kind::PeerRefused, err.message());
            }
            log::debug("sync", "connect failed: {}", err.message());
            backoff_ = std::clamp(backoff_ * 2, cfg_.reconnect_min, cfg_.reconnect_max);
            next_connect_ns_ = mono_ns() + static_cast<std::uint64_t>(backoff_.count()) * 1'000'000;
        }
    }
    if (role_ != Role::Active) return;
    sqlite_timers(now);
    if (!listen_fd_ && now >= next_listen_try_ns_) listen_start();
    if (conn_ && streaming_ && now >= next_ping_ns_) {
        next_ping_ns_ = now + timeout_ns / 4;
        const std::uint64_t seq = next_seq_++;
        send_frame(FrameHeader{.type = FrameType::Ping, .seq = seq}, "");
        outstanding_.push_back({seq, 0, 0, 0, {}, FrameType::Ping, false});
        ++outstanding_pings_;
    }
    if (conn_ && streaming_ && resync_due_ns_ != 0 && now >= resync_due_ns_ && !job_ &&
        awaiting_req_ == 0) {
        resync_due_ns_ = 0;
        request_manifest(false);
    }
    if (full_pending_ && conn_ && streaming_ && !job_ && awaiting_req_ == 0) {
        full_pending_ = false;
        request_manifest(true);
    }
    if (cfg_.full_backup_minute >= 0) {
        const std::int64_t wall = std::time(nullptr);
        if (next_backup_wall_s_ == 0) {
            next_backup_wall_s_ = next_daily_run(wall, cfg_.full_backup_minute);
        } else if (wall >= next_backup_wall_s_) {
            next_backup_wall_s_ = 0;
            start_full_backup("daily schedule");
        }
    }
}

}  // namespace ha::sync
