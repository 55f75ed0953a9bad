// The sync connection: TCP setup, the keyed handshake, framed output (headers from memory,
// payloads by sendfile, frames queued behind a payload) and the input path into the FrameReader.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "sync/worker.hpp"

namespace ha::sync {

// ---------------------------------------------------------------- connection

std::uint64_t Engine::Worker::roots_digest() const {
    std::string s;
    for (const auto& r : cfg_.roots) s += fmt::format("{}:{}\n", to_string(r.mode), r.path);
    return siphash(cfg_.key, s.data(), s.size());
}

namespace {

socklen_t make_sockaddr(const IpAddr& a, std::uint16_t port, sockaddr_storage& ss) {
    std::memset(&ss, 0, sizeof ss);
    if (a.is_v6()) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        std::memcpy(&s6->sin6_addr, a.bytes.data(), 16);
        return sizeof(sockaddr_in6);
    }
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    std::memcpy(&s4->sin_addr, a.bytes.data(), 4);
    return sizeof(sockaddr_in);
}

Status io_exact(int fd, void* buf, std::size_t n, bool send_side) {
    auto* p = static_cast<std::uint8_t*>(buf);
    while (n > 0) {
        const ssize_t r = send_side ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return last_errno(send_side ? "handshake send" : "handshake recv");
        }
        if (r == 0) return fail("handshake: peer closed", std::errc::connection_reset);
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return {};
}

void set_timeouts(int fd, std::chrono::milliseconds t) {
    timeval tv{};
    tv.tv_sec = t.count() / 1000;
    tv.tv_usec = (t.count() % 1000) * 1000;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void tune_stream(int fd, std::chrono::milliseconds io_timeout) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    // Unacknowledged data older than this fails the socket: a cut link is noticed even while
    // we only send.
    const unsigned ut = static_cast<unsigned>(io_timeout.count());
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
    const int fl = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

}  // namespace

Result<Key> Engine::Worker::handshake_client(const UniqueFd& fd) {
    const Nonce nc = random_nonce();
    const std::uint64_t digest = roots_digest();
    auto hello = encode_client_hello(nc, digest);
    if (auto st = io_exact(fd.get(), hello.data(), hello.size(), true); !st)
        return unexpected(st.error());
    std::array<std::uint8_t, kHelloSize> sh{};
    if (auto st = io_exact(fd.get(), sh.data(), sh.size(), false); !st)
        return unexpected(st.error());
    auto checked = check_server_hello(cfg_.key, sh, nc, digest);
    if (!checked) {
        // Still answer (with a proof that cannot verify) so the active logs "bad MAC" too,
        // instead of a bare reset the operator could take for a network glitch.
        std::array<std::uint8_t, kProofSize> zero{};
        (void)io_exact(fd.get(), zero.data(), zero.size(), true);
        return unexpected(checked.error().wrap("sync handshake"));
    }
    const Nonce ns = *checked;
    auto proof = encode_client_proof(cfg_.key, nc, ns, digest);
    if (auto st = io_exact(fd.get(), proof.data(), proof.size(), true); !st)
        return unexpected(st.error());
    return session_key(cfg_.key, nc, ns);
}

Result<Key> Engine::Worker::handshake_server(const UniqueFd& fd) {
    std::array<std::uint8_t, kHelloSize> ch{};
    if (auto st = io_exact(fd.get(), ch.data(), ch.size(), false); !st)
        return unexpected(st.error());
    HA_TRY_CTX(hello, decode_client_hello(ch), "sync handshake");
    const Nonce ns = random_nonce();
    const std::uint64_t digest = roots_digest();
    // A standby configured with other roots computes another digest; its proof then fails.
    auto sh = encode_server_hello(cfg_.key, hello.nonce, ns, digest);
    if (auto st = io_exact(fd.get(), sh.data(), sh.size(), true); !st)
        return unexpected(st.error());
    std::array<std::uint8_t, kProofSize> proof{};
    if (auto st = io_exact(fd.get(), proof.data(), proof.size(), false); !st)
        return unexpected(st.error());
    if (auto st = check_client_proof(cfg_.key, proof, hello.nonce, ns, digest); !st)
        return unexpected(st.error().wrap("sync handshake"));
    return session_key(cfg_.key, hello.nonce, ns);
}

Result<UniqueFd> Engine::Worker::connect_peer() {
    const int fd = ::socket(cfg_.peer.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return last_errno("socket");
    UniqueFd s(fd);
    set_timeouts(fd, std::chrono::milliseconds(1000));
    sockaddr_storage ss{};
    const socklen_t len = make_sockaddr(cfg_.peer, cfg_.port, ss);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
        return last_errno(fmt::format("connect {}:{}", cfg_.peer.to_string(), cfg_.port));
    return s;
}

void Engine::Worker::adopt(UniqueFd fd, Key session) {
    if (conn_) drop_conn("replaced by a new connection");
    tune_stream(fd.get(), cfg_.io_timeout);
    conn_.emplace();
    conn_->session = session;
    conn_->reader.emplace(session, static_cast<std::uint8_t>(cfg_.roots.size()));
    conn_->last_rx_ns = mono_ns();
    conn_->fd = std::move(fd);
    set_slot_fd(kConnIn, conn_->fd.get());
    set_slot_fd(kConnOut, conn_->fd.get());
    want_write_ = false;
    streaming_ = false;
    next_ping_ns_ = mono_ns();
    for (auto& m : peer_manifest_) m.clear();
    log::info("sync", "connected role={} peer={}", to_string(role_), cfg_.peer.to_string());
    emit(SyncEvent::Kind::Connected, cfg_.peer.to_string());
    if (role_ == Role::Standby) {
        rx_failures_ = 0;
        initial_done_ = false;
        send_manifest(false, 0);
        if (want_full_) {
            send_frame(FrameHeader{.type = FrameType::FullRequest}, "");
            want_full_ = false;
        }
    }
}

void Engine::Worker::drop_conn(std::string_view why) {
    if (!conn_) return;
    log::warn("sync", "disconnected role={} reason={}", to_string(role_), why);
    set_slot_fd(kConnIn, -1);
    set_slot_fd(kConnOut, -1);
    conn_.reset();
    want_write_ = false;
    streaming_ = false;
    initial_done_ = false;
    emit(SyncEvent::Kind::Disconnected, why);
    if (role_ == Role::Active) {
        // Whatever was in flight is sent again (whole) after the next manifest exchange.
        for (const auto& o : outstanding_) {
            if (o.type == FrameType::File || o.type == FrameType::Append ||
                o.type == FrameType::Delete)
                (void)queue_.push_sync(o.root, o.path, o.first_seen_ns, true);
        }
        outstanding_.clear();
        outstanding_bytes_ = 0;
        outstanding_pings_ = 0;
        sent_offset_.clear();
        sqlite_sent_sum_.clear();
        awaiting_req_ = 0;
        if (job_) fail_job(fmt::format("connection lost: {}", why));
    } else {
        if (applier_) {
            // Whole files already received and checked are still installed; their acks, and any
            // other, are dropped with the connection (the next one starts with a manifest).
            applier_->abort();
            submit_open(true);
        }
        acks_.clear();
        trailer_of_.reset();
        ++conn_gen_;
        next_connect_ns_ = mono_ns() + static_cast<std::uint64_t>(backoff_.count()) * 1'000'000;
    }
}

void Engine::Worker::send_frame(const FrameHeader& h, std::string_view path,
                                std::string_view inline_payload) {
    if (!conn_) return;
    auto& c = *conn_;
    auto& buf = c.src_left > 0 || c.pad_left > 0 || c.src_sum ? c.later : c.out;
    encode_frame(c.session, h, path, buf);
    buf.insert(buf.end(), inline_payload.begin(), inline_payload.end());
}

bool Engine::Worker::flush() {
    static const std::array<std::uint8_t, 4096> zeros{};
    if (!conn_) return true;
    auto& c = *conn_;
    auto blocked = [&] {
        want_write_ = true;
        return false;
    };
    auto broken = [&](const char* what) {
        drop_conn(fmt::format("{}: {}", what, std::strerror(errno)));
        return false;
    };
    for (;;) {
        while (c.out_off < c.out.size()) {
            // A header with its payload right behind: one segment, not two.
            const int more = c.src_left > 0 ? MSG_MORE : 0;
            const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off,
                                     MSG_NOSIGNAL | MSG_DONTWAIT | more);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return blocked();
                return broken("send");
            }
            c.out_off += static_cast<std::size_t>(n);
        }
        c.out.clear();
        c.out_off = 0;
        while (c.src_left > 0) {
            std::size_t chunk =
                static_cast<std::size_t>(std::min<std::uint64_t>(c.src_left, 4u << 20));
            if (c.src_sum) {
                if (c.hashed_to <= c.src_off) {
                    // Hash the next chunk just before it goes out (page cache, read twice while
                    // hot); the trailer carries the result.
                    const std::size_t want = static_cast<std::size_t>(
                        std::min<std::uint64_t>(c.src_left, scratch_.size()));
                    const ssize_t r =
                        ::pread(c.src->get(), scratch_.data(), want, static_cast<off_t>(c.src_off));
                    if (r <= 0) {
                        c.src_failed = true;
                        c.pad_left += c.src_left;
                        c.src_left = 0;
                        break;
                    }
                    c.src_sum->update(scratch_.data(), static_cast<std::size_t>(r));
                    c.hashed_to = c.src_off + static_cast<std::uint64_t>(r);
                }
                chunk = static_cast<std::size_t>(c.hashed_to - c.src_off);
            }
            off_t off = static_cast<off_t>(c.src_off);
            const ssize_t n = ::sendfile(c.fd.get(), c.src->get(), &off, chunk);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return blocked();
                if (errno == EPIPE || errno == ECONNRESET || errno == ETIMEDOUT)
                    return broken("sendfile");
                // A read error on the source: finish the frame with zeros; the checksum fails it.
                c.src_failed = true;
                c.pad_left += c.src_left;
                c.src_left = 0;
                break;
            }
            if (n == 0) {
                // The file shrank while we sent it: keep the framing, the checksum rejects the
                // copy.
                c.src_failed = true;
                c.pad_left += c.src_left;
                c.src_left = 0;
                break;
            }
            c.src_off = static_cast<std::uint64_t>(off);
            c.src_left -= static_cast<std::uint64_t>(n);
            bytes_sent_ += static_cast<std::uint64_t>(n);
        }
        while (c.pad_left > 0) {
            const std::size_t len =
                static_cast<std::size_t>(std::min<std::uint64_t>(c.pad_left, zeros.size()));
            const ssize_t n = ::send(c.fd.get(), zeros.data(), len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return blocked();
                return broken("send");
            }
            c.pad_left -= static_cast<std::uint64_t>(n);
        }
        if (c.src_sum) {
            send_trailer();  // into c.out, ahead of anything queued behind the payload
            if (!conn_) return false;
            continue;
        }
        c.src.reset();
        if (c.later.empty()) break;
        c.out.swap(c.later);
        c.later.clear();
        c.out_off = 0;
    }
    want_write_ = false;
    return true;
}

