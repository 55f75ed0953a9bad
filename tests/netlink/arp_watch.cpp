// ha_arp_watch: a LAN client that asks "who has IP" every INTERVAL_US and reports which MACs
// answer, so takeover tests and benchmarks can see (and time) the cluster IP moving, and catch two
// boxes answering for it at once.
//
//   ha_arp_watch IFACE IP INTERVAL_US DURATION_MS
//
// Output, one line each, key=value, flushed at once (times: t_us since start, mono_us =
// CLOCK_MONOTONIC, comparable with the benchmark's fault instant):
//   start mono_us=... iface=... ip=... interval_us=... src=...
//   reply t_us=... mono_us=... mac=... first=0|1     the answering MAC differs from the last one
//   conflict t_us=... mono_us=... round=... macs=A,B two MACs answered within one round
//   gap t_us=... mono_us=... silent_us=... rounds=... send_errors=...   a reply after 10 ms or more
//       without one: how long, how many requests went out meanwhile, how many sends failed
//   mac mac=... first_t_us=... first_mono_us=... replies=...     (at exit, per MAC)
//   summary rounds=... replies=... conflicts=...
// Exit: 0 no conflict, 1 conflict seen, 2 bad arguments, 3 system error. Stops after
// DURATION_MS or on SIGTERM/SIGINT. A "round" is the time between two requests; ARP replies carry
// no request id, so a reply delayed by more than INTERVAL_US counts in the next round.
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/clock.hpp"
#include "common/net_types.hpp"
#include "common/unique_fd.hpp"
#include "netlink/frames.hpp"

namespace {

volatile std::sig_atomic_t g_stop = 0;  // set by the signal handler only
void on_signal(int) {
    g_stop = 1;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

int usage(const char* why) {
    std::fprintf(stderr, "ha_arp_watch: %s\nusage: ha_arp_watch IFACE IP INTERVAL_US DURATION_MS\n",
                 why);
    return 2;
}

int sys_error(const char* what) {
    std::fprintf(stderr, "ha_arp_watch: %s: %s\n", what, std::strerror(errno));
    return 3;
}

std::uint64_t us_of(ha::Duration d) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<ha::microseconds>(d).count());
}

