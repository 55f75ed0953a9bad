#include "netlink/frames.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace ha::nl {
namespace {

constexpr std::uint16_t kEthArp = 0x0806;
constexpr std::uint16_t kEthIpv4 = 0x0800;
constexpr std::uint16_t kEthIpv6 = 0x86dd;
constexpr std::uint16_t kArpOpRequest = 1;
constexpr std::uint16_t kArpOpReply = 2;
constexpr std::uint8_t kIcmp6 = 58;
constexpr std::uint8_t kNdNs = 135;
constexpr std::uint8_t kNdNa = 136;
constexpr std::uint8_t kOptSourceLl = 1;
constexpr std::uint8_t kOptTargetLl = 2;
constexpr std::uint8_t kNaOverride = 0x20;
constexpr std::size_t kEthLen = 14;
constexpr std::size_t kIp6Len = 40;

const MacAddr kBroadcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

void put16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}
std::uint16_t get16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

Status check(std::span<std::uint8_t> buf, std::size_t need, const IpAddr& ip, std::uint8_t family,
             const char* what) {
    if (ip.family != family)
        return fail(fmt::format("{}: '{}' is not an IPv{} address", what, ip.to_string(), family));
    if (buf.size() < need)
        return fail(fmt::format("{}: buffer of {} bytes, need {}", what, buf.size(), need),
                    std::errc::no_buffer_space);
    return {};
}

std::uint8_t* put_eth(std::uint8_t* p, const MacAddr& dst, const MacAddr& src, std::uint16_t type) {
    std::memcpy(p, dst.bytes.data(), 6);
    std::memcpy(p + 6, src.bytes.data(), 6);
    put16(p + 12, type);
    return p + kEthLen;
}

std::size_t put_arp(std::span<std::uint8_t> buf, std::uint16_t op, const MacAddr& sha,
                    const IpAddr& spa, const IpAddr& tpa) {
    std::uint8_t* p = put_eth(buf.data(), kBroadcast, sha, kEthArp);
    put16(p, 1);  // hardware type: Ethernet
    put16(p + 2, kEthIpv4);
    p[4] = 6;
    p[5] = 4;
    put16(p + 6, op);
    std::memcpy(p + 8, sha.bytes.data(), 6);
    std::memcpy(p + 14, spa.bytes.data(), 4);
    std::memset(p + 18, 0, 6);  // target hardware address: unknown (RFC 5227 §2.1.1)
    std::memcpy(p + 24, tpa.bytes.data(), 4);
    return kArpFrameLen;
}

MacAddr multicast_mac(const IpAddr& group) {
    // RFC 2464 §7: 33:33 followed by the low 32 bits of the group address.
    return MacAddr{
        {0x33, 0x33, group.bytes[12], group.bytes[13], group.bytes[14], group.bytes[15]}};
}

// Writes the IPv6 header and the ICMPv6 body (already at p + kIp6Len, checksum field zero),
// then fills in the checksum.
void finish_ip6(std::uint8_t* ip6, const IpAddr& src, const IpAddr& dst, std::size_t icmp_len) {
    ip6[0] = 0x60;
    ip6[1] = ip6[2] = ip6[3] = 0;
    put16(ip6 + 4, static_cast<std::uint16_t>(icmp_len));
    ip6[6] = kIcmp6;
    ip6[7] = 255;  // RFC 4861 §7.1: receivers drop ND with any other hop limit
    std::memcpy(ip6 + 8, src.bytes.data(), 16);
    std::memcpy(ip6 + 24, dst.bytes.data(), 16);
    std::uint8_t* icmp = ip6 + kIp6Len;
    put16(icmp + 2, icmp6_checksum(src, dst, {icmp, icmp_len}));
}

IpAddr v6(std::initializer_list<std::uint8_t> bytes) {
    IpAddr a;
    a.family = 6;
    std::copy(bytes.begin(), bytes.end(), a.bytes.begin());
    return a;
}

IpAddr v4_from(const std::uint8_t* p) {
    IpAddr a;
    a.family = 4;
    std::memcpy(a.bytes.data(), p, 4);
    return a;
}
IpAddr v6_from(const std::uint8_t* p) {
    IpAddr a;
    a.family = 6;
    std::memcpy(a.bytes.data(), p, 16);
    return a;
}
MacAddr mac_from(const std::uint8_t* p) {
    MacAddr m;
    std::memcpy(m.bytes.data(), p, 6);
    return m;
}

}  // namespace

