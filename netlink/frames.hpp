// Pure Ethernet frame builders and a classifier for address-resolution traffic (ARP, IPv6 ND).
// No sockets: frames go into caller buffers and are byte-tested. The Announcer sends them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "common/net_types.hpp"
#include "common/result.hpp"

namespace ha::nl {

// Ethernet header (14) + ARP for IPv4 over Ethernet (28). The NIC pads to the 60-byte minimum.
inline constexpr std::size_t kArpFrameLen = 42;
// Ethernet (14) + IPv6 (40) + NA (24) + target link-layer address option (8).
inline constexpr std::size_t kNaFrameLen = 86;
// Ethernet (14) + IPv6 (40) + NS (24); no source link-layer option (RFC 4861 §7.2.2: not with
// the unspecified source).
inline constexpr std::size_t kDadNsFrameLen = 78;
inline constexpr std::size_t kMaxFrameLen = kNaFrameLen;

// RFC 5227 §3 "ARP Announcement": broadcast ARP request, sender = target = ip, target hardware
// address zero. A request rather than a reply, because RFC 5227 §3 notes some stacks ignore
// unsolicited replies, and Linux updates an existing neighbour entry from either.
Result<std::size_t> build_garp(std::span<std::uint8_t> buf, const MacAddr& src, const IpAddr& ip);
// RFC 5227 §2.1.1 "ARP Probe": broadcast request, sender IP 0.0.0.0, target = ip.
Result<std::size_t> build_arp_probe(std::span<std::uint8_t> buf, const MacAddr& src,
                                    const IpAddr& ip);
// An ordinary broadcast "who has target, tell sender_ip" request (sender_ip may be 0.0.0.0).
Result<std::size_t> build_arp_request(std::span<std::uint8_t> buf, const MacAddr& src,
                                      const IpAddr& sender_ip, const IpAddr& target);
// RFC 4861 §7.2.6 unsolicited Neighbor Advertisement: from ip to ff02::1 (33:33:00:00:00:01),
// hop limit 255, Override set, Solicited and Router clear, target link-layer address option.
Result<std::size_t> build_unsolicited_na(std::span<std::uint8_t> buf, const MacAddr& src,
                                         const IpAddr& ip);
// RFC 4862 §5.4.2 DAD probe: Neighbor Solicitation from :: to the solicited-node multicast
// address of ip (ff02::1:ffXX:XXXX, MAC 33:33:ff:XX:XX:XX), target = ip.
Result<std::size_t> build_dad_ns(std::span<std::uint8_t> buf, const MacAddr& src, const IpAddr& ip);

// ff02::1:ffXX:XXXX for ip (RFC 4291 §2.7.1).
IpAddr solicited_node_multicast(const IpAddr& ip);
// ICMPv6 checksum over the pseudo-header (RFC 8200 §8.1) and the ICMPv6 message.
std::uint16_t icmp6_checksum(const IpAddr& src, const IpAddr& dst,
                             std::span<const std::uint8_t> icmp);

enum class ClaimKind : std::uint8_t {
    ArpReply,         // "ip is at mac"
    ArpRequest,       // ordinary request or announcement: the sender uses ip
    ArpProbe,         // sender 0.0.0.0 probing for ip (RFC 5227 §2.1.1)
    NeighborAdvert,   // NA for target ip
    NeighborSolicit,  // NS from ip (the sender uses ip)
    DadProbe,         // NS from :: for target ip (RFC 4862 §5.4.3)
};

// "mac claims (or is about to claim) ip". For a probe, ip is the probed target.
struct Claim {
    IpAddr ip;
    MacAddr mac;
    ClaimKind kind = ClaimKind::ArpReply;
};

// Classifies one received Ethernet frame. nullopt for anything that is not a well-formed ARP
// (Ethernet/IPv4) or ND message (hop limit 255 and a valid ICMPv6 checksum, RFC 4861 §7.1.2),
// or that claims no address (an ARP request from 0.0.0.0 is a probe for its target).
std::optional<Claim> classify_frame(std::span<const std::uint8_t> frame);

// RFC 5227 §2.1.1 / RFC 4862 §5.4.3: while probing ip, any claim on ip from a MAC other than
// ours, including a simultaneous probe, is a conflict.
bool is_conflict(const Claim& claim, const IpAddr& ip, const MacAddr& own_mac);

}  // namespace ha::nl