struct MacStats {
    std::uint64_t first_t_us = 0;
    std::uint64_t first_mono_us = 0;
    std::uint64_t replies = 0;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) return usage("expected 4 arguments");
    const std::string iface = argv[1];
    auto target = ha::IpAddr::parse(argv[2]);
    if (!target || !target->is_v4())
        return usage(("'" + std::string(argv[2]) + "' is not an IPv4 address").c_str());
    std::uint64_t interval_us = 0;
    std::uint64_t duration_ms = 0;
    if (!parse_u64(argv[3], interval_us) || interval_us < 10 || interval_us > 10'000'000)
        return usage(("bad INTERVAL_US '" + std::string(argv[3]) + "' (10..10000000)").c_str());
    if (!parse_u64(argv[4], duration_ms) || duration_ms == 0 || duration_ms > 86'400'000)
        return usage(("bad DURATION_MS '" + std::string(argv[4]) + "' (1..86400000)").c_str());
    const unsigned ifindex = if_nametoindex(iface.c_str());
    if (ifindex == 0) return usage(("no interface '" + iface + "'").c_str());

    ha::UniqueFd sock(
        ::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ARP)));
    if (!sock) return sys_error("socket AF_PACKET");
    int one = 1;
    (void)::setsockopt(sock.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ARP);
    sll.sll_ifindex = static_cast<int>(ifindex);
    if (::bind(sock.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) < 0)
        return sys_error("bind");

    ifreq ifr{};
    std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface.c_str());
    if (::ioctl(sock.get(), SIOCGIFHWADDR, &ifr) < 0) return sys_error("SIOCGIFHWADDR");
    ha::MacAddr own;
    std::memcpy(own.bytes.data(), ifr.ifr_hwaddr.sa_data, 6);
    // Ask as a normal client would (sender = our address), or as a probe when we have none.
    ha::IpAddr src;
    src.family = 4;
    {
        ha::UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        ifreq ia{};
        std::snprintf(ia.ifr_name, sizeof ia.ifr_name, "%s", iface.c_str());
        if (udp && ::ioctl(udp.get(), SIOCGIFADDR, &ia) == 0) {
            sockaddr_in sin{};
            std::memcpy(&sin, &ia.ifr_addr, sizeof sin);
            std::memcpy(src.bytes.data(), &sin.sin_addr, 4);
        }
    }
    std::array<std::uint8_t, ha::nl::kArpFrameLen> request{};
    if (!ha::nl::build_arp_request(request, own, src, *target))
        return usage("cannot build request");
    sockaddr_ll dst = sll;
    dst.sll_halen = 6;
    std::memset(dst.sll_addr, 0xff, 6);

    // 100 µs rounds need the timer to fire on time, not 50 µs late.
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    // Signals are delivered only inside ppoll, so a SIGTERM cannot slip between check and wait.
    sigset_t block;
    sigset_t wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);

    const ha::TimePoint start = ha::Clock::now();
    const ha::TimePoint end = start + ha::milliseconds(duration_ms);
    const ha::microseconds interval(interval_us);
    std::printf("start mono_us=%llu iface=%s ip=%s interval_us=%llu src=%s\n",
                static_cast<unsigned long long>(ha::to_mono_ns(start) / 1000), iface.c_str(),
                target->to_string().c_str(), static_cast<unsigned long long>(interval_us),
                src.to_string().c_str());

    std::map<std::string, MacStats> macs;
    std::set<std::string> round_macs;
    std::string last_mac;
    std::uint64_t rounds = 0;
    std::uint64_t replies = 0;
    std::uint64_t conflicts = 0;
    std::uint64_t send_errors = 0;
    std::optional<ha::TimePoint> last_reply;
    std::uint64_t last_reply_round = 0, last_reply_send_errors = 0;
    ha::TimePoint next_send = start;
    std::array<std::uint8_t, 256> buf{};
    while (g_stop == 0) {
        ha::TimePoint now = ha::Clock::now();
        if (now >= end) break;
        if (now >= next_send) {
            if (::sendto(sock.get(), request.data(), request.size(), 0,
                         reinterpret_cast<const sockaddr*>(&dst), sizeof dst) < 0) {
                if (errno != ENOBUFS && errno != EAGAIN) return sys_error("sendto");
                ++send_errors;
            }
            ++rounds;
            round_macs.clear();
            next_send += interval;
            if (next_send <= now) next_send = now + interval;  // we fell behind: do not burst
        }
        const ha::TimePoint wake = std::min(next_send, end);
        const auto wait_ns = std::chrono::duration_cast<ha::nanoseconds>(wake - now).count();
        timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000),
                    static_cast<long>(wait_ns % 1'000'000'000)};
        pollfd p{sock.get(), POLLIN, 0};
        const int n = ::ppoll(&p, 1, &ts, &wait_mask);
        if (n < 0 && errno != EINTR) return sys_error("ppoll");
        if (n <= 0) continue;
        for (;;) {
            const ssize_t len = ::recv(sock.get(), buf.data(), buf.size(), MSG_DONTWAIT);
            if (len < 0) break;
            auto claim = ha::nl::classify_frame({buf.data(), static_cast<std::size_t>(len)});
            if (!claim || claim->kind != ha::nl::ClaimKind::ArpReply || claim->ip != *target)
                continue;
            const ha::TimePoint t = ha::Clock::now();
            const std::uint64_t t_us = us_of(t - start);
            const std::uint64_t mono_us = ha::to_mono_ns(t) / 1000;
            const std::string mac = claim->mac.to_string();
            ++replies;
            if (last_reply && t - *last_reply >= ha::milliseconds(10))
                std::printf(
                    "gap t_us=%llu mono_us=%llu silent_us=%llu rounds=%llu send_errors=%llu\n",
                    static_cast<unsigned long long>(t_us), static_cast<unsigned long long>(mono_us),
                    static_cast<unsigned long long>(us_of(t - *last_reply)),
                    static_cast<unsigned long long>(rounds - last_reply_round),
                    static_cast<unsigned long long>(send_errors - last_reply_send_errors));
            last_reply = t;
            last_reply_round = rounds;
            last_reply_send_errors = send_errors;
            auto [it, first] = macs.try_emplace(mac, MacStats{t_us, mono_us, 0});
            ++it->second.replies;
            if (mac != last_mac)
                std::printf("reply t_us=%llu mono_us=%llu mac=%s first=%d\n",
                            static_cast<unsigned long long>(t_us),
                            static_cast<unsigned long long>(mono_us), mac.c_str(), first ? 1 : 0);
            last_mac = mac;
            round_macs.insert(mac);
            if (round_macs.size() > 1) {
                ++conflicts;
                std::string list;
                for (const auto& m : round_macs) list += (list.empty() ? "" : ",") + m;
                std::printf("conflict t_us=%llu mono_us=%llu round=%llu macs=%s\n",
                            static_cast<unsigned long long>(t_us),
                            static_cast<unsigned long long>(mono_us),
                            static_cast<unsigned long long>(rounds), list.c_str());
                round_macs.erase(mac);  // report each further overlap, not every reply after it
            }
        }
    }
    for (const auto& [mac, s] : macs)
        std::printf("mac mac=%s first_t_us=%llu first_mono_us=%llu replies=%llu\n", mac.c_str(),
                    static_cast<unsigned long long>(s.first_t_us),
                    static_cast<unsigned long long>(s.first_mono_us),
                    static_cast<unsigned long long>(s.replies));
    std::printf("summary rounds=%llu replies=%llu conflicts=%llu send_errors=%llu\n",
                static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(replies),
                static_cast<unsigned long long>(conflicts),
                static_cast<unsigned long long>(send_errors));
    return conflicts > 0 ? 1 : 0;
}
