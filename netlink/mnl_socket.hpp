// MnlSocket: RAII owner of a libmnl netlink socket (NETLINK_ROUTE unless told otherwise;
// non-blocking, close-on-exec), with the two exchanges every adapter here needs: request-and-ACK
// and a complete dump.
// Single-threaded: the thread that created it uses it.
#pragma once

#include <linux/netlink.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "common/result.hpp"

struct mnl_socket;

namespace ha::nl {

// Receive buffer size: dumps are chunked by the kernel into skbs of up to 32 KiB.
inline constexpr std::size_t kRecvBufSize = 32768;
// Upper bound on waiting for an ACK or a dump part. rtnetlink handles requests in the sender's
// context, so the reply is normally queued before send() returns; this only bounds a broken kernel.
inline constexpr std::chrono::milliseconds kReplyTimeout{1000};

class MnlSocket {
  public:
    // groups: RTMGRP_* bit mask to join (0 = none); bus: NETLINK_ROUTE or NETLINK_GENERIC.
    static Result<MnlSocket> open(std::uint32_t groups, int bus = NETLINK_ROUTE);

    [[nodiscard]] int fd() const;
    [[nodiscard]] std::uint32_t portid() const;
    // Next sequence number (never 0: notifications caused by other processes may carry 0).
    std::uint32_t next_seq();

    // Sends msg (built with seq) and waits for its NLMSG_ERROR. Returns the kernel's errno as an
    // error, so callers decide about EEXIST/EADDRNOTAVAIL. Messages with other sequence numbers
    // (multicast notifications) are dropped: do not use on a socket that joined groups.
    Status request_ack(std::span<const std::uint8_t> msg, std::uint32_t seq);
    // Sends a dump request and calls on_msg for every message until NLMSG_DONE.
    // NLM_F_DUMP_INTR on any part means the kernel's tables changed mid-dump: returns EAGAIN.
    Status dump(std::span<const std::uint8_t> msg, std::uint32_t seq,
                const std::function<void(const nlmsghdr*)>& on_msg);
    // One non-blocking receive. Returns the byte count, 0 when nothing is queued, or the error
    // (ENOBUFS means the kernel dropped notifications: the caller must resync).
    Result<std::size_t> recv_nonblocking(std::span<std::uint8_t> buf);

  private:
    struct Closer {
        void operator()(mnl_socket* s) const;
    };
    explicit MnlSocket(mnl_socket* s) : sock_(s) {}
    Status wait_readable();

    std::unique_ptr<mnl_socket, Closer> sock_;
    std::uint32_t seq_ = 0;
};

}  // namespace ha::nl
