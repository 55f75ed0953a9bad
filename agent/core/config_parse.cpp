// parse_config() and set_config_value(): TOML text to Config, reporting every problem with the
// key, the value as written and its line. Ranges and messages live in config_rules.hpp.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include <fmt/format.h>

// toml++ is used header-only with TOML_EXCEPTIONS=0 (see agent/CMakeLists.txt).
#include <toml++/toml.h>

#include "agent/core/config.hpp"
#include "agent/core/config_rules.hpp"
#include "common/duration.hpp"

namespace ha::core {

namespace {

using std::chrono::nanoseconds;
using namespace config_rules;

struct Written {
    int line = 0;
    std::string text;
};

int line_of(const toml::node& n) {
    return static_cast<int>(n.source().begin.line);
}

// The value in TOML form, as an operator would recognise it from the file.
std::string render(const toml::node& n) {
    if (const auto* s = n.as_string()) return toml_quote(s->get());
    if (n.is_table()) return "";  // the issue names the table itself
    std::ostringstream os;
    n.visit([&os](const auto& v) { os << v; });
    return os.str();
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::string_view leaf(std::string_view key) {
    auto dot = key.rfind('.');
    return dot == std::string_view::npos ? key : key.substr(dot + 1);
}

// "; did you mean 'ha.heartbeat_timeout'?" for a typo (edit distance <= 2) or a key put in the
// wrong table; empty when nothing is close.
std::string suggestion(std::string_view unknown, const std::vector<std::string>& known) {
    const std::string* best = nullptr;
    std::size_t best_distance = 3;
    for (const auto& k : known) {
        auto d = edit_distance(unknown, k);
        if (d < best_distance) best = &k, best_distance = d;
    }
    if (best == nullptr) {
        for (const auto& k : known)
            if (leaf(k) == leaf(unknown)) best = &k;
    }
    return best == nullptr ? "" : fmt::format("; did you mean '{}'?", *best);
}

class Reader {
  public:
    Reader(std::vector<ConfigIssue>& issues, std::map<std::string, Written>& written)
        : issues_(issues), written_(written) {}

    // Selects the key being read and records where it was written.
    void at(std::string key, const toml::node& node) {
        key_ = std::move(key);
        node_ = &node;
        written_[key_] = Written{line_of(node), render(node)};
    }
    void bad(std::string_view message) {
        issues_.push_back(ConfigIssue{key_, render(*node_), std::string(message), line_of(*node_)});
    }
    void issue(std::string key, std::string value, std::string message, int line) {
        issues_.push_back(ConfigIssue{std::move(key), std::move(value), std::move(message), line});
    }

    std::optional<bool> boolean() {
        if (const auto* b = node_->as_boolean()) return b->get();
        bad("must be true or false (without quotes)");
        return std::nullopt;
    }
    std::optional<std::string> string(std::string_view example) {
        if (const auto* s = node_->as_string()) return s->get();
        bad(fmt::format("must be a string in quotes, such as {}", example));
        return std::nullopt;
    }
    std::optional<std::int64_t> integer(std::int64_t lo, std::int64_t hi, std::string_view msg) {
        const auto* i = node_->as_integer();
        if (i == nullptr || i->get() < lo || i->get() > hi) {
            bad(msg);
            return std::nullopt;
        }
        return i->get();
    }
    // A duration string, or a bare integer meaning seconds.
    std::optional<nanoseconds> duration(const DurationRule& rule) {
        nanoseconds d{};
        if (const auto* i = node_->as_integer()) {
            // Past every rule's upper bound; also keeps seconds-to-ns from overflowing.
            if (i->get() < 0 || i->get() > 3600) {
                bad(rule.msg);
                return std::nullopt;
            }
            d = std::chrono::seconds(i->get());
        } else if (const auto* s = node_->as_string()) {
            auto parsed = parse_duration(s->get());
            if (!parsed) {
                bad(rule.msg);
                return std::nullopt;
            }
            d = *parsed;
        } else {
            bad(rule.msg);
            return std::nullopt;
        }
        if (!rule.accepts(d)) {
            bad(rule.msg);
            return std::nullopt;
        }
        return d;
    }
    // The guide's heartbeat timeout: an integer is whole seconds in the guide's 3-10 range.
    std::optional<nanoseconds> heartbeat_timeout() {
        if (const auto* i = node_->as_integer()) {
            if (i->get() < kGuideMinTimeoutS || i->get() > kGuideMaxTimeoutS) {
                bad(kTimeoutRule.msg);
                return std::nullopt;
            }
            return std::chrono::seconds(i->get());
        }
        if (node_->is_floating_point()) {
            bad(fmt::format("{} (write a fraction as a string such as \"1.5s\")",
                            kTimeoutRule.msg));
            return std::nullopt;
        }
        return duration(kTimeoutRule);
    }
    template <typename E>
    std::optional<E> choice(std::initializer_list<std::pair<std::string_view, E>> options) {
        if (const auto* s = node_->as_string()) {
            std::string lower = s->get();
            // The guide writes "Primary"; accept any case, print lower case.
            std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
                return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
            });
            for (const auto& [name, value] : options)
                if (lower == name) return value;
        }
        std::string allowed;
        std::size_t n = 0;
        for (const auto& opt : options) {
            if (n > 0) allowed += (n + 1 == options.size()) ? " or " : ", ";
            allowed += fmt::format("\"{}\"", opt.first);
            ++n;
        }
        bad(fmt::format("must be {}", allowed));
        return std::nullopt;
    }
    std::optional<IpAddr> ip(std::string_view example) {
        if (const auto* s = node_->as_string())
            if (auto a = IpAddr::parse(s->get())) return *a;
        bad(fmt::format("must be an IPv4 or IPv6 address such as {}", example));
        return std::nullopt;
    }
    std::optional<IpPrefix> prefix() {
        if (const auto* s = node_->as_string())
            if (auto p = IpPrefix::parse(s->get())) return *p;
        bad("must be an IPv4 or IPv6 address with an optional prefix length, such as "
            "\"198.18.1.100/24\" or \"fd00:4a::100/64\" (1-32 for IPv4, 1-128 for IPv6)");
        return std::nullopt;
    }
    std::optional<MacAddr> mac() {
        if (const auto* s = node_->as_string())
            if (auto m = MacAddr::parse(s->get())) return *m;
        bad("must be a MAC address such as \"02:00:00:00:00:02\"");
        return std::nullopt;
    }
    // HH:MM as a string, or a TOML local time such as 03:30:00.
    std::optional<std::string> time_of_day() {
        if (const auto* t = node_->as_time()) {
            const toml::time& v = t->get();
            if (v.second == 0 && v.nanosecond == 0)
                return fmt::format("{:02}:{:02}", v.hour, v.minute);
            bad(kBackupTimeMessage);
            return std::nullopt;
        }
        if (const auto* s = node_->as_string()) return s->get();
        bad(kBackupTimeMessage);
        return std::nullopt;
    }

