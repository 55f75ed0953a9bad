// Threaded NAPI for the heartbeat NICs: a NIC's receive processing in kernel threads
// ("napi/IF-ID") that can be pinned to the prober's CPU at real-time priority.
//
// Why: in softirq, a NIC's receive processing runs on the CPU that scheduled it: on veth the
// CPU of whichever thread sent into the pair last (the sync stream's thread, a kernel timer),
// on a real NIC the CPU its interrupt went to. A loaded CPU defers that work to ksoftirqd, an
// ordinary thread that waits its turn behind the load, and a CPU the hypervisor stops holds it
// outright: the peer's replies and requests sit in the ring for milliseconds while the prober,
// on its own CPU, keeps asking. At a millisecond timeout that is a false loss. A NAPI thread
// pinned to the prober's CPU runs when the prober's CPU runs and stalls only when the prober
// stalls with it, which core::Liveness does not count as evidence.
//
// Needs the "netdev" generic netlink family with NAPI thread ids (Linux 6.8 or later); older
// kernels get an error and keep softirq processing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "netlink/mnl_socket.hpp"

namespace ha::nl {

struct NapiInstance {
    std::uint32_t id = 0;
    int pid = 0;  // the NAPI's kernel thread; 0 while the NIC is not threaded
};

class NapiControl {
  public:
    // Resolves the "netdev" generic netlink family. Error: a kernel without it (before 6.3).
    static Result<NapiControl> open();
    // The NIC's NAPI instances (none while it is down, or for a veth without XDP or GRO).
    Result<std::vector<NapiInstance>> list(int ifindex);

    // Switches `ifname` to threaded NAPI if it is not yet (sysfs `threaded`), then puts each of
    // its NAPI threads on `cpu` at SCHED_FIFO `priority`. Returns how many threads it had to
    // change (0: all were in place). Errors name the NIC: no NAPI instance, a kernel that does
    // not report NAPI threads, a refused write or scheduler call.
    Result<int> pin_threads(const std::string& ifname, int ifindex, int cpu, int priority);

  private:
    NapiControl(MnlSocket sock, std::uint16_t family) : sock_(std::move(sock)), family_(family) {}
    MnlSocket sock_;
    std::uint16_t family_;
};

}  // namespace ha::nl
