// The agent's configuration: every parameter of the guide's Table 1 plus what the agent needs to
// run (interfaces, sync roots, PBX service, paths). Parsed from TOML by a pure function; validated
// as a whole so an operator sees every bad value at once. Reload never applies a bad file.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/net_types.hpp"
#include "common/result.hpp"

namespace ha::core {

enum class StationType : std::uint8_t { Primary = 1, Secondary = 2 };
enum class SyncMode : std::uint8_t { File, Append, Sqlite };
enum class FaultAction : std::uint8_t { RestartService, Reboot };
enum class ProbeKind : std::uint8_t { None, SipOptions, Command };
enum class XdpMode : std::uint8_t { Auto, Native, Generic, Userspace };

std::string_view to_string(StationType t);
std::string_view to_string(SyncMode m);
std::string_view to_string(FaultAction a);
std::string_view to_string(ProbeKind k);
std::string_view to_string(XdpMode m);

struct SyncRoot {
    std::string path;  // absolute directory on both boxes
    SyncMode mode = SyncMode::File;
    friend bool operator==(const SyncRoot&, const SyncRoot&) = default;
};

// How the PBX runs. Either `unit` (a systemd unit name) or `start` (a shell command the agent
// runs in its own process group and watches through a pidfd). `stop` is optional: by default
// the agent sends SIGTERM to the group, then SIGKILL after stop_timeout.
struct ServiceConfig {
    std::string unit;
    std::string start;
    std::string stop;
    std::chrono::nanoseconds stop_timeout = std::chrono::seconds(5);
    // Liveness probe (deadlock detection): SIP OPTIONS to sip_target, or a command that must exit
    // 0.
    ProbeKind probe = ProbeKind::None;
    std::string sip_target;  // "198.18.0.100:5060"; empty = cluster IP, port 5060
    std::string probe_command;
    std::chrono::nanoseconds probe_interval = std::chrono::seconds(1);
    std::chrono::nanoseconds probe_timeout = std::chrono::milliseconds(500);
    std::uint32_t probe_failures = 3;  // consecutive failures that make a deadlock fault
    std::string core_dump_dir;         // a new file here is a software fault; empty = not watched
    FaultAction fault_action = FaultAction::RestartService;
    bool prestart_on_standby = false;  // keep the PBX running on the standby (it never has the IP)
    friend bool operator==(const ServiceConfig&, const ServiceConfig&) = default;
};

struct Config {
    // --- the guide's Table 1 ---
    bool enable = false;                      // "High Available Enable", default No
    std::optional<StationType> station_type;  // required when enabled
    std::optional<IpPrefix> cluster_ip;       // required when enabled; IPv4 or IPv6 with prefix
    std::optional<IpAddr> peer_ip;            // peer's address on the heartbeat link
    std::optional<MacAddr> peer_mac;          // optional: heartbeats from other MACs ignored
    std::uint16_t heartbeat_port = 9527;      // 0-65535
    // A bare integer is seconds (3-10, the guide's range); a duration string ("2ms", "800us",
    // "1.5s") opens the low-latency range down to 500us.
    std::chrono::nanoseconds heartbeat_timeout = std::chrono::seconds(7);
    bool software_fault_switch = false;
    bool hardware_fault_switch = false;

    // --- what the agent needs beyond the guide ---
    std::string heartbeat_interface;    // the direct link NIC ("heartbeat port")
    std::string lan_interface;          // NIC that carries the cluster IP
    std::optional<IpAddr> peer_lan_ip;  // second, slower heartbeat path over the LAN
    // Probe interval on the heartbeat link; 0 = timeout/10. 50us at the least.
    std::chrono::nanoseconds heartbeat_interval{0};
    // Probe interval on the LAN path; 0 = 4 x heartbeat interval.
    std::chrono::nanoseconds lan_heartbeat_interval{0};
    int prober_rt_priority = 10;  // SCHED_FIFO priority of the prober; 0 = normal
    // The one CPU the prober (the agent's loop thread) runs on; -1 = any. Best: the CPU that
    // handles the heartbeat NIC's interrupts (see the example configs).
    int prober_cpu = -1;
    XdpMode xdp_mode = XdpMode::Auto;
    std::string bpf_pin_root = "/sys/fs/bpf/fcm-ha";
    std::string node_name;  // shown in status and events; default hostname

    std::string state_dir = "/var/lib/fcm-ha";
    std::string key_file = "/etc/fcm-ha/ha.key";
    std::string control_socket = "/run/fcm-ha/agent.sock";
    std::string metrics_listen = "127.0.0.1:9529";  // Prometheus text; empty = off

    std::vector<SyncRoot> sync_roots;
    std::uint16_t sync_port = 9528;          // TCP on the heartbeat link
    std::string full_backup_time = "00:00";  // daily full backup, local time HH:MM
    std::chrono::nanoseconds switch_drain_timeout = std::chrono::seconds(10);

    ServiceConfig service;

    std::string log_level = "info";  // [log] level: error | warn | info | debug

    // Reload compares the running config with the new one; tests check the to_toml round trip.
    friend bool operator==(const Config&, const Config&) = default;

    // Derived values (the config stays the source of truth).
    [[nodiscard]] std::chrono::nanoseconds effective_interval() const;
    [[nodiscard]] std::chrono::nanoseconds effective_lan_interval() const;
};

// An address and port as metrics.listen and service.sip_target hold them: "198.18.0.1:9529",
// "[fd00:4a::1]:5060". Only IP literals: the agent binds or sends without name resolution.
struct Endpoint {
    IpAddr addr;
    std::uint16_t port = 0;
    friend bool operator==(const Endpoint&, const Endpoint&) = default;
};
Result<Endpoint> parse_endpoint(std::string_view text);
// "HH:MM" (00:00-23:59) to minutes after midnight; nothing for anything else.
std::optional<int> minute_of_day(std::string_view hhmm);

// One problem with one key: "heartbeat.timeout = 11: must be 3-10 seconds, or a duration ...".
struct ConfigIssue {
    std::string key;      // dotted TOML key, e.g. "ha.heartbeat_timeout"
    std::string value;    // the offending value as written ("" when missing)
    std::string message;  // what is wrong and the allowed range
    int line = 0;         // 0 when not known (missing key)
    [[nodiscard]] std::string to_string() const;
};

struct ConfigReport {
    std::optional<Config> config;     // set only when issues is empty
    std::vector<ConfigIssue> issues;  // every problem found, in file order
};

// Pure: text in, config or every issue out. Unknown keys are issues (typos must not be silent).
ConfigReport parse_config(std::string_view toml_text);
// Semantic checks across keys; returns all problems (empty = valid).
std::vector<ConfigIssue> validate(const Config& config);
// Canonical TOML of a config, with the guide's names as comments: what `config show` prints.
std::string to_toml(const Config& config);
// `config set KEY VALUE` on the text: returns the new text (comments and order kept where possible)
// or the issues the change would cause; the caller writes it atomically.
Result<std::string> set_config_value(std::string_view toml_text, std::string_view key,
                                     std::string_view value);

}  // namespace ha::core