  private:
    std::vector<ConfigIssue>& issues_;
    std::map<std::string, Written>& written_;
    std::string key_;
    const toml::node* node_ = nullptr;
};

enum class ValueKind : std::uint8_t { Bool, Integer, String, Duration };

using ApplyFn = void (*)(Reader&, Config&);
struct KeyInfo {
    std::string_view table;
    std::string_view name;
    ValueKind kind;
    ApplyFn apply;
};

template <typename T>
void set_if(std::optional<T> v, T& out) {
    if (v) out = std::move(*v);
}

const KeyInfo kKeys[] = {
    {"ha", "enable", ValueKind::Bool, [](Reader& r, Config& c) { set_if(r.boolean(), c.enable); }},
    {"ha", "station_type", ValueKind::String,
     [](Reader& r, Config& c) {
         if (auto t = r.choice<StationType>(
                 {{"primary", StationType::Primary}, {"secondary", StationType::Secondary}}))
             c.station_type = *t;
     }},
    {"ha", "cluster_ip", ValueKind::String,
     [](Reader& r, Config& c) {
         if (auto p = r.prefix()) c.cluster_ip = *p;
     }},
    {"ha", "peer_ip", ValueKind::String,
     [](Reader& r, Config& c) {
         if (auto a = r.ip("\"198.18.0.2\"")) c.peer_ip = *a;
     }},
    {"ha", "peer_mac", ValueKind::String,
     [](Reader& r, Config& c) {
         if (auto m = r.mac()) c.peer_mac = *m;
     }},
    {"ha", "heartbeat_port", ValueKind::Integer,
     [](Reader& r, Config& c) {
         if (auto p = r.integer(0, 65535, kPortRangeMessage)) {
             if (*p == 0)
                 r.bad(kPortZeroMessage);
             else
                 c.heartbeat_port = static_cast<std::uint16_t>(*p);
         }
     }},
    {"ha", "heartbeat_timeout", ValueKind::Duration,
     [](Reader& r, Config& c) { set_if(r.heartbeat_timeout(), c.heartbeat_timeout); }},
    {"ha", "software_fault_switch", ValueKind::Bool,
     [](Reader& r, Config& c) { set_if(r.boolean(), c.software_fault_switch); }},
    {"ha", "hardware_fault_switch", ValueKind::Bool,
     [](Reader& r, Config& c) { set_if(r.boolean(), c.hardware_fault_switch); }},
    {"ha", "heartbeat_interface", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"hb0\""), c.heartbeat_interface); }},
    {"ha", "lan_interface", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"lan0\""), c.lan_interface); }},
    {"ha", "peer_lan_ip", ValueKind::String,
     [](Reader& r, Config& c) {
         if (auto a = r.ip("\"198.18.1.2\"")) c.peer_lan_ip = *a;
     }},
    {"ha", "heartbeat_interval", ValueKind::Duration,
     [](Reader& r, Config& c) { set_if(r.duration(kIntervalRule), c.heartbeat_interval); }},
    {"ha", "lan_heartbeat_interval", ValueKind::Duration,
     [](Reader& r, Config& c) { set_if(r.duration(kLanIntervalRule), c.lan_heartbeat_interval); }},
    {"ha", "prober_rt_priority", ValueKind::Integer,
     [](Reader& r, Config& c) {
         if (auto p = r.integer(0, 99, kRtPriorityMessage))
             c.prober_rt_priority = static_cast<int>(*p);
     }},
    {"ha", "prober_cpu", ValueKind::Integer,
     [](Reader& r, Config& c) {
         if (auto p = r.integer(0, 1023, kProberCpuMessage)) c.prober_cpu = static_cast<int>(*p);
     }},
    {"ha", "xdp_mode", ValueKind::String,
     [](Reader& r, Config& c) {
         set_if(r.choice<XdpMode>({{"auto", XdpMode::Auto},
                                   {"native", XdpMode::Native},
                                   {"generic", XdpMode::Generic},
                                   {"userspace", XdpMode::Userspace}}),
                c.xdp_mode);
     }},
    {"ha", "bpf_pin_root", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"/sys/fs/bpf/fcm-ha\""), c.bpf_pin_root); }},
    {"ha", "node_name", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"fcm-a\""), c.node_name); }},

    {"paths", "state_dir", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"/var/lib/fcm-ha\""), c.state_dir); }},
    {"paths", "key_file", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"/etc/fcm-ha/ha.key\""), c.key_file); }},
    {"paths", "control_socket", ValueKind::String,
     [](Reader& r, Config& c) {
         set_if(r.string("\"/run/fcm-ha/agent.sock\""), c.control_socket);
     }},

    {"metrics", "listen", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"127.0.0.1:9529\""), c.metrics_listen); }},

    {"sync", "port", ValueKind::Integer,
     [](Reader& r, Config& c) {
         if (auto p = r.integer(0, 65535, kSyncPortRangeMessage)) {
             if (*p == 0)
                 r.bad(kSyncPortZeroMessage);
             else
                 c.sync_port = static_cast<std::uint16_t>(*p);
         }
     }},
    {"sync", "full_backup_time", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.time_of_day(), c.full_backup_time); }},
    {"sync", "switch_drain_timeout", ValueKind::Duration,
     [](Reader& r, Config& c) { set_if(r.duration(kDrainRule), c.switch_drain_timeout); }},

    {"service", "unit", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"kamailio.service\""), c.service.unit); }},
    {"service", "start", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"kamailio -DD\""), c.service.start); }},
    {"service", "stop", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"kamctl stop\""), c.service.stop); }},
    {"service", "stop_timeout", ValueKind::Duration,
     [](Reader& r, Config& c) { set_if(r.duration(kStopTimeoutRule), c.service.stop_timeout); }},
    {"service", "probe", ValueKind::String,
     [](Reader& r, Config& c) {
         set_if(r.choice<ProbeKind>({{"none", ProbeKind::None},
                                     {"sip", ProbeKind::SipOptions},
                                     {"command", ProbeKind::Command}}),
                c.service.probe);
     }},
    {"service", "sip_target", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"198.18.1.100:5060\""), c.service.sip_target); }},
    {"service", "probe_command", ValueKind::String,
     [](Reader& r, Config& c) {
         set_if(r.string("\"/usr/local/bin/pbx-alive\""), c.service.probe_command);
     }},
    {"service", "probe_interval", ValueKind::Duration,
     [](Reader& r, Config& c) {
         set_if(r.duration(kProbeIntervalRule), c.service.probe_interval);
     }},
    {"service", "probe_timeout", ValueKind::Duration,
     [](Reader& r, Config& c) { set_if(r.duration(kProbeTimeoutRule), c.service.probe_timeout); }},
    {"service", "probe_failures", ValueKind::Integer,
     [](Reader& r, Config& c) {
         if (auto n = r.integer(1, 100, kProbeFailuresMessage))
             c.service.probe_failures = static_cast<std::uint32_t>(*n);
     }},
    {"service", "core_dump_dir", ValueKind::String,
     [](Reader& r, Config& c) { set_if(r.string("\"/var/crash\""), c.service.core_dump_dir); }},
    {"service", "fault_action", ValueKind::String,
     [](Reader& r, Config& c) {
         set_if(r.choice<FaultAction>(
                    {{"restart", FaultAction::RestartService}, {"reboot", FaultAction::Reboot}}),
                c.service.fault_action);
     }},
    {"service", "prestart_on_standby", ValueKind::Bool,
     [](Reader& r, Config& c) { set_if(r.boolean(), c.service.prestart_on_standby); }},

    {"log", "level", ValueKind::String,
     [](Reader& r, Config& c) {
         if (auto l = r.string("\"info\"")) {
             if (valid_log_level(*l))
                 c.log_level = *l;
             else
                 r.bad(kLogLevelMessage);
         }
     }},
};

