// Time types. The core never reads a clock: callers pass `Clock::time_point now` in.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

namespace ha {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux
using TimePoint = Clock::time_point;
using Duration = Clock::duration;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

// CLOCK_MONOTONIC in nanoseconds, the same clock bpf_ktime_get_ns() reads in BPF programs.
inline std::uint64_t mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
           static_cast<std::uint64_t>(ts.tv_nsec);
}
inline TimePoint from_mono_ns(std::uint64_t ns) {
    return TimePoint(std::chrono::duration_cast<Duration>(nanoseconds(ns)));
}
inline std::uint64_t to_mono_ns(TimePoint t) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<nanoseconds>(t.time_since_epoch()).count());
}

// Wall clock, for log lines and events only (never for deciding anything).
inline std::int64_t wall_ms() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace ha
