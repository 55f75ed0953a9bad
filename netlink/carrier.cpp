#include "netlink/carrier.hpp"

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstring>

#include <fmt/format.h>

namespace ha::nl {

namespace {
Result<ifreq> request_for(const std::string& ifname) {
    if (ifname.empty() || ifname.size() >= IFNAMSIZ)
        return fail(fmt::format("interface name '{}' is not valid", ifname));
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
    return ifr;
}
}  // namespace

Result<CarrierProbe> CarrierProbe::create() {
    UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return last_errno("carrier probe socket");
    return CarrierProbe(std::move(fd));
}

Result<bool> CarrierProbe::running(const std::string& ifname) const {
    auto req = request_for(ifname);
    if (!req) return unexpected(req.error());
    ifreq& ifr = *req;
    if (::ioctl(fd_.get(), SIOCGIFFLAGS, &ifr) != 0) return last_errno("SIOCGIFFLAGS " + ifname);
    if ((ifr.ifr_flags & IFF_UP) == 0) return false;
    ethtool_value link{};
    link.cmd = ETHTOOL_GLINK;
    ifr.ifr_data = reinterpret_cast<char*>(&link);
    if (::ioctl(fd_.get(), SIOCETHTOOL, &ifr) != 0) return last_errno("ETHTOOL_GLINK " + ifname);
    return link.data != 0;
}

Result<MacAddr> hw_address(int fd, const std::string& ifname) {
    auto req = request_for(ifname);
    if (!req) return unexpected(req.error());
    ifreq& ifr = *req;
    if (::ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) return last_errno("SIOCGIFHWADDR " + ifname);
    if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER)
        return fail(fmt::format("{} is not an Ethernet interface", ifname));
    MacAddr m;
    std::memcpy(m.bytes.data(), ifr.ifr_hwaddr.sa_data, m.bytes.size());
    return m;
}

Result<MacAddr> CarrierProbe::mac(const std::string& ifname) const {
    return hw_address(fd_.get(), ifname);
}

}  // namespace ha::nl