constexpr std::string_view kTables[] = {"ha", "paths", "metrics", "sync", "service", "log"};
constexpr std::string_view kSyncRootExample =
    "[[sync.root]] tables, each with path = \"/abs/dir\" and mode = \"file\", \"append\" or "
    "\"sqlite\"";

const KeyInfo* find_key(std::string_view table, std::string_view name) {
    for (const auto& k : kKeys)
        if (k.table == table && k.name == name) return &k;
    return nullptr;
}

const std::vector<std::string>& known_keys() {
    static const std::vector<std::string> keys = [] {
        std::vector<std::string> v;
        for (const auto& k : kKeys) v.push_back(fmt::format("{}.{}", k.table, k.name));
        v.emplace_back("sync.root");
        return v;
    }();
    return keys;
}

void report_unknown(Reader& r, const std::string& key, const toml::node& node,
                    const std::vector<std::string>& candidates) {
    r.at(key, node);
    if (node.is_table()) {
        std::vector<std::string> tables(std::begin(kTables), std::end(kTables));
        tables.emplace_back("sync.root");
        r.bad(fmt::format("unknown table '[{}]'{}", key, suggestion(key, tables)));
    } else {
        r.bad(fmt::format("unknown key '{}'{}", key, suggestion(key, candidates)));
    }
}

