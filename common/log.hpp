// A small logging facade: one line per record on stderr, "LEVEL subsystem: message key=value ...".
// journald/systemd collects stderr. Thread-safe (one write(2) per line). The level is per process;
// debug can be switched on per subsystem at run time (control API "debug" command).
// Nothing on a per-packet or per-completion path logs unconditionally: count, then summarise.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace ha::log {

enum class Level : std::uint8_t { Error = 0, Warn = 1, Info = 2, Debug = 3 };

void set_level(Level level);
Level level();
// Enable debug output for one subsystem tag ("hb", "sync", ...) without raising the global level.
void set_debug(std::string_view subsystem, bool on);
bool enabled(Level level, std::string_view subsystem);
void write(Level level, std::string_view subsystem, std::string_view message);
// Parses "error|warn|info|debug".
bool parse_level(std::string_view text, Level& out);
std::string_view level_name(Level level);
// When true, lines carry a "<N>" syslog priority prefix that journald understands.
void set_journal_prefix(bool on);

template <typename... Args>
void logf(Level lvl, std::string_view subsystem, fmt::format_string<Args...> f, Args&&... args) {
    if (!enabled(lvl, subsystem)) return;
    write(lvl, subsystem, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(std::string_view sub, fmt::format_string<Args...> f, Args&&... a) {
    logf(Level::Error, sub, f, std::forward<Args>(a)...);
}
template <typename... Args>
void warn(std::string_view sub, fmt::format_string<Args...> f, Args&&... a) {
    logf(Level::Warn, sub, f, std::forward<Args>(a)...);
}
template <typename... Args>
void info(std::string_view sub, fmt::format_string<Args...> f, Args&&... a) {
    logf(Level::Info, sub, f, std::forward<Args>(a)...);
}
template <typename... Args>
void debug(std::string_view sub, fmt::format_string<Args...> f, Args&&... a) {
    logf(Level::Debug, sub, f, std::forward<Args>(a)...);
}

}  // namespace ha::log

// Invariant violations: log and abort in every build. Crashing hands the service to the peer;
// limping on risks two actives.
#define HA_ASSERT(cond, ...)                                                                     \
    do {                                                                                         \
        if (!(cond)) [[unlikely]] {                                                              \
            ::ha::log::write(::ha::log::Level::Error, "assert",                                  \
                             std::string(#cond " at " __FILE__ ":") + std::to_string(__LINE__)); \
            ::abort();                                                                           \
        }                                                                                        \
    } while (0)
