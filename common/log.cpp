#include "log.hpp"

#include <unistd.h>

#include <cstdio>
#include <ctime>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>

namespace ha::log {
namespace {
std::atomic<Level> g_level{Level::Info};
std::atomic<bool> g_journal{false};
std::mutex g_debug_mu;  // only taken when debug subsystems are set, never on the hot path
std::set<std::string, std::less<>> g_debug;
std::atomic<bool> g_any_debug{false};
}  // namespace

void set_level(Level l) {
    g_level.store(l);
}
Level level() {
    return g_level.load();
}
void set_journal_prefix(bool on) {
    g_journal.store(on);
}

void set_debug(std::string_view subsystem, bool on) {
    std::lock_guard lk(g_debug_mu);
    if (on) {
        g_debug.emplace(subsystem);
    } else if (auto it = g_debug.find(subsystem); it != g_debug.end()) {
        g_debug.erase(it);
    }
    g_any_debug.store(!g_debug.empty());
}

bool enabled(Level l, std::string_view subsystem) {
    if (l <= g_level.load(std::memory_order_relaxed)) return true;
    if (l != Level::Debug || !g_any_debug.load(std::memory_order_relaxed)) return false;
    std::lock_guard lk(g_debug_mu);
    return g_debug.contains(subsystem);
}

std::string_view level_name(Level l) {
    switch (l) {
        case Level::Error:
            return "error";
        case Level::Warn:
            return "warn";
        case Level::Info:
            return "info";
        case Level::Debug:
            return "debug";
    }
    return "?";
}

bool parse_level(std::string_view text, Level& out) {
    for (Level l : {Level::Error, Level::Warn, Level::Info, Level::Debug}) {
        if (text == level_name(l)) {
            out = l;
            return true;
        }
    }
    return false;
}

void write(Level l, std::string_view subsystem, std::string_view message) {
    static constexpr std::array<int, 4> kSyslog{3, 4, 6, 7};
    std::string line;
    line.reserve(message.size() + subsystem.size() + 16);
    if (g_journal.load(std::memory_order_relaxed)) {
        line += '<';
        line += static_cast<char>('0' + kSyslog.at(static_cast<std::size_t>(l)));
        line += '>';
    }
    if (!g_journal.load(std::memory_order_relaxed)) {
        // journald stamps lines itself; elsewhere (the lab, a terminal) the time matters.
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        tm t{};
        localtime_r(&ts.tv_sec, &t);
        char stamp[40];
        std::snprintf(stamp, sizeof stamp, "%02d:%02d:%02d.%06ld ", t.tm_hour, t.tm_min, t.tm_sec,
                      ts.tv_nsec / 1000);
        line += stamp;
    }
    line += level_name(l);
    line += ' ';
    line += subsystem;
    line += ": ";
    line += message;
    line += '\n';
    // One write(2) per line keeps lines from different threads whole.
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(STDERR_FILENO, p, left);
        if (n <= 0) break;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

}  // namespace ha::log
