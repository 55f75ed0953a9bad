// Pure rtnetlink message builders and parsers: no sockets, caller-supplied buffers, byte-testable.
// The socket adapters (address_manager, link_monitor) only send what these build and feed what
// they receive back into the parsers.
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/net_types.hpp"
#include "common/result.hpp"

namespace ha::nl {

// Large enough for any request built here (header + ifaddrmsg + four attributes + label).
inline constexpr std::size_t kRequestBufSize = 256;

// Add: create, EEXIST if present. Renew: create or replace (lifetimes restart). Remove.
enum class AddrOp : std::uint8_t { Add, Renew, Remove };

// RTM_NEWADDR (NLM_F_CREATE|NLM_F_EXCL, so an existing address answers EEXIST) or RTM_DELADDR,
// both with NLM_F_ACK. IPv4 carries IFA_LOCAL and IFA_ADDRESS (equal: not point-to-point) and an
// optional IFA_LABEL, which the kernel only accepts when it starts with the interface name
// ("lan0:ha"). IPv6 gets IFA_F_NODAD: the standby has already probed with our own NS, and a
// tentative address could not answer or source traffic for the ~1 s DAD would take.
// lifetime_s > 0 (Add/Renew): IFA_CACHEINFO with valid and preferred lifetime, so the kernel
// removes the address by itself unless renewed in time; 0: permanent.
// Returns the message length (nlmsg_len). Errors: prefix without a family, buffer too small,
// label on IPv6 or longer than IFNAMSIZ-1, ifindex <= 0.
Result<std::size_t> build_addr_request(std::span<std::uint8_t> buf, AddrOp op, int ifindex,
                                       const IpPrefix& prefix, std::uint32_t seq,
                                       std::string_view label = {}, std::uint32_t lifetime_s = 0);

// RTM_GETLINK dump (every link, AF_UNSPEC).
Result<std::size_t> build_link_dump(std::span<std::uint8_t> buf, std::uint32_t seq);
// RTM_GETADDR dump; family 0 = both, 4 or 6 = that family only.
Result<std::size_t> build_addr_dump(std::span<std::uint8_t> buf, std::uint32_t seq,
                                    std::uint8_t family);

// One link as seen in RTM_NEWLINK / RTM_DELLINK.
struct LinkInfo {
    int ifindex = 0;
    std::string name;
    bool admin_up = false;       // IFF_UP
    bool carrier = false;        // IFF_LOWER_UP (what `ip link` shows as LOWER_UP)
    std::uint8_t operstate = 0;  // IF_OPER_* (RFC 2863)
    MacAddr mac;                 // zero when the link has no Ethernet address
    bool removed = false;        // RTM_DELLINK
    // Usable for traffic: administratively up and carrier present.
    [[nodiscard]] bool running() const { return admin_up && carrier; }
    friend bool operator==(const LinkInfo&, const LinkInfo&) = default;
};

// One address as seen in RTM_NEWADDR / RTM_DELADDR.
struct AddrInfo {
    int ifindex = 0;
    IpPrefix prefix;
    std::uint32_t flags = 0;  // IFA_F_* (IFA_FLAGS when present, else ifa_flags)
    bool removed = false;     // RTM_DELADDR
};

// Parse one message. nullopt for other message types and for messages too short or malformed
// (never trusts lengths from the buffer beyond `len`).
std::optional<LinkInfo> parse_link(const nlmsghdr* nlh);
std::optional<AddrInfo> parse_addr(const nlmsghdr* nlh);

}  // namespace ha::nl