void read_sync_roots(Reader& r, const toml::node& node, Config& c) {
    const auto* arr = node.as_array();
    if (arr == nullptr || !arr->is_array_of_tables()) {
        r.at("sync.root", node);
        r.bad(fmt::format("must be written as {}", kSyncRootExample));
        return;
    }
    for (std::size_t i = 0; i < arr->size(); ++i) {
        const toml::table& t = *arr->get(i)->as_table();
        const std::string prefix = fmt::format("sync.root[{}]", i);
        const std::vector<std::string> candidates = {prefix + ".path", prefix + ".mode"};
        SyncRoot root;
        bool has_path = false;
        for (auto&& [k, v] : t) {
            const std::string key = fmt::format("{}.{}", prefix, k.str());
            if (k.str() == "path") {
                r.at(key, v);
                if (auto p = r.string("\"/var/lib/pbx/db\"")) root.path = *p;
                has_path = true;
            } else if (k.str() == "mode") {
                r.at(key, v);
                set_if(r.choice<SyncMode>({{"file", SyncMode::File},
                                           {"append", SyncMode::Append},
                                           {"sqlite", SyncMode::Sqlite}}),
                       root.mode);
            } else {
                report_unknown(r, key, v, candidates);
            }
        }
        if (!has_path)
            r.issue(prefix + ".path", "", "required: the absolute directory to mirror", line_of(t));
        // Kept even when bad so indices in later messages match the file.
        c.sync_roots.push_back(std::move(root));
    }
}

}  // namespace

