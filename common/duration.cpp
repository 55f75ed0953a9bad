#include "duration.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

namespace ha {

Result<std::chrono::nanoseconds> parse_duration(std::string_view text) {
    std::string_view s = text;
    std::size_t num_end = 0;
    while (num_end < s.size() && ((s[num_end] >= '0' && s[num_end] <= '9') || s[num_end] == '.'))
        ++num_end;
    if (num_end == 0)
        return fail(fmt::format("'{}' is not a duration (e.g. 800us, 2ms, 1.5s)", text));
    std::string_view num = s.substr(0, num_end);
    std::string_view unit = s.substr(num_end);
    double scale = 0;
    if (unit == "ns")
        scale = 1;
    else if (unit == "us" || unit == "µs")
        scale = 1e3;
    else if (unit == "ms")
        scale = 1e6;
    else if (unit == "s")
        scale = 1e9;
    else if (unit == "m" || unit == "min")
        scale = 60e9;
    else
        return fail(fmt::format("'{}' has no valid unit (use ns, us, ms, s or m)", text));
    // from_chars for double is not in g++ 12's libstdc++ for all targets; parse by hand.
    std::uint64_t int_part = 0;
    double frac = 0, place = 0.1;
    bool seen_dot = false, seen_digit = false;
    for (char c : num) {
        if (c == '.') {
            if (seen_dot) return fail(fmt::format("'{}' is not a duration", text));
            seen_dot = true;
            continue;
        }
        seen_digit = true;
        if (!seen_dot) {
            if (int_part > 1'000'000'000ULL) return fail(fmt::format("'{}' is too long", text));
            int_part = int_part * 10 + static_cast<std::uint64_t>(c - '0');
        } else {
            frac += (c - '0') * place;
            place /= 10;
        }
    }
    if (!seen_digit) return fail(fmt::format("'{}' is not a duration", text));
    double ns = (static_cast<double>(int_part) + frac) * scale;
    if (ns > 9.2e18) return fail(fmt::format("'{}' is too long", text));
    return std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(ns)));
}

std::string format_duration(std::chrono::nanoseconds d) {
    const std::int64_t ns = d.count();
    struct Unit {
        std::int64_t scale;
        const char* name;
    };
    static constexpr Unit kUnits[] = {{1'000'000'000, "s"}, {1'000'000, "ms"}, {1'000, "us"}};
    for (const auto& u : kUnits) {
        if (ns < u.scale && ns > -u.scale) continue;
        if (ns % u.scale == 0) return fmt::format("{}{}", ns / u.scale, u.name);
        // Up to three decimals, trailing zeros trimmed: 1.5s, 2.25ms.
        if ((ns * 1000) % u.scale != 0) continue;
        std::string text =
            fmt::format("{:.3f}", static_cast<double>(ns) / static_cast<double>(u.scale));
        text.erase(text.find_last_not_of('0') + 1);
        return text + u.name;
    }
    return fmt::format("{}ns", ns);
}

}  // namespace ha
