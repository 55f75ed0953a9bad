// fcm-ha-xdp-pass: attach (or with -d detach) a bare XDP_PASS program on a lab/test veth, so the
// XDP_TX replies of a Responder on the other end of the pair are delivered rather than dropped.
#include <net/if.h>

#include <cstdio>
#include <string_view>

#include "common/log.hpp"
#include "loader.hpp"

int main(int argc, char** argv) {
    const bool detach = argc == 3 && std::string_view(argv[1]) == "-d";
    if (argc != 2 && !detach) {
        std::fprintf(stderr, "usage: fcm-ha-xdp-pass [-d] IFACE\n");
        return 2;
    }
    const char* ifname = argv[argc - 1];
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
    return 0;
}