ConfigReport parse_config(std::string_view toml_text) {
    ConfigReport report;
    auto parsed = toml::parse(toml_text);
    if (!parsed) {
        const auto& err = parsed.error();
        report.issues.push_back(
            ConfigIssue{"", "",
                        fmt::format("syntax error at column {}: {}", err.source().begin.column,
                                    err.description()),
                        static_cast<int>(err.source().begin.line)});
        return report;
    }

    Config config;
    std::vector<ConfigIssue> issues;
    std::map<std::string, Written> written;
    Reader r(issues, written);
    for (auto&& [tk, tv] : parsed.table()) {
        const std::string table(tk.str());
        if (std::find(std::begin(kTables), std::end(kTables), table) == std::end(kTables)) {
            report_unknown(r, table, tv, known_keys());
            continue;
        }
        const auto* tbl = tv.as_table();
        if (tbl == nullptr) {
            r.at(table, tv);
            r.bad(fmt::format("must be a table: write [{}] on a line of its own", table));
            continue;
        }
        for (auto&& [k, v] : *tbl) {
            const std::string key = fmt::format("{}.{}", table, k.str());
            if (key == "sync.root") {
                read_sync_roots(r, v, config);
                continue;
            }
            const KeyInfo* info = find_key(table, k.str());
            if (info == nullptr) {
                report_unknown(r, key, v, known_keys());
                continue;
            }
            r.at(key, v);
            info->apply(r, config);
        }
    }

    // A key that was already reported kept its default; checks that involve it (by key or by
    // naming it in the message) would describe the default, not the file, so they are dropped.
    std::set<std::string> reported;
    for (const auto& i : issues) reported.insert(i.key);
    for (auto& i : validate(config)) {
        bool involves_reported = reported.contains(i.key);
        for (const auto& k : reported)
            if (!k.empty() && i.message.find(k) != std::string::npos) involves_reported = true;
        if (involves_reported) continue;
        if (auto w = written.find(i.key); w != written.end()) {
            i.line = w->second.line;
            i.value = w->second.text;
        }
        issues.push_back(std::move(i));
    }
    std::stable_sort(issues.begin(), issues.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
        // Issues without a line (missing keys) go last.
        auto order = [](int line) { return line > 0 ? line : INT32_MAX; };
        return order(a.line) < order(b.line);
    });
    if (issues.empty()) report.config = std::move(config);
    report.issues = std::move(issues);
    return report;
}

// ---------------------------------------------------------------------------------------------
// set_config_value()

