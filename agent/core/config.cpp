#include "agent/core/config.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>

#include <fmt/format.h>

#include "agent/core/config_rules.hpp"
#include "common/duration.hpp"

namespace ha::core {

using std::chrono::nanoseconds;
using namespace std::chrono_literals;
using namespace config_rules;

std::string config_rules::toml_quote(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (ch) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\r':
                out += "\\r";
                break;
            default:
                if (c < 0x20 || c == 0x7f)
                    out += fmt::format("\\u{:04x}", c);
                else
                    out += ch;
        }
    }
    return out + '"';
}

std::string_view to_string(StationType t) {
    switch (t) {
        case StationType::Primary:
            return "primary";
        case StationType::Secondary:
            return "secondary";
    }
    return "unknown";
}

std::string_view to_string(SyncMode m) {
    switch (m) {
        case SyncMode::File:
            return "file";
        case SyncMode::Append:
            return "append";
        case SyncMode::Sqlite:
            return "sqlite";
    }
    return "unknown";
}

std::string_view to_string(FaultAction a) {
    switch (a) {
        case FaultAction::RestartService:
            return "restart";
        case FaultAction::Reboot:
            return "reboot";
    }
    return "unknown";
}

std::string_view to_string(ProbeKind k) {
    switch (k) {
        case ProbeKind::None:
            return "none";
        case ProbeKind::SipOptions:
            return "sip";
        case ProbeKind::Command:
            return "command";
    }
    return "unknown";
}

std::string_view to_string(XdpMode m) {
    switch (m) {
        case XdpMode::Auto:
            return "auto";
        case XdpMode::Native:
            return "native";
        case XdpMode::Generic:
            return "generic";
        case XdpMode::Userspace:
            return "userspace";
    }
    return "unknown";
}

nanoseconds Config::effective_interval() const {
    return heartbeat_interval.count() > 0 ? heartbeat_interval : heartbeat_timeout / 10;
}

nanoseconds Config::effective_lan_interval() const {
    return lan_heartbeat_interval.count() > 0 ? lan_heartbeat_interval : 4 * effective_interval();
}

std::string ConfigIssue::to_string() const {
    std::string out = key;
    if (!value.empty()) out += (out.empty() ? "" : " = ") + value;
    if (line > 0)
        out += out.empty() ? fmt::format("line {}", line) : fmt::format(" (line {})", line);
    if (!out.empty()) out += ": ";
    return out + message;
}

std::optional<int> minute_of_day(std::string_view t) {
    if (t.size() != 5 || t[2] != ':') return std::nullopt;
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (!digit(t[0]) || !digit(t[1]) || !digit(t[3]) || !digit(t[4])) return std::nullopt;
    const int h = (t[0] - '0') * 10 + (t[1] - '0');
    const int m = (t[3] - '0') * 10 + (t[4] - '0');
    if (h >= 24 || m >= 60) return std::nullopt;
    return h * 60 + m;
}

Result<Endpoint> parse_endpoint(std::string_view text) {
    auto bad = [&] {
        return fail(fmt::format(
            "'{}' is not ADDRESS:PORT (such as 198.18.0.1:9529 or [fd00:4a::1]:9529)", text));
    };
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return bad();
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return bad();
        host = text.substr(0, colon);
        // An unbracketed IPv6 address makes the port ambiguous ("::1:80").
        if (host.find(':') != std::string_view::npos) return bad();
        port = text.substr(colon + 1);
    }
    auto addr = IpAddr::parse(host);
    if (!addr) return bad();
    if (text.front() == '[' && !addr->is_v6()) return bad();
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p == 0 ||
        p > 65535)
        return fail(fmt::format("'{}' has a bad port (1-65535)", text));
    return Endpoint{*addr, static_cast<std::uint16_t>(p)};
}

// ---------------------------------------------------------------------------------------------
// validate()

namespace {

class IssueList {
  public:
    void add(std::string key, std::string value, std::string_view message) {
        issues_.push_back(ConfigIssue{std::move(key), std::move(value), std::string(message), 0});
    }
    std::vector<ConfigIssue> take() { return std::move(issues_); }

