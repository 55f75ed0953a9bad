// AddressManager: adds, removes and checks the cluster IP through rtnetlink.
//
// Called from the agent's loop thread only. Each call is synchronous but does not wait on the
// network: rtnetlink processes the request inside our sendmsg(), so the ACK is already queued
// when send returns, and a call costs two syscalls plus the kernel's own work (not benchmarked
// yet; expect tens of µs for add/remove, more for has(), which dumps the family's addresses).
// The socket is non-blocking; a missing reply is bounded by kReplyTimeout (an error, not a hang).
//
// Idempotent by contract: add() of an address already present (EEXIST) and remove() of one
// already gone (EADDRNOTAVAIL) succeed, so the loop can re-issue an action after a restart.
// Other kernel errors come back as Result errors naming the address and ifindex (ENODEV for a
// vanished interface, EPERM without CAP_NET_ADMIN, EINVAL for a bad label).
//
// IPv4 note: a cluster IP in the same subnet as the interface's primary address becomes a
// secondary address; the kernel deletes secondaries with the primary unless
// net.ipv4.conf.<if>.promote_secondaries=1, which the LinkMonitor would then report as removed.
#pragma once

#include <string>
#include <string_view>

#include "common/net_types.hpp"
#include "common/result.hpp"
#include "netlink/mnl_socket.hpp"
#include "netlink/rtnl_msg.hpp"

namespace ha::nl {

class AddressManager {
  public:
    static Result<AddressManager> create();

    // label: optional IPv4 label ("lan0:ha") so `ip addr` shows whose address it is.
    // lifetime_s > 0: the kernel removes the address after that many seconds unless renew() came
    // first (a dead man's switch for a holder that can no longer say it is alive); 0: permanent.
    Status add(int ifindex, const IpPrefix& prefix, std::string_view label = {},
               std::uint32_t lifetime_s = 0);
    // Restarts the lifetime (adds the address again if it is gone).
    Status renew(int ifindex, const IpPrefix& prefix, std::string_view label,
                 std::uint32_t lifetime_s);
    Status remove(int ifindex, const IpPrefix& prefix);
    // True when exactly this address and prefix length is on ifindex.
    Result<bool> has(int ifindex, const IpPrefix& prefix);

  private:
    explicit AddressManager(MnlSocket sock) : sock_(std::move(sock)) {}
    Status request(AddrOp op, int ifindex, const IpPrefix& prefix, std::string_view label,
                   std::uint32_t lifetime_s, int already);
    MnlSocket sock_;
};

}  // namespace ha::nl