namespace {

bool is_integer_text(std::string_view v) {
    if (!v.empty() && (v.front() == '-' || v.front() == '+')) v.remove_prefix(1);
    return !v.empty() &&
           std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_quoted(std::string_view v) {
    return v.size() >= 2 &&
           ((v.front() == '"' && v.back() == '"') || (v.front() == '\'' && v.back() == '\''));
}

// The CLI's value as a TOML literal of the key's type. A value of the wrong kind is quoted, so the
// re-parse reports it with the key's own message instead of a syntax error.
std::string to_literal(ValueKind kind, std::string_view value) {
    switch (kind) {
        case ValueKind::Bool: {
            std::string lower(value);
            std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
                return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
            });
            // The guide's UI says Yes/No and On/Off.
            if (lower == "true" || lower == "yes" || lower == "on") return "true";
            if (lower == "false" || lower == "no" || lower == "off") return "false";
            return is_quoted(value) ? std::string(value) : toml_quote(value);
        }
        case ValueKind::Integer:
        case ValueKind::Duration:
            if (is_integer_text(value)) return std::string(value);
            return is_quoted(value) ? std::string(value) : toml_quote(value);
        case ValueKind::String:
            return is_quoted(value) ? std::string(value) : toml_quote(value);
    }
    return toml_quote(value);
}

// Index just past the value that starts at `i` (strings, arrays and inline tables may span
// lines; a bare value ends at a comment or the end of the line).
std::size_t value_end(std::string_view t, std::size_t i) {
    const std::size_t n = t.size();
    if (i >= n) return n;
    if (t.substr(i, 3) == "\"\"\"" || t.substr(i, 3) == "'''") {
        const std::string_view delim = t.substr(i, 3);
        std::size_t j = i + 3;
        while (true) {
            std::size_t k = t.find(delim, j);
            if (k == std::string_view::npos) return n;
            if (delim[0] == '"') {
                std::size_t slashes = 0;
                while (k > slashes && t[k - 1 - slashes] == '\\') ++slashes;
                if (slashes % 2 == 1) {
                    j = k + 1;
                    continue;
                }
            }
            std::size_t e = k + 3;
            // Up to two quotes right before the closing delimiter belong to the string.
            while (e < n && e < k + 5 && t[e] == delim[0]) ++e;
            return e;
        }
    }
    if (t[i] == '"') {
        std::size_t j = i + 1;
        while (j < n && t[j] != '"' && t[j] != '\n') j += (t[j] == '\\') ? 2 : 1;
        return std::min(j + 1, n);
    }
    if (t[i] == '\'') {
        std::size_t k = t.find('\'', i + 1);
        return k == std::string_view::npos ? n : k + 1;
    }
    if (t[i] == '[' || t[i] == '{') {
        int depth = 0;
        std::size_t j = i;
        while (j < n) {
            const char ch = t[j];
            if (ch == '"' || ch == '\'') {
                j = value_end(t, j);
                continue;
            }
            if (ch == '#') {
                j = t.find('\n', j);
                if (j == std::string_view::npos) return n;
                continue;
            }
            if (ch == '[' || ch == '{') ++depth;
            if ((ch == ']' || ch == '}') && --depth == 0) return j + 1;
            ++j;
        }
        return n;
    }
    std::size_t j = i;
    while (j < n && t[j] != '\n' && t[j] != '#') ++j;
    while (j > i && (t[j - 1] == ' ' || t[j - 1] == '\t' || t[j - 1] == '\r')) --j;
    return j;
}

// "ha", " ha ", "\"ha\"" -> ha; "a . b" -> a.b
std::string normalize_key(std::string_view k) {
    std::string out;
    for (char c : k)
        if (c != ' ' && c != '\t' && c != '"' && c != '\'' && c != '\r') out += c;
    return out;
}

struct KeyLocation {
    bool table_found = false;
    std::size_t insert_at = 0;  // just past the last line of the table's last key
    std::optional<std::pair<std::size_t, std::size_t>> value;  // [begin, end) in the text
};