  private:
    std::vector<ConfigIssue> issues_;
};

std::string dur(nanoseconds d) {
    return d.count() == 0 ? "0s" : format_duration(d);
}

void check_duration(IssueList& out, const std::string& key, nanoseconds d,
                    const DurationRule& rule) {
    if (!rule.accepts(d)) out.add(key, toml_quote(dur(d)), rule.message());
}

// IFNAMSIZ is 16 including the terminating NUL; '/' and whitespace cannot appear in a name.
bool valid_ifname(std::string_view name) {
    if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
    return std::none_of(name.begin(), name.end(), [](char c) {
        return c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n' ||
               static_cast<unsigned char>(c) < 0x21;
    });
}

bool valid_node_name(std::string_view name) {
    if (name.size() > 64) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';
    });
}

// Why `a` cannot be a box's unicast address, or empty when it can: not unspecified, multicast,
// limited broadcast or loopback (another box can never reach 127.0.0.1 or ::1), nor an
// IPv4-mapped IPv6 address (the kernel would not put it on the wire as IPv6).
std::string_view host_problem(const IpAddr& a) {
    const auto& b = a.bytes;
    if (a.is_v4()) {
        const std::uint32_t v = (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) |
                                (std::uint32_t{b[2]} << 8) | b[3];
        if (v == 0) return "is the unspecified address";
        if (v == 0xffffffffU) return "is the limited broadcast address";
        if ((b[0] & 0xf0) == 0xe0) return "is a multicast address";
        if (b[0] == 127) return "is a loopback address (the peer cannot reach it)";
        return {};
    }
    if (a.is_v6()) {
        if (b[0] == 0xff) return "is a multicast address";
        const bool zero10 = std::all_of(b.begin(), b.begin() + 10, [](auto x) { return x == 0; });
        const bool zero15 =
            zero10 && std::all_of(b.begin() + 10, b.begin() + 15, [](auto x) { return x == 0; });
        if (zero15 && b[15] == 0) return "is the unspecified address";
        if (zero15 && b[15] == 1) return "is the loopback address (the peer cannot reach it)";
        if (zero10 && b[10] == 0xff && b[11] == 0xff)
            return "is an IPv4-mapped address: write the IPv4 address itself";
        return {};
    }
    return "is not an IP address";
}

void check_host(IssueList& out, const std::string& key, const IpAddr& a) {
    if (auto why = host_problem(a); !why.empty())
        out.add(key, toml_quote(a.to_string()),
                fmt::format("{}: must be a unicast host address such as \"198.18.0.2\"", why));
}

// The cluster IP is where phones and trunks register: besides being a unicast host address it
// must not be the network or broadcast address of its own prefix (the kernel would accept it,
// but hosts on the LAN would treat it as the subnet's), nor link-local (not routable, so phones
// in other subnets could not reach it; an IPv6 link-local one would also need a scope).
void check_cluster_ip(IssueList& out, const IpPrefix& p) {
    const std::string key = "ha.cluster_ip";
    const std::string shown = toml_quote(p.to_string());
    if (auto why = host_problem(p.addr); !why.empty()) {
        out.add(key, shown,
                fmt::format("{}: must be a unicast host address such as \"198.18.1.100/24\"", why));
        return;
    }
    const auto& b = p.addr.bytes;
    if ((p.addr.is_v4() && b[0] == 169 && b[1] == 254) ||
        (p.addr.is_v6() && b[0] == 0xfe && (b[1] & 0xc0) == 0x80)) {
        out.add(key, shown,
                "is a link-local address: phones outside the link could not reach it; use an "
                "address of the LAN's subnet such as \"198.18.1.100/24\"");
        return;
    }
    // Host bits of the address under its prefix: all zero or (IPv4) all one.
    const int bits = p.addr.is_v4() ? 32 : 128;
    if (p.len >= bits - 1) return;  // /31, /32, /127, /128: every address is a host
    bool all_zero = true;
    bool all_one = true;
    for (int i = p.len; i < bits; ++i) {
        const bool bit = ((b[static_cast<std::size_t>(i / 8)] >> (7 - i % 8)) & 1) != 0;
        all_zero = all_zero && !bit;
        all_one = all_one && bit;
    }
    if (all_zero)
        out.add(key, shown,
                p.addr.is_v4()
                    ? "is the network address of its subnet: use a host address inside it"
                    : "is the subnet-router anycast address of its prefix (RFC 4291 2.6.1): use a "
                      "host address inside it");
    else if (all_one && p.addr.is_v4())
        out.add(key, shown, "is the broadcast address of its subnet: use a host address inside it");
}

