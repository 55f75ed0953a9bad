// fcm-ha-xdp-pass: attach (or with -d detach) a bare XDP_PASS program on a lab/test veth, so the
// XDP_TX replies of a Responder on the other end of the pair are delivered rather than dropped.
// With --napi-cpu, the port's receive processing also moves into NAPI threads on that CPU at
// SCHED_FIFO priority (--napi-priority, default 11, one above the agent's default prober): a
// lab switch port that a loaded CPU cannot slow down, any more than it could a real switch.
#include <net/if.h>

#include <charconv>
#include <cstdio>
#include <optional>
#include <string_view>

#include "common/log.hpp"
#include "loader.hpp"
#include "netlink/napi.hpp"

namespace {

int usage() {
    std::fprintf(stderr,
                 "usage: fcm-ha-xdp-pass [-d] IFACE\n"
                 "       fcm-ha-xdp-pass --napi-cpu CPU [--napi-priority 1-99] IFACE\n");
    return 2;
}

std::optional<int> number(std::string_view s, int lo, int hi) {
    int v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    bool detach = false;
    std::optional<int> napi_cpu;
    int napi_prio = 11;
    const char* ifname = nullptr;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a(argv[i]);
        if (a == "-d") {
            detach = true;
        } else if ((a == "--napi-cpu" || a == "--napi-priority") && i + 1 < argc) {
            const std::string_view v(argv[++i]);
            auto n = a == "--napi-cpu" ? number(v, 0, 1023) : number(v, 1, 99);
            if (!n) {
                std::fprintf(stderr, "fcm-ha-xdp-pass: %s '%s' is not %s\n", argv[i - 1], argv[i],
                             a == "--napi-cpu" ? "a CPU number (0-1023)" : "a priority (1-99)");
                return 2;
            }
            if (a == "--napi-cpu")
                napi_cpu = *n;
            else
                napi_prio = *n;
        } else if (ifname == nullptr && !a.starts_with("-")) {
            ifname = argv[i];
        } else {
            return usage();
        }
    }
    if (ifname == nullptr || (detach && napi_cpu)) return usage();
    const unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0) {
        std::fprintf(stderr, "fcm-ha-xdp-pass: no interface '%s'\n", ifname);
        return 1;
    }
    const int idx = static_cast<int>(ifindex);
    const ha::Status st = detach ? ha::bpf::PassProgram::detach_persistent(idx)
                                 : ha::bpf::PassProgram::attach_persistent(idx);
    if (!st) {
        std::fprintf(stderr, "fcm-ha-xdp-pass: %s: %s\n", ifname, st.error().message().c_str());
        return 1;
    }
    if (napi_cpu) {
        auto napi = ha::nl::NapiControl::open();
        auto r = napi ? napi->pin_threads(ifname, idx, *napi_cpu, napi_prio)
                      : ha::Result<int>(ha::unexpected(napi.error()));
        if (!r) {
            std::fprintf(stderr, "fcm-ha-xdp-pass: %s\n", r.error().message().c_str());
            return 1;
        }
    }
    return 0;
}
