// Internal to config*.cpp: the allowed ranges and their messages, shared by the parser (which
// checks values as written) and validate() (which checks a Config built in code), so both say
// the same thing about the same key.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace ha::core::config_rules {

using namespace std::chrono_literals;

struct DurationRule {
    std::chrono::nanoseconds lo;
    std::chrono::nanoseconds hi;
    bool zero_ok;  // 0 means "derive it" or "do not wait"
    std::string_view msg;
    [[nodiscard]] bool accepts(std::chrono::nanoseconds d) const {
        return (zero_ok && d.count() == 0) || (d >= lo && d <= hi);
    }
    [[nodiscard]] std::string message() const { return std::string(msg); }
};

// The guide's Table 1 range is 3-10 whole seconds; duration strings open the low-latency range.
inline constexpr std::int64_t kGuideMinTimeoutS = 3;
inline constexpr std::int64_t kGuideMaxTimeoutS = 10;
inline constexpr DurationRule kTimeoutRule{
    500us, 10s, false,
    "must be 3-10 seconds as an integer, or a duration from 500us to 10s such as \"2ms\""};
inline constexpr DurationRule kIntervalRule{
    50us, 10s, true,
    "must be a duration from 50us to 10s such as \"700ms\", or 0 for heartbeat_timeout/10"};
inline constexpr DurationRule kLanIntervalRule{
    50us, 10s, true,
    "must be a duration from 50us to 10s such as \"2.8s\", or 0 for 4 x heartbeat_interval"};
inline constexpr DurationRule kStopTimeoutRule{
    100ms, 5min, false, "must be a duration from 100ms to 5m such as \"5s\""};
inline constexpr DurationRule kProbeIntervalRule{
    10ms, 10min, false, "must be a duration from 10ms to 10m such as \"1s\""};
inline constexpr DurationRule kProbeTimeoutRule{
    1ms, 1min, false, "must be a duration from 1ms to 1m such as \"500ms\""};
inline constexpr DurationRule kDrainRule{0ns, 10min, true,
                                         "must be a duration from 0s to 10m such as \"10s\""};

inline constexpr std::string_view kPortRangeMessage =
    "must be a port number 0-65535 (the guide's range; 0 cannot be bound, so use 1-65535; "
    "default 9527)";
inline constexpr std::string_view kPortZeroMessage =
    "0 is not a usable UDP port: use 1-65535 (default 9527)";
inline constexpr std::string_view kSyncPortRangeMessage =
    "must be a TCP port number 1-65535 (default 9528)";
inline constexpr std::string_view kSyncPortZeroMessage =
    "0 is not a usable TCP port: use 1-65535 (default 9528)";
inline constexpr std::string_view kRtPriorityMessage =
    "must be 0-99 (SCHED_FIFO priority of the prober; 0 = normal scheduling)";
inline constexpr std::string_view kProberCpuMessage =
    "must be a CPU number 0-1023 (the CPU the prober runs on; unset = any CPU)";
inline constexpr std::string_view kProbeFailuresMessage =
    "must be 1-100 (consecutive failed probes that make a software fault)";
inline constexpr std::string_view kNodeNameMessage =
    "must be at most 64 characters from A-Z a-z 0-9 . _ - (empty = host name)";
inline constexpr std::string_view kMetricsListenMessage =
    "must be \"\" (off) or ADDRESS:PORT such as \"127.0.0.1:9529\" or \"[::1]:9529\"";
inline constexpr std::string_view kSipTargetMessage =
    "must be ADDRESS:PORT such as \"198.18.1.100:5060\", or \"\" for the cluster IP, port 5060";
inline constexpr std::string_view kBackupTimeMessage =
    "must be a time of day HH:MM (24h) such as \"03:30\"";
inline constexpr std::string_view kLogLevelMessage =
    "must be \"error\", \"warn\", \"info\" or \"debug\"";

inline bool valid_log_level(std::string_view l) {
    return l == "error" || l == "warn" || l == "info" || l == "debug";
}

// A TOML basic string literal ("..." with escapes) for any text.
std::string toml_quote(std::string_view s);

}  // namespace ha::core::config_rules