// "/a/b/" and "/a//b" name the same directory as "/a/b"; comparisons use this form.
std::string normalize_path(std::string_view p) {
    std::string out;
    for (char c : p) {
        if (c == '/' && !out.empty() && out.back() == '/') continue;
        out += c;
    }
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out;
}

bool has_dot_component(std::string_view p) {
    std::size_t pos = 0;
    while (pos <= p.size()) {
        auto next = p.find('/', pos);
        if (next == std::string_view::npos) next = p.size();
        auto part = p.substr(pos, next - pos);
        if (part == "." || part == "..") return true;
        pos = next + 1;
    }
    return false;
}

bool is_inside(const std::string& inner, const std::string& outer) {
    if (outer == "/") return true;
    return inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
           inner[outer.size()] == '/';
}

void check_abs_path(IssueList& out, const std::string& key, const std::string& path,
                    bool allow_empty) {
    if (path.empty()) {
        if (!allow_empty) out.add(key, "\"\"", "must be an absolute path");
        return;
    }
    if (path.front() != '/' || has_dot_component(path))
        out.add(key, toml_quote(path),
                "must be an absolute path without '.' or '..' components, such as \"/var/lib/x\"");
}

void check_ha(const Config& c, IssueList& out) {
    if (c.enable) {
        const char* req = "required when ha.enable = true";
        if (!c.station_type)
            out.add("ha.station_type", "", fmt::format("{} (\"primary\" or \"secondary\")", req));
        if (!c.cluster_ip)
            out.add("ha.cluster_ip", "", fmt::format("{} (such as \"198.18.1.100/24\")", req));
        if (!c.peer_ip) out.add("ha.peer_ip", "", fmt::format("{} (such as \"198.18.0.2\")", req));
        if (c.heartbeat_interface.empty())
            out.add("ha.heartbeat_interface", "",
                    fmt::format("{} (the NIC of the direct heartbeat link)", req));
        if (c.lan_interface.empty())
            out.add("ha.lan_interface", "",
                    fmt::format("{} (the NIC that carries the cluster IP)", req));
    }
    if (c.cluster_ip) check_cluster_ip(out, *c.cluster_ip);
    if (c.peer_ip) check_host(out, "ha.peer_ip", *c.peer_ip);
    if (c.peer_lan_ip) check_host(out, "ha.peer_lan_ip", *c.peer_lan_ip);
    if (c.cluster_ip && c.peer_ip && c.cluster_ip->addr == *c.peer_ip)
        out.add("ha.peer_ip", toml_quote(c.peer_ip->to_string()),
                "must differ from ha.cluster_ip: the cluster IP moves between the boxes, the peer "
                "IP is the peer's own address");
    if (c.cluster_ip && c.peer_lan_ip && c.cluster_ip->addr == *c.peer_lan_ip)
        out.add("ha.peer_lan_ip", toml_quote(c.peer_lan_ip->to_string()),
                "must differ from ha.cluster_ip: it is the peer's own LAN address");
    if (c.peer_ip && c.peer_lan_ip && *c.peer_ip == *c.peer_lan_ip)
        out.add("ha.peer_lan_ip", toml_quote(c.peer_lan_ip->to_string()),
                "must differ from ha.peer_ip: the LAN path is a second, independent path");
    if (c.peer_mac && (c.peer_mac->is_zero() || (c.peer_mac->bytes[0] & 1) != 0))
        out.add("ha.peer_mac", toml_quote(c.peer_mac->to_string()),
                "must be a unicast MAC address such as \"02:00:00:00:00:02\"");
    if (c.heartbeat_port == 0) out.add("ha.heartbeat_port", "0", kPortZeroMessage);

    check_duration(out, "ha.heartbeat_timeout", c.heartbeat_timeout, kTimeoutRule);
    check_duration(out, "ha.heartbeat_interval", c.heartbeat_interval, kIntervalRule);
    check_duration(out, "ha.lan_heartbeat_interval", c.lan_heartbeat_interval, kLanIntervalRule);
    // At least two probes must fit in one timeout, or a single lost probe means a takeover.
    if (c.heartbeat_interval.count() > 0 && kTimeoutRule.accepts(c.heartbeat_timeout) &&
        c.heartbeat_interval * 2 >= c.heartbeat_timeout)
        out.add("ha.heartbeat_interval", toml_quote(dur(c.heartbeat_interval)),
                fmt::format("must be less than half of ha.heartbeat_timeout ({}), so at least two "
                            "probes fit in one timeout",
                            dur(c.heartbeat_timeout)));
    if (c.lan_heartbeat_interval.count() > 0 && kTimeoutRule.accepts(c.heartbeat_timeout) &&
        c.lan_heartbeat_interval >= c.heartbeat_timeout)
        out.add(
            "ha.lan_heartbeat_interval", toml_quote(dur(c.lan_heartbeat_interval)),
            fmt::format("must be less than ha.heartbeat_timeout ({})", dur(c.heartbeat_timeout)));

    for (auto [key, name] : {std::pair{"ha.heartbeat_interface", &c.heartbeat_interface},
                             std::pair{"ha.lan_interface", &c.lan_interface}}) {
        if (!name->empty() && !valid_ifname(*name))
            out.add(key, toml_quote(*name),
                    "must be a network interface name of 1-15 characters without '/', ':' or "
                    "spaces");
    }
    if (!c.heartbeat_interface.empty() && c.heartbeat_interface == c.lan_interface)
        out.add("ha.lan_interface", toml_quote(c.lan_interface),
                "must differ from ha.heartbeat_interface: the guide puts the heartbeat on a "
                "direct link of its own");
    if (c.prober_rt_priority < 0 || c.prober_rt_priority > 99)
        out.add("ha.prober_rt_priority", std::to_string(c.prober_rt_priority), kRtPriorityMessage);
    if (c.prober_cpu < -1 || c.prober_cpu > 1023)
        out.add("ha.prober_cpu", std::to_string(c.prober_cpu), kProberCpuMessage);
    check_abs_path(out, "ha.bpf_pin_root", c.bpf_pin_root, false);
    if (!valid_node_name(c.node_name))
        out.add("ha.node_name", toml_quote(c.node_name), kNodeNameMessage);
}