Result<std::size_t> build_garp(std::span<std::uint8_t> buf, const MacAddr& src, const IpAddr& ip) {
    if (auto s = check(buf, kArpFrameLen, ip, 4, "gratuitous ARP"); !s)
        return unexpected(s.error());
    return put_arp(buf, kArpOpRequest, src, ip, ip);
}

Result<std::size_t> build_arp_probe(std::span<std::uint8_t> buf, const MacAddr& src,
                                    const IpAddr& ip) {
    if (auto s = check(buf, kArpFrameLen, ip, 4, "ARP probe"); !s) return unexpected(s.error());
    IpAddr zero;
    zero.family = 4;
    return put_arp(buf, kArpOpRequest, src, zero, ip);
}

Result<std::size_t> build_arp_request(std::span<std::uint8_t> buf, const MacAddr& src,
                                      const IpAddr& sender_ip, const IpAddr& target) {
    if (auto s = check(buf, kArpFrameLen, target, 4, "ARP request"); !s)
        return unexpected(s.error());
    if (!sender_ip.is_v4())
        return fail(fmt::format("ARP request: sender '{}' is not IPv4", sender_ip.to_string()));
    return put_arp(buf, kArpOpRequest, src, sender_ip, target);
}

IpAddr solicited_node_multicast(const IpAddr& ip) {
    return v6({0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, ip.bytes[13], ip.bytes[14],
               ip.bytes[15]});
}

