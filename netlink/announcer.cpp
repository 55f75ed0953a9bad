#include "netlink/announcer.hpp"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/log.hpp"
#include "netlink/carrier.hpp"
#include "netlink/frames.hpp"

namespace ha::nl {
namespace {

// Accept ARP, and IPv6 ICMPv6 Neighbor Solicitation/Advertisement without extension headers
// (RFC 4861 ND is never sent with any); drop the rest in the kernel, so a probe on a busy LAN
// copies no RTP to us.
constexpr std::array<sock_filter, 10> kNdArpFilter{{
    {BPF_LD | BPF_H | BPF_ABS, 0, 0, 12},           // ethertype
    {BPF_JMP | BPF_JEQ | BPF_K, 6, 0, ETH_P_ARP},   // ARP -> accept
    {BPF_JMP | BPF_JEQ | BPF_K, 0, 6, ETH_P_IPV6},  // not IPv6 -> drop
    {BPF_LD | BPF_B | BPF_ABS, 0, 0, 20},           // IPv6 next header
    {BPF_JMP | BPF_JEQ | BPF_K, 0, 4, 58},          // not ICMPv6 -> drop
    {BPF_LD | BPF_B | BPF_ABS, 0, 0, 54},           // ICMPv6 type
    {BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 135},         // NS -> accept
    {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 136},         // not NA -> drop
    {BPF_RET | BPF_K, 0, 0, 256},                   // accept (ND/ARP fit in 256 bytes)
    {BPF_RET | BPF_K, 0, 0, 0},                     // drop
}};

}  // namespace

Result<Announcer> Announcer::create(int ifindex) {
    char name[IF_NAMESIZE] = {};
    if (ifindex <= 0 || if_indextoname(static_cast<unsigned>(ifindex), name) == nullptr)
        return last_errno(fmt::format("announcer: no interface with ifindex {}", ifindex));
    // Protocol 0: the socket can send but receives nothing until a probe binds it.
    UniqueFd sock(::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!sock) return last_errno("socket AF_PACKET");
    auto hw = hw_address(sock.get(), name);
    if (!hw) return unexpected(hw.error().wrap("announcer"));
    const MacAddr mac = *hw;

    sock_fprog prog{static_cast<unsigned short>(kNdArpFilter.size()),
                    const_cast<sock_filter*>(kNdArpFilter.data())};  // NOLINT: the API is not const
    if (::setsockopt(sock.get(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
        return last_errno("SO_ATTACH_FILTER");
    int one = 1;
    // Kernel >= 4.20. Without it our own probes come back as PACKET_OUTGOING, which on_readable
    // skips anyway.
    (void)::setsockopt(sock.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    Announcer a(std::move(sock), ifindex, mac);
    if (auto st = a.bind_protocol(0); !st) return unexpected(st.error());
    return a;
}

Status Announcer::bind_protocol(std::uint16_t eth_proto) {
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(eth_proto);
    sll.sll_ifindex = ifindex_;
    if (::bind(sock_.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) < 0)
        return last_errno(
            fmt::format("bind AF_PACKET ifindex={} proto={:#06x}", ifindex_, eth_proto));
    return {};
}

Status Announcer::send_frame(std::span<const std::uint8_t> frame, std::uint16_t eth_proto) {
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(eth_proto);
    sll.sll_ifindex = ifindex_;
    sll.sll_halen = 6;
    std::memcpy(sll.sll_addr, frame.data(), 6);
    for (;;) {
        const ssize_t n = ::sendto(sock_.get(), frame.data(), frame.size(), 0,
                                   reinterpret_cast<const sockaddr*>(&sll), sizeof sll);
        if (n == static_cast<ssize_t>(frame.size())) {
            ++counters_.frames_sent;
            return {};
        }
        if (n < 0 && errno == EINTR) continue;
        ++counters_.send_errors;
        if (n < 0) return last_errno(fmt::format("send on ifindex={}", ifindex_));
        return fail(fmt::format("short send on ifindex={}", ifindex_), std::errc::io_error);
    }
}

Status Announcer::send_probe_frame(Probe& p, TimePoint now) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto len = p.ip.is_v4() ? build_arp_probe(buf, mac_, p.ip) : build_dad_ns(buf, mac_, p.ip);
    if (!len) return unexpected(len.error());
    ++p.sent;
    p.next_send = now + p.opts.interval;
    if (p.sent >= p.opts.count) p.end = now + p.opts.wait_after_last;
    auto st = send_frame({buf.data(), *len}, p.ip.is_v4() ? ETH_P_ARP : ETH_P_IPV6);
    if (!st) {
        ++p.failed;
        p.last_errno = st.error().code.value();
    }
    return st;
}

Status Announcer::probe(const IpAddr& ip, TimePoint now, const ProbeOptions& opts) {
    if (!ip.is_v4() && !ip.is_v6()) return fail("probe: address has no family");
    if (opts.count == 0) return fail("probe: count must be at least 1");
    cancel_probe();
    if (auto st = bind_protocol(ip.is_v4() ? ETH_P_ARP : ETH_P_IPV6); !st) return st;
    // Anything queued between bind and now is older than our first probe: drop it.
    std::array<std::uint8_t, 256> junk{};
    while (::recv(sock_.get(), junk.data(), junk.size(), MSG_DONTWAIT) >= 0) {
    }
    Probe p;
    p.ip = ip;
    p.opts = opts;
    p.end = now + opts.interval * opts.count + opts.wait_after_last;
    if (auto st = send_probe_frame(p, now); !st) {
        (void)bind_protocol(0);
        return unexpected(st.error().wrap(fmt::format("probe {}", ip.to_string())));
    }
    probe_ = p;
    return {};
}

void Announcer::cancel_probe() {
    if (!probe_) return;
    probe_.reset();
    if (auto st = bind_protocol(0); !st)
        log::warn("nl", "announcer unbind failed: {}", st.error().message());
}

ProbeResult Announcer::finish_probe(bool conflict, const MacAddr& by) {
    ProbeResult r{probe_->ip, conflict, by};
    cancel_probe();
    return r;
}

Status Announcer::send_burst(const Announce& a) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto len = a.ip.is_v4() ? build_garp(buf, a.mac, a.ip) : build_unsolicited_na(buf, a.mac, a.ip);
    if (!len) return unexpected(len.error());
    Status last;
    for (unsigned i = 0; i < a.opts.burst; ++i) {
        if (auto st = send_frame({buf.data(), *len}, a.ip.is_v4() ? ETH_P_ARP : ETH_P_IPV6); !st)
            last = st;
    }
    return last;
}

Status Announcer::announce(const IpAddr& ip, TimePoint now, const AnnounceOptions& opts) {
    return announce(ip, mac_, now, opts);
}

Status Announcer::announce(const IpAddr& ip, const MacAddr& mac, TimePoint now,
                           const AnnounceOptions& opts) {
    if (!ip.is_v4() && !ip.is_v6()) return fail("announce: address has no family");
    Announce a{ip, mac, opts, now, 0};
    // Keep the repeats even if the first burst failed (carrier flapping during takeover):
    // a later one may get through.
    announce_ = a;
    if (a.opts.repeats.empty()) announce_.reset();
    if (auto st = send_burst(a); !st)
        return unexpected(st.error().wrap(fmt::format("announce {}", ip.to_string())));
    return {};
}

std::optional<TimePoint> Announcer::next_deadline() const {
    std::optional<TimePoint> t;
    auto consider = [&t](TimePoint x) {
        if (!t || x < *t) t = x;
    };
    if (probe_) consider(probe_->sent < probe_->opts.count ? probe_->next_send : probe_->end);
    if (announce_) consider(announce_->start + announce_->opts.repeats[announce_->next_repeat]);
    return t;
}

Result<std::optional<ProbeResult>> Announcer::on_deadline(TimePoint now) {
    if (announce_) {
        auto& a = *announce_;
        if (now >= a.start + a.opts.repeats[a.next_repeat]) {
            if (auto st = send_burst(a); !st)
                log::warn("nl", "announce repeat failed ip={} err={}", a.ip.to_string(),
                          st.error().message());
            // A late loop sends one burst, not every repeat it overslept.
            while (a.next_repeat < a.opts.repeats.size() &&
                   now >= a.start + a.opts.repeats[a.next_repeat])
                ++a.next_repeat;
            if (a.next_repeat >= a.opts.repeats.size()) announce_.reset();
        }
    }
    if (!probe_) return std::optional<ProbeResult>{};
    auto& p = *probe_;
    if (p.sent < p.opts.count) {
        if (now >= p.next_send) (void)send_probe_frame(p, now);
        return std::optional<ProbeResult>{};
    }
    if (now < p.end) return std::optional<ProbeResult>{};
    if (p.failed > 0) {
        const auto err = errno_error(p.last_errno, fmt::format("probe {}: {} of {} probes not sent",
                                                               p.ip.to_string(), p.failed, p.sent));
        cancel_probe();
        return err;
    }
    return std::optional<ProbeResult>{finish_probe(false, MacAddr{})};
}

Result<std::optional<ProbeResult>> Announcer::on_readable(TimePoint /*now*/) {
    std::array<std::uint8_t, 256> buf{};
    for (;;) {
        sockaddr_ll from{};
        socklen_t from_len = sizeof from;
        const ssize_t n = ::recvfrom(sock_.get(), buf.data(), buf.size(), MSG_DONTWAIT,
                                     reinterpret_cast<sockaddr*>(&from), &from_len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<ProbeResult>{};
            // ENETDOWN when the interface went down: the link monitor reports it.
            return last_errno(fmt::format("recv AF_PACKET ifindex={}", ifindex_));
        }
        if (from.sll_pkttype == PACKET_OUTGOING) continue;
        ++counters_.frames_seen;
        if (!probe_) continue;
        auto claim = classify_frame({buf.data(), static_cast<std::size_t>(n)});
        if (claim && is_conflict(*claim, probe_->ip, mac_)) {
            ++counters_.conflicts;
            log::info("nl", "probe conflict ip={} mac={} kind={}", probe_->ip.to_string(),
                      claim->mac.to_string(), static_cast<int>(claim->kind));
            return std::optional<ProbeResult>{finish_probe(true, claim->mac)};
        }
    }
}

}  // namespace ha::nl