void check_paths(const Config& c, IssueList& out) {
    check_abs_path(out, "paths.state_dir", c.state_dir, false);
    check_abs_path(out, "paths.key_file", c.key_file, false);
    check_abs_path(out, "paths.control_socket", c.control_socket, false);
    // sockaddr_un.sun_path holds 108 bytes including the NUL.
    if (c.control_socket.size() > 107)
        out.add("paths.control_socket", toml_quote(c.control_socket),
                "must be at most 107 characters (the limit of a Unix socket path)");
    if (!c.metrics_listen.empty()) {
        auto ep = parse_endpoint(c.metrics_listen);
        if (!ep)
            out.add("metrics.listen", toml_quote(c.metrics_listen), kMetricsListenMessage);
        else if (ep->port == c.sync_port)
            out.add("metrics.listen", toml_quote(c.metrics_listen),
                    fmt::format("must not use sync.port ({})", c.sync_port));
    }
    if (!valid_log_level(c.log_level))
        out.add("log.level", toml_quote(c.log_level), kLogLevelMessage);
}

void check_sync(const Config& c, IssueList& out) {
    if (c.sync_port == 0) out.add("sync.port", "0", kSyncPortZeroMessage);
    if (!minute_of_day(c.full_backup_time))
        out.add("sync.full_backup_time", toml_quote(c.full_backup_time), kBackupTimeMessage);
    check_duration(out, "sync.switch_drain_timeout", c.switch_drain_timeout, kDrainRule);

    std::vector<std::string> seen;
    const std::string state = normalize_path(c.state_dir);
    for (std::size_t i = 0; i < c.sync_roots.size(); ++i) {
        const auto& root = c.sync_roots[i];
        const std::string key = fmt::format("sync.root[{}].path", i);
        const std::string shown = toml_quote(root.path);
        if (root.path.empty() || root.path.front() != '/' || has_dot_component(root.path)) {
            out.add(key, shown, "must be an absolute directory without '.' or '..' components");
            continue;
        }
        const std::string norm = normalize_path(root.path);
        if (norm == "/") {
            out.add(key, shown, "must not be / (the whole file system)");
            continue;
        }
        for (std::size_t j = 0; j < seen.size(); ++j) {
            if (seen[j].empty()) continue;
            if (seen[j] == norm)
                out.add(key, shown, fmt::format("duplicates sync.root[{}]", j));
            else if (is_inside(norm, seen[j]))
                out.add(key, shown, fmt::format("is inside sync.root[{}] ({})", j, seen[j]));
            else if (is_inside(seen[j], norm))
                out.add(key, shown, fmt::format("contains sync.root[{}] ({})", j, seen[j]));
        }
        // The agent's own state (journal, sync progress) must not be mirrored to the peer.
        if (!state.empty() && (state == norm || is_inside(state, norm)))
            out.add(key, shown,
                    fmt::format("must not contain paths.state_dir ({}): the agent's own state "
                                "is per box",
                                state));
        seen.resize(i);
        seen.push_back(norm);
    }
}