KeyLocation locate(std::string_view t, std::string_view table, std::string_view name) {
    KeyLocation loc;
    bool in_table = false;
    std::size_t pos = 0;
    auto line_end = [&](std::size_t from) {
        std::size_t e = t.find('\n', from);
        return e == std::string_view::npos ? t.size() : e;
    };
    while (pos < t.size()) {
        const std::size_t eol = line_end(pos);
        std::size_t i = pos;
        while (i < eol && (t[i] == ' ' || t[i] == '\t')) ++i;
        if (i == eol || t[i] == '#' || t[i] == '\r') {
            pos = eol + 1;
            continue;
        }
        if (t[i] == '[') {
            const bool array = i + 1 < eol && t[i + 1] == '[';
            const std::size_t b = i + (array ? 2 : 1);
            std::size_t e = t.find(']', b);
            if (e == std::string_view::npos || e > eol) e = eol;
            in_table = !array && normalize_key(t.substr(b, e - b)) == table;
            if (in_table) {
                loc.table_found = true;
                loc.insert_at = std::min(eol + 1, t.size());
            }
            pos = eol + 1;
            continue;
        }
        const std::size_t eq = t.find('=', i);
        if (eq == std::string_view::npos || eq > eol) {
            pos = eol + 1;
            continue;
        }
        std::size_t vb = eq + 1;
        while (vb < t.size() && (t[vb] == ' ' || t[vb] == '\t')) ++vb;
        const std::size_t ve = value_end(t, vb);
        const std::size_t stmt_end = line_end(ve);
        if (in_table) {
            if (!loc.value && normalize_key(t.substr(i, eq - i)) == name)
                loc.value = std::pair{vb, ve};
            loc.insert_at = std::min(stmt_end + 1, t.size());
        }
        pos = stmt_end + 1;
    }
    return loc;
}

std::string edit_text(std::string_view text, std::string_view table, std::string_view name,
                      const std::string& literal) {
    const KeyLocation loc = locate(text, table, name);
    std::string out(text);
    if (loc.value) {
        out.replace(loc.value->first, loc.value->second - loc.value->first, literal);
        return out;
    }
    const std::string line = fmt::format("{} = {}\n", name, literal);
    if (loc.table_found) {
        std::size_t at = loc.insert_at;
        std::string insert = line;
        if (at == out.size() && !out.empty() && out.back() != '\n') insert = "\n" + insert;
        out.insert(at, insert);
        return out;
    }
    if (!out.empty() && out.back() != '\n') out += '\n';
    if (!out.empty()) out += '\n';
    out += fmt::format("[{}]\n{}", table, line);
    return out;
}

}  // namespace

Result<std::string> set_config_value(std::string_view toml_text, std::string_view key,
                                     std::string_view value) {
    const auto dot = key.find('.');
    const KeyInfo* info =
        dot == std::string_view::npos ? nullptr : find_key(key.substr(0, dot), key.substr(dot + 1));
    if (info == nullptr) {
        if (key.substr(0, 9) == "sync.root")
            return fail("sync.root entries are edited in the file, not with config set");
        return fail(fmt::format("unknown key '{}'{}", key, suggestion(key, known_keys())));
    }
    const std::string literal = to_literal(info->kind, value);
    std::string edited = edit_text(toml_text, info->table, info->name, literal);

    ConfigReport report = parse_config(edited);
    if (!report.issues.empty()) {
        std::string list;
        for (const auto& issue : report.issues) {
            if (!list.empty()) list += "; ";
            list += issue.to_string();
        }
        return fail(fmt::format("config set {} {}: {}", key, value, list));
    }
    // The file may spell the key in a form the line editor does not see (a dotted key at the top,
    // an inline table); then the new value would not be the one in effect.
    auto doc = toml::parse(edited);
    auto lit = toml::parse("v = " + literal);
    const toml::node* now = doc ? doc.table().at_path(key).node() : nullptr;
    const toml::node* want = lit ? lit.table().get("v") : nullptr;
    if (now == nullptr || want == nullptr || render(*now) != render(*want))
        return fail(fmt::format(
            "config set {}: the file writes this key in a form config set cannot edit; edit the "
            "file by hand",
            key));
    return edited;
}

}  // namespace ha::core
