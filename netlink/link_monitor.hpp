// LinkMonitor: follows link carrier/operstate and IPv4/IPv6 address changes through rtnetlink
// multicast (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR), so the agent learns of a
// carrier loss or of someone removing the cluster IP behind its back.
//
// Loop thread only. create() subscribes first and then dumps links and addresses on a second
// socket, so no change between the two is lost (a change seen both in the dump and as a
// notification is reported once or not at all, never inverted). Events are reported only on a
// change against the tracked state: flag-only address updates (IPv6 tentative -> valid) and
// repeated notifications do not produce events.
//
// Two ways to drive it:
//  - poll fd() for POLLIN and call on_readable(cb), which reads until EAGAIN;
//  - or receive on fd() yourself (io_uring multishot recv) and pass each datagram to feed(),
//    calling resync() when the receive fails with -ENOBUFS.
// ENOBUFS means the kernel dropped notifications: we drain the queue, dump again and report the
// difference as events, so a removal lost in the overrun is still reported. resyncs() counts them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <variant>
#include <vector>

#include "common/net_types.hpp"
#include "common/result.hpp"
#include "netlink/mnl_socket.hpp"
#include "netlink/rtnl_msg.hpp"

namespace ha::nl {

// A link appeared, vanished (link.removed) or changed admin state, carrier, operstate or name.
struct LinkEvent {
    LinkInfo link;
};
// An address appeared or vanished (addr.removed).
struct AddrEvent {
    AddrInfo addr;
};
using MonitorEvent = std::variant<LinkEvent, AddrEvent>;
using MonitorCallback = std::function<void(const MonitorEvent&)>;

class LinkMonitor {
  public:
    static Result<LinkMonitor> create();

    // Borrowed: owned by the monitor; poll it, never close it.
    [[nodiscard]] int fd() const { return sock_.fd(); }

    // Reads every pending notification and reports changes. Errors other than ENOBUFS (handled
    // by resync) are returned; the monitor stays usable.
    Status on_readable(const MonitorCallback& cb);
    // Processes one datagram received from fd().
    void feed(std::span<const std::uint8_t> datagram, const MonitorCallback& cb);
    // Drains fd(), dumps the kernel's state and reports the differences.
    Status resync(const MonitorCallback& cb);

    [[nodiscard]] const LinkInfo* link(int ifindex) const;
    [[nodiscard]] const std::map<int, LinkInfo>& links() const { return links_; }
    [[nodiscard]] bool has_address(int ifindex, const IpPrefix& prefix) const;
    [[nodiscard]] const std::vector<AddrInfo>& addresses() const { return addrs_; }
    [[nodiscard]] std::uint64_t resyncs() const { return resyncs_; }

  private:
    LinkMonitor(MnlSocket sock, MnlSocket dump_sock)
        : sock_(std::move(sock)), dump_sock_(std::move(dump_sock)) {}
    struct Snapshot {
        std::map<int, LinkInfo> links;
        std::vector<AddrInfo> addrs;
    };
    Result<Snapshot> take_snapshot();
    void apply_link(const LinkInfo& l, const MonitorCallback* cb);
    void apply_addr(const AddrInfo& a, const MonitorCallback* cb);

    MnlSocket sock_;       // multicast subscriber
    MnlSocket dump_sock_;  // dumps only, so dump replies never interleave with notifications
    std::map<int, LinkInfo> links_;
    std::vector<AddrInfo> addrs_;
    std::uint64_t resyncs_ = 0;
};

}  // namespace ha::nl
