#include "netlink/rtnl_msg.hpp"

#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_arp.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>

#include <fmt/format.h>

namespace ha::nl {
namespace {

// Zeroes the whole buffer first so padding bytes are deterministic (byte tests compare them).
Result<nlmsghdr*> start(std::span<std::uint8_t> buf, std::uint16_t type, std::uint16_t flags,
                        std::uint32_t seq, std::size_t extra) {
    if (buf.size() < MNL_NLMSG_HDRLEN + MNL_ALIGN(extra))
        return fail(fmt::format("netlink buffer of {} bytes is too small", buf.size()),
                    std::errc::no_buffer_space);
    std::memset(buf.data(), 0, buf.size());
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    nlh->nlmsg_pid = 0;  // the kernel fills in our port id
    return nlh;
}

std::uint8_t af_of(std::uint8_t family) {
    return family == 4 ? AF_INET : (family == 6 ? AF_INET6 : AF_UNSPEC);
}

}  // namespace

Result<std::size_t> build_addr_request(std::span<std::uint8_t> buf, AddrOp op, int ifindex,
                                       const IpPrefix& prefix, std::uint32_t seq,
                                       std::string_view label, std::uint32_t lifetime_s) {
    const IpAddr& a = prefix.addr;
    if (!a.is_v4() && !a.is_v6()) return fail("address request: prefix has no address family");
    const unsigned max_len = a.is_v4() ? 32 : 128;
    if (prefix.len == 0 || prefix.len > max_len)
        return fail(
            fmt::format("address request: bad prefix length {} for {}", prefix.len, a.to_string()));
    if (ifindex <= 0) return fail(fmt::format("address request: bad ifindex {}", ifindex));
    if (!label.empty() && (a.is_v6() || label.size() >= IFNAMSIZ))
        return fail(fmt::format("address request: label '{}' not allowed (IPv4 only, < {} chars)",
                                label, IFNAMSIZ));

    const bool add = op != AddrOp::Remove;
    const auto flags = static_cast<std::uint16_t>(
        NLM_F_REQUEST | NLM_F_ACK | (op == AddrOp::Add ? NLM_F_CREATE | NLM_F_EXCL : 0) |
        (op == AddrOp::Renew ? NLM_F_CREATE | NLM_F_REPLACE : 0));
    HA_TRY_CTX(nlh, start(buf, add ? RTM_NEWADDR : RTM_DELADDR, flags, seq, sizeof(ifaddrmsg)),
               "address request");
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = af_of(a.family);
    ifa->ifa_prefixlen = prefix.len;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = static_cast<std::uint32_t>(ifindex);
    const std::uint32_t ifa_flags = a.is_v6() && add ? IFA_F_NODAD : 0;
    ifa->ifa_flags = static_cast<std::uint8_t>(ifa_flags);

    const std::size_t alen = a.is_v4() ? 4 : 16;
    bool ok = mnl_attr_put_check(nlh, buf.size(), IFA_LOCAL, alen, a.bytes.data()) &&
              mnl_attr_put_check(nlh, buf.size(), IFA_ADDRESS, alen, a.bytes.data());
    if (ok && add) ok = mnl_attr_put_u32_check(nlh, buf.size(), IFA_FLAGS, ifa_flags);
    if (ok && add && lifetime_s > 0) {
        ifa_cacheinfo ci{};
        ci.ifa_prefered = lifetime_s;
        ci.ifa_valid = lifetime_s;
        ok = mnl_attr_put_check(nlh, buf.size(), IFA_CACHEINFO, sizeof ci, &ci);
    }
    if (ok && !label.empty()) {
        const std::string l(label);
        ok = mnl_attr_put_strz_check(nlh, buf.size(), IFA_LABEL, l.c_str());
    }
    if (!ok)
        return fail(fmt::format("address request: buffer of {} bytes too small", buf.size()),
                    std::errc::no_buffer_space);
    return static_cast<std::size_t>(nlh->nlmsg_len);
}

Result<std::size_t> build_link_dump(std::span<std::uint8_t> buf, std::uint32_t seq) {
    HA_TRY_CTX(nlh, start(buf, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, sizeof(ifinfomsg)),
               "link dump");
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    return static_cast<std::size_t>(nlh->nlmsg_len);
}

Result<std::size_t> build_addr_dump(std::span<std::uint8_t> buf, std::uint32_t seq,
                                    std::uint8_t family) {
    if (family != 0 && family != 4 && family != 6)
        return fail(fmt::format("address dump: bad family {}", family));
    HA_TRY_CTX(nlh, start(buf, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, sizeof(ifaddrmsg)),
               "address dump");
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = af_of(family);
    return static_cast<std::size_t>(nlh->nlmsg_len);
}

namespace {

struct LinkAttrs {
    const nlattr* name = nullptr;
    const nlattr* operstate = nullptr;
    const nlattr* address = nullptr;
};

int link_attr_cb(const nlattr* attr, void* data) {
    auto* out = static_cast<LinkAttrs*>(data);
    switch (mnl_attr_get_type(attr)) {
        case IFLA_IFNAME:
            if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0) out->name = attr;
            break;
        case IFLA_OPERSTATE:
            if (mnl_attr_validate(attr, MNL_TYPE_U8) >= 0) out->operstate = attr;
            break;
        case IFLA_ADDRESS:
            if (mnl_attr_get_payload_len(attr) == 6) out->address = attr;
            break;
        default:
            break;
    }
    return MNL_CB_OK;
}

struct AddrAttrs {
    const nlattr* local = nullptr;
    const nlattr* address = nullptr;
    const nlattr* flags = nullptr;
};

int addr_attr_cb(const nlattr* attr, void* data) {
    auto* out = static_cast<AddrAttrs*>(data);
    switch (mnl_attr_get_type(attr)) {
        case IFA_LOCAL:
            out->local = attr;
            break;
        case IFA_ADDRESS:
            out->address = attr;
            break;
        case IFA_FLAGS:
            if (mnl_attr_validate(attr, MNL_TYPE_U32) >= 0) out->flags = attr;
            break;
        default:
            break;
    }
    return MNL_CB_OK;
}

}  // namespace

