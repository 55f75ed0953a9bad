// hb_responder: the answering side of the heartbeat benchmark, in one of the two modes the agent
// runs. `xdp`: the real ha::bpf::Responder attached to an interface (not pinned, so it detaches
// when this process ends). `user`: a UDP socket answering with ha::bpf::answer_request, the
// agent's fallback when BPF is not permitted. Runs until SIGINT/SIGTERM, then prints counters.
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "bench_util.hpp"
#include "common/clock.hpp"
#include "common/keyfile.hpp"
#include "common/unique_fd.hpp"
#include "loader.hpp"
#include "wire_util.hpp"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
    g_stop = 1;
}

// Long enough that no reply is ever marked stale during a run; the bench measures transport.
constexpr ha::Duration kAliveWindow = std::chrono::seconds(30);
constexpr int kRefreshMs = 200;

struct Options {
    std::string mode;  // "xdp" or "user"
    std::string ifname;
    std::string bind_ip;
    std::string key_file;
    std::uint16_t port = HA_HB_DEFAULT_PORT;
    ha::bpf::AttachMode attach = ha::bpf::AttachMode::Native;
};

void usage() {
    std::fprintf(stderr,
                 "usage: hb_responder xdp  --ifname IF --key-file F [--port P] [--generic]\n"
                 "       hb_responder user --bind IPV4 --key-file F [--port P]\n");
}

ha::Result<Options> parse(int argc, char** argv) {
    Options o;
    if (argc < 2) return ha::fail("missing mode (xdp|user)");
    o.mode = argv[1];
    if (o.mode != "xdp" && o.mode != "user")
        return ha::fail("mode '" + o.mode + "': expected xdp or user");
    for (int i = 2; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto next = [&]() -> ha::Result<std::string> {
            if (i + 1 >= argc) return ha::fail(std::string(a) + ": missing value");
            return std::string(argv[++i]);
        };
        if (a == "--generic") {
            o.attach = ha::bpf::AttachMode::Generic;
            continue;
        }
        auto v = next();
        if (!v) return ha::unexpected(v.error());
        if (a == "--ifname")
            o.ifname = *v;
        else if (a == "--bind")
            o.bind_ip = *v;
        else if (a == "--key-file")
            o.key_file = *v;
        else if (a == "--port") {
            auto p = ha::bench::parse_uint(a, *v, 1, 65535);
            if (!p) return ha::unexpected(p.error());
            o.port = static_cast<std::uint16_t>(*p);
        } else {
            return ha::fail("unknown option '" + std::string(a) + "'");
        }
    }
    if (o.key_file.empty()) return ha::fail("--key-file is required");
    if (o.mode == "xdp" && o.ifname.empty()) return ha::fail("xdp mode needs --ifname");
    if (o.mode == "user" && o.bind_ip.empty()) return ha::fail("user mode needs --bind");
    return o;
}

ha_agent_state agent_state() {
    ha::bpf::NodeState ns;
    ns.term = 1;
    ns.station = HA_STATION_PRIMARY;
    ns.state = 1;
    ns.ha_enabled = true;
    ns.healthy = true;
    ns.proto_version = 1;
    ns.model = "bench";
    ns.version = "bench";
    ha_agent_state st{};
    st.self = *ha::bpf::to_wire(ns);
    st.alive_until_ns = ha::to_mono_ns(ha::Clock::now() + kAliveWindow);
    return st;
}

int run_xdp(const Options& o, const ha::Key& key) {
    ha::bpf::ResponderOptions ro;
    ro.ifname = o.ifname;
    ro.ifindex = static_cast<int>(if_nametoindex(o.ifname.c_str()));
    if (ro.ifindex == 0) {
        std::fprintf(stderr, "hb_responder: no interface '%s'\n", o.ifname.c_str());
        return 1;
    }
    ro.attach_mode = o.attach;
    ro.port = o.port;
    ro.pin_root.clear();  // attachment ends with this process: nothing left behind
    ro.key = key;
    auto r = ha::bpf::Responder::create(ro);
    if (!r) {
        std::fprintf(stderr, "hb_responder: %s\n", r.error().message().c_str());
        return 1;
    }
    std::printf("hb_responder: XDP responder on %s mode=%s\n", o.ifname.c_str(),
                std::string(r->mode()).c_str());
    std::fflush(stdout);
    while (!g_stop) {
        // As the agent does every loop iteration, at a relaxed pace (nothing here measures it).
        if (auto s = r->set_state(agent_state()); !s) {
            std::fprintf(stderr, "hb_responder: set_state: %s\n", s.error().message().c_str());
            return 1;
        }
        ::poll(nullptr, 0, kRefreshMs);
    }
    if (auto c = r->counters(); c)
        std::printf("hb_responder: answered=%llu bad_mac=%llu replay=%llu short=%llu\n",
                    static_cast<unsigned long long>(c->rx_request),
                    static_cast<unsigned long long>(c->drop_bad_mac),
                    static_cast<unsigned long long>(c->drop_replay),
                    static_cast<unsigned long long>(c->drop_short));
    return 0;
}

int run_user(const Options& o, const ha::Key& key) {
    auto ip = ha::bench::parse_ip4("--bind", o.bind_ip);
    if (!ip) {
        std::fprintf(stderr, "hb_responder: %s\n", ip.error().message().c_str());
        return 2;
    }
    ha::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) {
        std::perror("hb_responder: socket");
        return 1;
    }
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(o.port);
    sin.sin_addr = *ip;
    if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
        std::perror("hb_responder: bind");
        return 1;
    }
    std::printf("hb_responder: user-space responder on %s:%u\n", o.bind_ip.c_str(), o.port);
    std::fflush(stdout);
    std::uint64_t last_seq = 0, answered = 0, rejected = 0;
    ha_agent_state st = agent_state();
    std::uint64_t refresh_at = ha::mono_ns();
    std::array<std::uint8_t, 512> buf{};
    while (!g_stop) {
        sockaddr_in from{};
        socklen_t flen = sizeof from;
        // Blocking receive like the agent's loop; SIGTERM interrupts it (no SA_RESTART).
        const ssize_t n = ::recvfrom(sock.get(), buf.data(), buf.size(), 0,
                                     reinterpret_cast<sockaddr*>(&from), &flen);
        if (n < 0) continue;
        const std::uint64_t now = ha::mono_ns();
        if (now >= refresh_at) {
            st = agent_state();
            refresh_at = now + 200'000'000ULL;
        }
        auto reply = ha::bpf::answer_request(
            std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)), key, st, now,
            last_seq);
        if (!reply) {
            ++rejected;
            continue;
        }
        if (::sendto(sock.get(), reply->data(), reply->size(), MSG_DONTWAIT,
                     reinterpret_cast<sockaddr*>(&from),
                     flen) == static_cast<ssize_t>(reply->size()))
            ++answered;
    }
    std::printf("hb_responder: answered=%llu rejected=%llu\n",
                static_cast<unsigned long long>(answered),
                static_cast<unsigned long long>(rejected));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto o = parse(argc, argv);
    if (!o) {
        std::fprintf(stderr, "hb_responder: %s\n", o.error().message().c_str());
        usage();
        return 2;
    }
    auto key = ha::load_key_file(o->key_file);
    if (!key) {
        std::fprintf(stderr, "hb_responder: %s\n", key.error().message().c_str());
        return 2;
    }
    struct sigaction sa {};
    sa.sa_handler = on_signal;  // no SA_RESTART: a blocked recvfrom returns EINTR
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    return o->mode == "xdp" ? run_xdp(*o, *key) : run_user(*o, *key);
}