void check_service(const Config& c, IssueList& out) {
    const auto& s = c.service;
    if (!s.start.empty() && !s.unit.empty())
        out.add("service.start", toml_quote(s.start),
                "service.start and service.unit cannot both be set: the PBX runs either as a "
                "systemd unit or as a command");
    if (!s.stop.empty() && s.start.empty())
        out.add("service.stop", toml_quote(s.stop),
                "needs service.start (with service.unit, systemd stops the unit)");
    if (!s.unit.empty() &&
        (s.unit.find('/') != std::string::npos || s.unit.find(' ') != std::string::npos))
        out.add("service.unit", toml_quote(s.unit),
                "must be a systemd unit name such as \"kamailio.service\"");
    check_duration(out, "service.stop_timeout", s.stop_timeout, kStopTimeoutRule);
    check_duration(out, "service.probe_interval", s.probe_interval, kProbeIntervalRule);
    check_duration(out, "service.probe_timeout", s.probe_timeout, kProbeTimeoutRule);
    if (kProbeIntervalRule.accepts(s.probe_interval) &&
        kProbeTimeoutRule.accepts(s.probe_timeout) && s.probe_timeout > s.probe_interval)
        out.add("service.probe_timeout", toml_quote(dur(s.probe_timeout)),
                fmt::format("must not exceed service.probe_interval ({})", dur(s.probe_interval)));
    if (s.probe_failures < 1 || s.probe_failures > 100)
        out.add("service.probe_failures", std::to_string(s.probe_failures), kProbeFailuresMessage);
    switch (s.probe) {
        case ProbeKind::Command:
            if (s.probe_command.empty())
                out.add("service.probe_command", "",
                        "required when service.probe = \"command\" (a command that exits 0 "
                        "while the PBX is healthy)");
            break;
        case ProbeKind::SipOptions:
            if (s.sip_target.empty() && c.enable && !c.cluster_ip)
                out.add("service.sip_target", "",
                        "required when service.probe = \"sip\" and ha.cluster_ip is not set");
            break;
        case ProbeKind::None:
            break;
    }
    if (!s.sip_target.empty() && !parse_endpoint(s.sip_target))
        out.add("service.sip_target", toml_quote(s.sip_target), kSipTargetMessage);
    check_abs_path(out, "service.core_dump_dir", s.core_dump_dir, true);
}

}  // namespace