void Engine::Worker::send_trailer() {
    auto& c = *conn_;
    const auto& t = c.trailer;
    const bool keep =
        !c.src_failed &&
        (!t.check_writer || unchanged_since(t.root, t.path, c.src->get(), t.size, t.mtime_ns));
    const std::uint64_t sum = c.src_sum->finish();
    c.src_sum.reset();
    c.src.reset();
    if (!keep && t.check_writer) {
        for (auto it = outstanding_.rbegin(); it != outstanding_.rend(); ++it) {
            if (it->seq == t.seq) {
                it->abandoned = true;
                break;
            }
        }
    }
    encode_frame(c.session,
                 FrameHeader{.type = FrameType::Checksum,
                             .seq = t.seq,
                             .checksum = sum,
                             .aux = keep ? 0 : kChecksumAbandon},
                 "", c.out);
}

void Engine::Worker::read_conn() {
    // Bounded per call, so acks, pings and timers keep moving while a full sync streams in.
    constexpr std::size_t kReadBudget = 8u << 20;
    std::size_t got = 0;
    while (conn_ && got < kReadBudget) {
        const ssize_t n = ::recv(conn_->fd.get(), scratch_.data(), scratch_.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            drop_conn(fmt::format("recv: {}", std::strerror(errno)));
            return;
        }
        if (n == 0) {
            drop_conn("peer closed the connection");
            return;
        }
        got += static_cast<std::size_t>(n);
        conn_->last_rx_ns = mono_ns();
        auto st =
            conn_->reader->feed(std::span(scratch_.data(), static_cast<std::size_t>(n)), *this);
        if (!st) {
            ++errors_;
            const std::string why = fmt::format("bad frame: {}", st.error().message());
            log::error("sync", "closing connection: {}", why);
            emit(SyncEvent::Kind::PeerRefused, why);
            drop_conn(why);
            return;
        }
        // A short read drained the socket; the re-armed poll reports anything that comes next.
        if (static_cast<std::size_t>(n) < scratch_.size()) break;
    }
    if (got >= kReadBudget) slots_[kConnIn].ready = true;  // more may be waiting: come back
    if (role_ == Role::Standby) {
        submit_open(false);
        send_ready_acks();
    }
}

}  // namespace ha::sync
