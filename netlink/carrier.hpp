// CarrierProbe: reads a NIC's carrier the moment it changes, by ioctl (SIOCGIFFLAGS for the
// admin state, ETHTOOL_GLINK for the carrier). The rtnetlink notification of a carrier change goes
// through the kernel's linkwatch, which batches non-urgent events at most once a second: a
// carrier lost shortly after another link change (a flapping cable, a repaired port) is reported
// up to a second late, far longer than a millisecond heartbeat timeout. The flag these ioctls
// read is set by the driver at once. The agent polls it on its heartbeat cadence and keeps the
// netlink monitor for everything else.
//
// Loop thread only; no state besides one socket for the ioctls.
#pragma once

#include <string>

#include "common/net_types.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::nl {

// The Ethernet address of `ifname` (SIOCGIFHWADDR, on any socket `fd`). Errors: no such
// interface, or one that is not Ethernet.
Result<MacAddr> hw_address(int fd, const std::string& ifname);

class CarrierProbe {
  public:
    static Result<CarrierProbe> create();
    // True when `ifname` is administratively up and has carrier. Errors: no such interface.
    [[nodiscard]] Result<bool> running(const std::string& ifname) const;
    // The NIC's Ethernet address (hw_address()).
    [[nodiscard]] Result<MacAddr> mac(const std::string& ifname) const;

  private:
    explicit CarrierProbe(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

}  // namespace ha::nl
