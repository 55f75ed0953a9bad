// Helpers shared by the heartbeat benchmark programs: strict numeric flags, CPU pinning and
// real-time scheduling, address parsing.
#pragma once

#include <arpa/inet.h>
#include <sched.h>
#include <sys/mman.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/result.hpp"

namespace ha::bench {

// Parses an unsigned integer in [lo, hi]; the error names the flag and the bad text.
inline Result<std::uint64_t> parse_uint(std::string_view flag, std::string_view text,
                                        std::uint64_t lo, std::uint64_t hi) {
    std::uint64_t v = 0;
    const auto* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, v);
    if (ec != std::errc{} || p != end || v < lo || v > hi)
        return fail(fmt::format("{} '{}': expected an integer in [{}, {}]", flag, text, lo, hi));
    return v;
}

inline Result<in_addr> parse_ip4(std::string_view flag, const std::string& text) {
    in_addr a{};
    if (::inet_pton(AF_INET, text.c_str(), &a) != 1)
        return fail(fmt::format("{} '{}': not an IPv4 address", flag, text));
    return a;
}

inline Status pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0)
        return last_errno(fmt::format("sched_setaffinity cpu {}", cpu));
    return {};
}

// SCHED_FIFO at `prio` with every page locked, so neither a CPU hog nor a page fault delays the
// measuring thread. prio 0 leaves the thread at SCHED_OTHER and memory unlocked.
inline Status make_realtime(int prio) {
    if (prio == 0) return {};
    if (::mlockall(MCL_CURRENT | MCL_FUTURE) != 0) return last_errno("mlockall");
    sched_param sp{};
    sp.sched_priority = prio;
    if (::sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
        return last_errno(fmt::format("sched_setscheduler SCHED_FIFO {}", prio));
    return {};
}

}  // namespace ha::bench