std::uint16_t icmp6_checksum(const IpAddr& src, const IpAddr& dst,
                             std::span<const std::uint8_t> icmp) {
    std::uint32_t sum = 0;
    auto add_bytes = [&sum](const std::uint8_t* p, std::size_t n) {
        for (std::size_t i = 0; i + 1 < n; i += 2) sum += get16(p + i);
        if (n % 2 != 0) sum += static_cast<std::uint32_t>(p[n - 1]) << 8;
    };
    add_bytes(src.bytes.data(), 16);
    add_bytes(dst.bytes.data(), 16);
    const auto len = static_cast<std::uint32_t>(icmp.size());
    sum += len >> 16;
    sum += len & 0xffff;
    sum += kIcmp6;
    add_bytes(icmp.data(), icmp.size());
    while ((sum >> 16) != 0) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

Result<std::size_t> build_unsolicited_na(std::span<std::uint8_t> buf, const MacAddr& src,
                                         const IpAddr& ip) {
    if (auto s = check(buf, kNaFrameLen, ip, 6, "unsolicited NA"); !s) return unexpected(s.error());
    const IpAddr all_nodes = v6({0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01});
    std::uint8_t* ip6 = put_eth(buf.data(), multicast_mac(all_nodes), src, kEthIpv6);
    std::uint8_t* icmp = ip6 + kIp6Len;
    std::memset(icmp, 0, 32);
    icmp[0] = kNdNa;
    icmp[4] = kNaOverride;  // RFC 4861 §7.2.6: Override set so caches take the new MAC at once
    std::memcpy(icmp + 8, ip.bytes.data(), 16);
    icmp[24] = kOptTargetLl;
    icmp[25] = 1;  // option length in units of 8 bytes
    std::memcpy(icmp + 26, src.bytes.data(), 6);
    finish_ip6(ip6, ip, all_nodes, 32);
    return kNaFrameLen;
}

Result<std::size_t> build_dad_ns(std::span<std::uint8_t> buf, const MacAddr& src,
                                 const IpAddr& ip) {
    if (auto s = check(buf, kDadNsFrameLen, ip, 6, "DAD NS"); !s) return unexpected(s.error());
    const IpAddr group = solicited_node_multicast(ip);
    IpAddr unspecified;
    unspecified.family = 6;
    std::uint8_t* ip6 = put_eth(buf.data(), multicast_mac(group), src, kEthIpv6);
    std::uint8_t* icmp = ip6 + kIp6Len;
    std::memset(icmp, 0, 24);
    icmp[0] = kNdNs;
    std::memcpy(icmp + 8, ip.bytes.data(), 16);
    finish_ip6(ip6, unspecified, group, 24);
    return kDadNsFrameLen;
}

namespace {

std::optional<Claim> classify_arp(std::span<const std::uint8_t> f) {
    if (f.size() < kArpFrameLen) return std::nullopt;
    const std::uint8_t* a = f.data() + kEthLen;
    if (get16(a) != 1 || get16(a + 2) != kEthIpv4 || a[4] != 6 || a[5] != 4) return std::nullopt;
    const std::uint16_t op = get16(a + 6);
    const MacAddr sha = mac_from(a + 8);
    const IpAddr spa = v4_from(a + 14);
    const IpAddr tpa = v4_from(a + 24);
    const bool sender_zero = spa.v4_be() == 0;
    if (op == kArpOpReply) {
        if (sender_zero) return std::nullopt;
        return Claim{spa, sha, ClaimKind::ArpReply};
    }
    if (op != kArpOpRequest) return std::nullopt;
    if (sender_zero) {
        if (tpa.v4_be() == 0) return std::nullopt;
        return Claim{tpa, sha, ClaimKind::ArpProbe};
    }
    return Claim{spa, sha, ClaimKind::ArpRequest};
}

// Returns the link-layer address carried by the first option of `type`, if any. Options with a
// zero length are invalid and end the scan (RFC 4861 §4.6).
std::optional<MacAddr> find_ll_option(std::span<const std::uint8_t> opts, std::uint8_t type) {
    std::size_t off = 0;
    while (off + 2 <= opts.size()) {
        const std::size_t len = static_cast<std::size_t>(opts[off + 1]) * 8;
        if (len == 0 || off + len > opts.size()) return std::nullopt;
        if (opts[off] == type && len >= 8) return mac_from(opts.data() + off + 2);
        off += len;
    }
    return std::nullopt;
}

std::optional<Claim> classify_nd(std::span<const std::uint8_t> f) {
    if (f.size() < kEthLen + kIp6Len + 24) return std::nullopt;
    const std::uint8_t* ip6 = f.data() + kEthLen;
    if ((ip6[0] >> 4) != 6 || ip6[6] != kIcmp6 || ip6[7] != 255) return std::nullopt;
    const std::size_t plen = get16(ip6 + 4);
    if (plen < 24 || kEthLen + kIp6Len + plen > f.size()) return std::nullopt;
    const IpAddr src = v6_from(ip6 + 8);
    const IpAddr dst = v6_from(ip6 + 24);
    std::span<const std::uint8_t> icmp(ip6 + kIp6Len, plen);
    if (icmp[1] != 0 || icmp6_checksum(src, dst, icmp) != 0) return std::nullopt;
    const MacAddr eth_src = mac_from(f.data() + 6);
    const IpAddr target = v6_from(icmp.data() + 8);
    const auto opts = icmp.subspan(24);
    const bool src_unspecified =
        std::all_of(src.bytes.begin(), src.bytes.end(), [](std::uint8_t b) { return b == 0; });
    if (icmp[0] == kNdNa) {
        const auto ll = find_ll_option(opts, kOptTargetLl);
        return Claim{target, ll.value_or(eth_src), ClaimKind::NeighborAdvert};
    }
    if (icmp[0] == kNdNs) {
        if (src_unspecified) return Claim{target, eth_src, ClaimKind::DadProbe};
        const auto ll = find_ll_option(opts, kOptSourceLl);
        return Claim{src, ll.value_or(eth_src), ClaimKind::NeighborSolicit};
    }
    return std::nullopt;
}

}  // namespace

std::optional<Claim> classify_frame(std::span<const std::uint8_t> frame) {
    if (frame.size() < kEthLen) return std::nullopt;
    switch (get16(frame.data() + 12)) {
        case kEthArp:
            return classify_arp(frame);
        case kEthIpv6:
            return classify_nd(frame);
        default:
            return std::nullopt;
    }
}

bool is_conflict(const Claim& claim, const IpAddr& ip, const MacAddr& own_mac) {
    return claim.ip == ip && claim.mac != own_mac;
}

}  // namespace ha::nl