std::optional<LinkInfo> parse_link(const nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWLINK && nlh->nlmsg_type != RTM_DELLINK) return std::nullopt;
    if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(ifinfomsg))) return std::nullopt;
    const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
    LinkAttrs attrs;
    if (mnl_attr_parse(nlh, sizeof(ifinfomsg), link_attr_cb, &attrs) < 0) return std::nullopt;
    LinkInfo info;
    info.ifindex = ifi->ifi_index;
    info.removed = nlh->nlmsg_type == RTM_DELLINK;
    info.admin_up = (ifi->ifi_flags & IFF_UP) != 0;
    info.carrier = (ifi->ifi_flags & IFF_LOWER_UP) != 0;
    if (attrs.name != nullptr) info.name = mnl_attr_get_str(attrs.name);
    if (attrs.operstate != nullptr) info.operstate = mnl_attr_get_u8(attrs.operstate);
    if (attrs.address != nullptr && ifi->ifi_type == ARPHRD_ETHER)
        std::memcpy(info.mac.bytes.data(), mnl_attr_get_payload(attrs.address), 6);
    return info;
}

std::optional<AddrInfo> parse_addr(const nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWADDR && nlh->nlmsg_type != RTM_DELADDR) return std::nullopt;
    if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(ifaddrmsg))) return std::nullopt;
    const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
    std::size_t alen = 0;
    std::uint8_t family = 0;
    if (ifa->ifa_family == AF_INET) {
        alen = 4;
        family = 4;
    } else if (ifa->ifa_family == AF_INET6) {
        alen = 16;
        family = 6;
    } else {
        return std::nullopt;
    }
    if (ifa->ifa_prefixlen > alen * 8) return std::nullopt;
    AddrAttrs attrs;
    if (mnl_attr_parse(nlh, sizeof(ifaddrmsg), addr_attr_cb, &attrs) < 0) return std::nullopt;
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
    // point-to-point links (it is the peer), and IPv6 normally sends IFA_ADDRESS alone.
    const nlattr* a = attrs.local != nullptr ? attrs.local : attrs.address;
    if (a == nullptr || mnl_attr_get_payload_len(a) != alen) return std::nullopt;
    AddrInfo info;
    info.ifindex = static_cast<int>(ifa->ifa_index);
    info.removed = nlh->nlmsg_type == RTM_DELADDR;
    info.prefix.addr.family = family;
    std::memcpy(info.prefix.addr.bytes.data(), mnl_attr_get_payload(a), alen);
    info.prefix.len = ifa->ifa_prefixlen;
    info.flags = attrs.flags != nullptr ? mnl_attr_get_u32(attrs.flags) : ifa->ifa_flags;
    return info;
}

}  // namespace ha::nl