std::vector<ConfigIssue> validate(const Config& config) {
    IssueList out;
    check_ha(config, out);
    check_paths(config, out);
    check_sync(config, out);
    check_service(config, out);
    return out.take();
}

// ---------------------------------------------------------------------------------------------
// to_toml()

namespace {

class TomlWriter {
  public:
    void table(std::string_view name, std::string_view comment) {
        if (!out_.empty()) out_ += '\n';
        if (!comment.empty()) out_ += fmt::format("# {}\n", comment);
        out_ += fmt::format("[{}]\n", name);
    }
    void array_table(std::string_view name) { out_ += fmt::format("\n[[{}]]\n", name); }
    void set(std::string_view key, std::string_view literal, std::string_view comment = {}) {
        if (!comment.empty()) out_ += fmt::format("# {}\n", comment);
        out_ += fmt::format("{} = {}\n", key, literal);
    }
    // Optional keys that are unset stay visible, commented out, so `config show` documents them.
    void unset(std::string_view key, std::string_view example, std::string_view comment) {
        if (!comment.empty()) out_ += fmt::format("# {}\n", comment);
        out_ += fmt::format("# {} = {}\n", key, example);
    }
    std::string take() { return std::move(out_); }

  private:
    std::string out_;
};

std::string q(std::string_view s) {
    return toml_quote(s);
}

std::string timeout_literal(nanoseconds t) {
    if (t % 1s == 0ns) {
        auto secs = std::chrono::duration_cast<std::chrono::seconds>(t).count();
        if (secs >= kGuideMinTimeoutS && secs <= kGuideMaxTimeoutS) return std::to_string(secs);
    }
    return q(dur(t));
}

}  // namespace

