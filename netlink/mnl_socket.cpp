#include "netlink/mnl_socket.hpp"

#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <vector>

#include <fmt/format.h>

namespace ha::nl {

void MnlSocket::Closer::operator()(mnl_socket* s) const {
    mnl_socket_close(s);
}

Result<MnlSocket> MnlSocket::open(std::uint32_t groups, int bus) {
    mnl_socket* s = mnl_socket_open2(bus, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (s == nullptr) return last_errno(fmt::format("mnl_socket_open2 bus={}", bus));
    MnlSocket sock(s);
    // Extended ACKs make the kernel's reason for a refused request visible in strace/ss; harmless
    // when unsupported.
    int one = 1;
    (void)mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &one, sizeof one);
    if (mnl_socket_bind(s, groups, MNL_SOCKET_AUTOPID) < 0)
        return last_errno(fmt::format("mnl_socket_bind groups={:#x}", groups));
    // Start from a clock-derived value so replies meant for a previous socket with the same port
    // id can never match.
    sock.seq_ = static_cast<std::uint32_t>(time(nullptr));
    return sock;
}

int MnlSocket::fd() const {
    return mnl_socket_get_fd(sock_.get());
}
std::uint32_t MnlSocket::portid() const {
    return mnl_socket_get_portid(sock_.get());
}

std::uint32_t MnlSocket::next_seq() {
    if (++seq_ == 0) ++seq_;
    return seq_;
}

Status MnlSocket::wait_readable() {
    pollfd p{fd(), POLLIN, 0};
    for (;;) {
        const int n = ::poll(&p, 1, static_cast<int>(kReplyTimeout.count()));
        if (n > 0) return {};
        if (n == 0) return fail("netlink reply timed out", std::errc::timed_out);
        if (errno != EINTR) return last_errno("poll netlink");
    }
}

Result<std::size_t> MnlSocket::recv_nonblocking(std::span<std::uint8_t> buf) {
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(sock_.get(), buf.data(), buf.size());
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::size_t{0};
        return last_errno("recv netlink");
    }
}

Status MnlSocket::request_ack(std::span<const std::uint8_t> msg, std::uint32_t seq) {
    if (mnl_socket_sendto(sock_.get(), msg.data(), msg.size()) < 0)
        return last_errno("send netlink request");
    std::vector<std::uint8_t> buf(kRecvBufSize);
    for (;;) {
        auto got = recv_nonblocking(buf);
        if (!got) return unexpected(got.error());
        if (*got == 0) {
            if (auto w = wait_readable(); !w) return w;
            continue;
        }
        int len = static_cast<int>(*got);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid()) continue;
            if (nlh->nlmsg_type != NLMSG_ERROR) continue;
            if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr)))
                return fail("truncated netlink ACK", std::errc::protocol_error);
            const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            if (err->error == 0) return {};
            return errno_error(err->error, "netlink request refused");
        }
    }
}

Status MnlSocket::dump(std::span<const std::uint8_t> msg, std::uint32_t seq,
                       const std::function<void(const nlmsghdr*)>& on_msg) {
    if (mnl_socket_sendto(sock_.get(), msg.data(), msg.size()) < 0)
        return last_errno("send netlink dump");
    std::vector<std::uint8_t> buf(kRecvBufSize);
    bool interrupted = false;
    for (;;) {
        auto got = recv_nonblocking(buf);
        if (!got) return unexpected(got.error());
        if (*got == 0) {
            if (auto w = wait_readable(); !w) return w;
            continue;
        }
        int len = static_cast<int>(*got);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid()) {
                continue;  // a notification interleaved with the dump: not ours to consume here
            }
            if ((nlh->nlmsg_flags & NLM_F_DUMP_INTR) != 0) interrupted = true;
            if (nlh->nlmsg_type == NLMSG_DONE) {
                if (interrupted)
                    return fail("netlink dump interrupted",
                                std::errc::resource_unavailable_try_again);
                return {};
            }
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr)) || err->error == 0)
                    return fail("unexpected netlink ACK in dump", std::errc::protocol_error);
                return errno_error(err->error, "netlink dump refused");
            }
            on_msg(nlh);
        }
    }
}

}  // namespace ha::nl
