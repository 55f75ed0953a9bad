// Parsing and printing of durations as operators write them: "800us", "2ms", "1.5s", "7s", "250ns".
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "result.hpp"

namespace ha {

// Accepts a decimal number followed by one of ns, us, ms, s, m (minutes). No unit is an error here;
// callers decide what a bare number means (the heartbeat timeout treats it as seconds).
Result<std::chrono::nanoseconds> parse_duration(std::string_view text);
// Shortest exact form with the largest unit that keeps it an integer or a short decimal:
// 7000000000ns -> "7s", 1500000000ns -> "1.5s", 800000ns -> "800us".
std::string format_duration(std::chrono::nanoseconds d);

}  // namespace ha