std::string to_toml(const Config& c) {
    TomlWriter w;
    w.table("ha", "High availability: the guide's Table 1 first, then what the agent needs");
    w.set("enable", c.enable ? "true" : "false", "High Available Enable");
    if (c.station_type)
        w.set("station_type", q(to_string(*c.station_type)),
              "HA Station Type: primary | secondary");
    else
        w.unset("station_type", "\"primary\"", "HA Station Type: primary | secondary");
    if (c.cluster_ip)
        w.set("cluster_ip", q(c.cluster_ip->to_string()), "HA Cluster IP (address/prefix)");
    else
        w.unset("cluster_ip", "\"198.18.1.100/24\"", "HA Cluster IP (address/prefix)");
    if (c.peer_ip)
        w.set("peer_ip", q(c.peer_ip->to_string()), "HA Peer IP (on the heartbeat link)");
    else
        w.unset("peer_ip", "\"198.18.0.2\"", "HA Peer IP (on the heartbeat link)");
    if (c.peer_mac)
        w.set("peer_mac", q(c.peer_mac->to_string()), "HA Peer MAC Address");
    else
        w.unset("peer_mac", "\"02:00:00:00:00:02\"", "HA Peer MAC Address");
    w.set("heartbeat_port", std::to_string(c.heartbeat_port), "Heartbeat Port (UDP)");
    w.set("heartbeat_timeout", timeout_literal(c.heartbeat_timeout),
          "Heartbeat Timeout Period (s): 3-10, or a duration from 500us to 10s");
    w.set("software_fault_switch", c.software_fault_switch ? "true" : "false",
          "Software Fault Switch");
    w.set("hardware_fault_switch", c.hardware_fault_switch ? "true" : "false",
          "Hardware Fault Switch");
    w.set("heartbeat_interface", q(c.heartbeat_interface), "NIC of the direct heartbeat link");
    w.set("lan_interface", q(c.lan_interface), "NIC that carries the cluster IP");
    if (c.peer_lan_ip)
        w.set("peer_lan_ip", q(c.peer_lan_ip->to_string()), "Peer's LAN address (second path)");
    else
        w.unset("peer_lan_ip", "\"198.18.1.2\"", "Peer's LAN address (second path)");
    const std::string auto_interval =
        fmt::format("Probe interval; unset = timeout/10 = {}", dur(c.heartbeat_timeout / 10));
    if (c.heartbeat_interval.count() > 0)
        w.set("heartbeat_interval", q(dur(c.heartbeat_interval)), auto_interval);
    else
        w.unset("heartbeat_interval", q(dur(c.effective_interval())), auto_interval);
    const std::string auto_lan = fmt::format("LAN probe interval; unset = 4 x probe interval = {}",
                                             dur(4 * c.effective_interval()));
    if (c.lan_heartbeat_interval.count() > 0)
        w.set("lan_heartbeat_interval", q(dur(c.lan_heartbeat_interval)), auto_lan);
    else
        w.unset("lan_heartbeat_interval", q(dur(c.effective_lan_interval())), auto_lan);
    w.set("prober_rt_priority", std::to_string(c.prober_rt_priority),
          "SCHED_FIFO priority of the prober, 0-99 (0 = normal scheduling)");
    const char* cpu_note =
        "The one CPU the prober (and the NICs' NAPI threads) runs on, 0-1023; unset = any CPU";
    if (c.prober_cpu >= 0)
        w.set("prober_cpu", std::to_string(c.prober_cpu), cpu_note);
    else
        w.unset("prober_cpu", "0", cpu_note);
    w.set("xdp_mode", q(to_string(c.xdp_mode)), "auto | native | generic | userspace");
    w.set("bpf_pin_root", q(c.bpf_pin_root));
    w.set("node_name", q(c.node_name), "Shown in status and events; empty = host name");

    w.table("paths", "");
    w.set("state_dir", q(c.state_dir));
    w.set("key_file", q(c.key_file), "Shared 128-bit key (fcm-hactl keygen), mode 0600");
    w.set("control_socket", q(c.control_socket));

    w.table("metrics", "");
    w.set("listen", q(c.metrics_listen), "Prometheus text endpoint, ADDRESS:PORT; empty = off");

    w.table("sync", "Data sync from the active to the standby over the heartbeat link");
    w.set("port", std::to_string(c.sync_port), "TCP port");
    w.set("full_backup_time", q(c.full_backup_time), "Daily full backup, local time HH:MM");
    w.set("switch_drain_timeout", q(dur(c.switch_drain_timeout)),
          "How long a manual switch waits for the sync to drain");
    for (const auto& root : c.sync_roots) {
        w.array_table("sync.root");
        w.set("path", q(root.path));
        w.set("mode", q(to_string(root.mode)), "file | append | sqlite");
    }

    const auto& s = c.service;
    w.table("service", "The PBX the agent starts on the active box and watches");
    w.set("unit", q(s.unit), "systemd unit, or use start/stop");
    w.set("start", q(s.start));
    w.set("stop", q(s.stop), "empty = SIGTERM to the process group, SIGKILL after stop_timeout");
    w.set("stop_timeout", q(dur(s.stop_timeout)));
    w.set("probe", q(to_string(s.probe)), "Deadlock probe: none | sip | command");
    w.set("sip_target", q(s.sip_target), "ADDRESS:PORT; empty = cluster IP, port 5060");
    w.set("probe_command", q(s.probe_command));
    w.set("probe_interval", q(dur(s.probe_interval)));
    w.set("probe_timeout", q(dur(s.probe_timeout)));
    w.set("probe_failures", std::to_string(s.probe_failures),
          "Consecutive failed probes that make a software fault");
    w.set("core_dump_dir", q(s.core_dump_dir), "A new file here is a software fault; empty = off");
    w.set("fault_action", q(to_string(s.fault_action)), "restart | reboot");
    w.set("prestart_on_standby", s.prestart_on_standby ? "true" : "false");

    w.table("log", "");
    w.set("level", q(c.log_level), "error | warn | info | debug");
    return w.take();
}

}  // namespace ha::core
