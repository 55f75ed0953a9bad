// Covers agent/core/config: TOML parsing, issue reporting, validation, to_toml, config set.
#include "agent/core/config.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "common/atomic_file.hpp"

namespace ha::core {
namespace {

using namespace std::chrono_literals;

std::string source_file(const std::string& relative) {
    auto text = read_file(std::string(HA_SOURCE_DIR) + "/" + relative);
    EXPECT_TRUE(text.has_value()) << relative << ": " << text.error().message();
    return text ? *text : std::string();
}

std::string issues_text(const ConfigReport& r) {
    std::string out;
    for (const auto& i : r.issues) out += i.to_string() + "\n";
    return out;
}

const ConfigIssue* find_issue(const ConfigReport& r, std::string_view key) {
    for (const auto& i : r.issues)
        if (i.key == key) return &i;
    return nullptr;
}

// The smallest enabled config the guide allows: the mandatory settings plus the two NICs.
constexpr std::string_view kMinimal = R"([ha]
enable = true
station_type = "primary"
cluster_ip = "198.18.1.100/24"
peer_ip = "198.18.0.2"
heartbeat_interface = "hb0"
lan_interface = "lan0"
)";

ConfigReport parse_with(std::string_view extra_ha_lines, std::string_view more_tables = "") {
    return parse_config(std::string(kMinimal) + std::string(extra_ha_lines) + "\n" +
                        std::string(more_tables));
}

// --- defaults (guide Table 1) ------------------------------------------------------------------

TEST(Config, DefaultsMatchGuideTable1) {
    const Config c;
    EXPECT_FALSE(c.enable);  // High Available Enable: default No
    EXPECT_FALSE(c.station_type.has_value());
    EXPECT_EQ(c.heartbeat_port, 9527);
    EXPECT_EQ(c.heartbeat_timeout, 7s);
    EXPECT_FALSE(c.software_fault_switch);
    EXPECT_FALSE(c.hardware_fault_switch);
    EXPECT_EQ(c.effective_interval(), 700ms);
    EXPECT_EQ(c.effective_lan_interval(), 2800ms);
    EXPECT_EQ(c.log_level, "info");
    EXPECT_TRUE(validate(c).empty());
}

TEST(Config, EmptyFileIsTheDisabledDefault) {
    auto r = parse_config("");
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(*r.config, Config{});
}

TEST(Config, EffectiveIntervalsFollowExplicitValues) {
    Config c{.heartbeat_timeout = 2ms};
    EXPECT_EQ(c.effective_interval(), 200us);
    EXPECT_EQ(c.effective_lan_interval(), 800us);
    c.heartbeat_interval = 300us;
    EXPECT_EQ(c.effective_interval(), 300us);
    EXPECT_EQ(c.effective_lan_interval(), 1200us);
    c.lan_heartbeat_interval = 900us;
    EXPECT_EQ(c.effective_lan_interval(), 900us);
}

TEST(Config, EnumsPrintTheirTomlSpelling) {
    EXPECT_EQ(to_string(StationType::Primary), "primary");
    EXPECT_EQ(to_string(StationType::Secondary), "secondary");
    EXPECT_EQ(to_string(SyncMode::Sqlite), "sqlite");
    EXPECT_EQ(to_string(SyncMode::Append), "append");
    EXPECT_EQ(to_string(FaultAction::RestartService), "restart");
    EXPECT_EQ(to_string(FaultAction::Reboot), "reboot");
    EXPECT_EQ(to_string(ProbeKind::SipOptions), "sip");
    EXPECT_EQ(to_string(XdpMode::Userspace), "userspace");
}

// --- shipped examples --------------------------------------------------------------------------

TEST(Config, ShippedExampleIsGuideFigure3Primary) {
    auto r = parse_config(source_file("etc/ha.toml"));
    ASSERT_TRUE(r.config) << issues_text(r);
    const Config& c = *r.config;
    EXPECT_TRUE(c.enable);
    EXPECT_EQ(c.station_type, StationType::Primary);
    EXPECT_EQ(c.cluster_ip->to_string(), "198.18.1.100/24");
    EXPECT_EQ(c.heartbeat_port, 9527);
    EXPECT_EQ(c.heartbeat_timeout, 7s);
    EXPECT_TRUE(c.software_fault_switch);
    EXPECT_FALSE(c.hardware_fault_switch);
    EXPECT_EQ(c.sync_roots.size(), 3u);
    EXPECT_EQ(c.service.probe, ProbeKind::SipOptions);
}

TEST(Config, ShippedSecondaryExampleSharesClusterIpWithPrimary) {
    auto primary = parse_config(source_file("etc/ha.toml"));
    auto secondary = parse_config(source_file("etc/examples/ha-secondary.toml"));
    ASSERT_TRUE(primary.config) << issues_text(primary);
    ASSERT_TRUE(secondary.config) << issues_text(secondary);
    EXPECT_EQ(secondary.config->station_type, StationType::Secondary);
    EXPECT_EQ(secondary.config->cluster_ip, primary.config->cluster_ip);
    EXPECT_EQ(secondary.config->heartbeat_timeout, primary.config->heartbeat_timeout);
    // Each box names the other as its peer.
    EXPECT_NE(secondary.config->peer_ip, primary.config->peer_ip);
}

TEST(Config, ShippedLowLatencyExampleUsesTwoMillisecondTimeout) {
    auto r = parse_config(source_file("etc/examples/ha-low-latency.toml"));
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(r.config->heartbeat_timeout, 2ms);
    EXPECT_EQ(r.config->effective_interval(), 200us);
}

TEST(Config, ShippedIpv6ExampleParsesClean) {
    auto r = parse_config(source_file("etc/examples/ha-ipv6.toml"));
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_TRUE(r.config->cluster_ip->addr.is_v6());
    EXPECT_EQ(r.config->cluster_ip->len, 64);
}

// --- heartbeat timeout (guide: "Heartbeat Timeout Period (s)", 3 - 10, default 7) ---------------

TEST(Config, HeartbeatTimeoutIntegerIsSecondsInGuideRange3To10) {
    for (int s : {3, 7, 10}) {
        auto r = parse_with("heartbeat_timeout = " + std::to_string(s));
        ASSERT_TRUE(r.config) << issues_text(r);
        EXPECT_EQ(r.config->heartbeat_timeout, std::chrono::seconds(s));
    }
    for (std::string_view bad : {"2", "11", "0", "-3"}) {
        auto r = parse_with("heartbeat_timeout = " + std::string(bad));
        EXPECT_FALSE(r.config);
        const auto* i = find_issue(r, "ha.heartbeat_timeout");
        ASSERT_NE(i, nullptr) << bad;
        EXPECT_EQ(i->value, bad);
        EXPECT_EQ(i->line, 8);
        EXPECT_NE(i->message.find("3-10 seconds"), std::string::npos) << i->message;
        EXPECT_NE(i->message.find("500us to 10s"), std::string::npos) << i->message;
    }
}

TEST(Config, HeartbeatTimeoutIssueNamesKeyValueLineAndRange) {
    auto r = parse_config(R"([ha]
enable = true
station_type = "primary"
cluster_ip = "198.18.1.100/24"
peer_ip = "198.18.0.2"
heartbeat_interface = "hb0"
lan_interface = "lan0"
heartbeat_port = 9527
heartbeat_timeout = 11
)");
    ASSERT_EQ(r.issues.size(), 1u) << issues_text(r);
    EXPECT_EQ(r.issues[0].to_string(),
              "ha.heartbeat_timeout = 11 (line 9): must be 3-10 seconds as an integer, or a "
              "duration from 500us to 10s such as \"2ms\"");
}

TEST(Config, HeartbeatTimeoutDurationStringOpensLowLatencyRange) {
    const std::pair<std::string_view, std::chrono::nanoseconds> good[] = {
        {"\"2ms\"", 2ms},     {"\"800us\"", 800us}, {"\"1.5s\"", 1500ms},
        {"\"500us\"", 500us}, {"\"10s\"", 10s},     {"\"2s\"", 2s}};
    for (const auto& [text, want] : good) {
        auto r = parse_with("heartbeat_timeout = " + std::string(text));
        ASSERT_TRUE(r.config) << text << "\n" << issues_text(r);
        EXPECT_EQ(r.config->heartbeat_timeout, want) << text;
    }
    for (std::string_view bad : {"\"499us\"", "\"11s\"", "\"2 ms\"", "\"fast\"", "\"5\""}) {
        auto r = parse_with("heartbeat_timeout = " + std::string(bad));
        const auto* i = find_issue(r, "ha.heartbeat_timeout");
        ASSERT_NE(i, nullptr) << bad;
        EXPECT_EQ(i->value, bad);
    }
}

TEST(Config, HeartbeatTimeoutRejectsEachBadFormNamingValueAndRange) {
    // Below the low-latency floor, above the guide's range, zero, negative, not a duration, a
    // bare float, a boolean, an empty string, a number in quotes without a unit.
    for (std::string_view bad : {"\"400us\"", "11", "0", "-1", "\"abc\"", "3.5", "true", "\"\"",
                                 "\"7\"", "\"-2ms\"", "\"0s\"", "\"10.5s\"", "99999999999999"}) {
        auto r = parse_with("heartbeat_timeout = " + std::string(bad));
        EXPECT_FALSE(r.config) << bad;
        ASSERT_EQ(r.issues.size(), 1u) << bad << "\n" << issues_text(r);
        const auto& i = r.issues[0];
        EXPECT_EQ(i.key, "ha.heartbeat_timeout");
        EXPECT_EQ(i.value, bad);
        EXPECT_EQ(i.line, 8);
        EXPECT_NE(i.message.find("3-10 seconds"), std::string::npos) << i.message;
        EXPECT_NE(i.message.find("500us to 10s"), std::string::npos) << i.message;
    }
    for (std::string_view good : {"\"2ms\"", "\"0.5ms\"", "\"7s\"", "3", "10"}) {
        auto r = parse_with("heartbeat_timeout = " + std::string(good));
        EXPECT_TRUE(r.config) << good << "\n" << issues_text(r);
    }
}

TEST(Config, HeartbeatTimeoutFractionNeedsADurationString) {
    auto r = parse_with("heartbeat_timeout = 1.5");
    const auto* i = find_issue(r, "ha.heartbeat_timeout");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_NE(i->message.find("\"1.5s\""), std::string::npos) << i->message;
}

// --- heartbeat port (guide: 0 - 65535, default 9527) -------------------------------------------

TEST(Config, HeartbeatPortOutsideGuideRange0To65535IsRejected) {
    for (std::string_view bad : {"65536", "-1"}) {
        auto r = parse_with("heartbeat_port = " + std::string(bad));
        const auto* i = find_issue(r, "ha.heartbeat_port");
        ASSERT_NE(i, nullptr) << bad;
        EXPECT_EQ(i->value, bad);
        EXPECT_NE(i->message.find("0-65535"), std::string::npos) << i->message;
    }
    auto r = parse_with("heartbeat_port = 65535");
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(r.config->heartbeat_port, 65535);
}

TEST(Config, HeartbeatPortZeroIsInGuideRangeButCannotBeBound) {
    auto r = parse_with("heartbeat_port = 0");
    const auto* i = find_issue(r, "ha.heartbeat_port");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_NE(i->message.find("not a usable UDP port"), std::string::npos) << i->message;
    EXPECT_FALSE(validate(Config{.heartbeat_port = 0}).empty());
}

// --- every problem at once ---------------------------------------------------------------------

TEST(Config, EveryBadValueInOneFileIsReportedInFileOrder) {
    auto r = parse_config(R"([ha]
enable = true
station_type = "tertiary"
cluster_ip = "198.18.1.300/24"
peer_ip = "198.18.0.2"
peer_mac = "zz:00:00:00:00:02"
heartbeat_port = 70000
heartbeat_timeout = 11
software_fault_switch = "yes"
heartbeat_interface = "hb0"
lan_interface = "lan0"
prober_rt_priority = 100
prober_cpu = 1024
xdp_mode = "fast"

[sync]
port = 0

[service]
probe = "ping"
probe_failures = 0
)");
    EXPECT_FALSE(r.config);
    const std::pair<std::string_view, int> expected[] = {{"ha.station_type", 3},
                                                         {"ha.cluster_ip", 4},
                                                         {"ha.peer_mac", 6},
                                                         {"ha.heartbeat_port", 7},
                                                         {"ha.heartbeat_timeout", 8},
                                                         {"ha.software_fault_switch", 9},
                                                         {"ha.prober_rt_priority", 12},
                                                         {"ha.prober_cpu", 13},
                                                         {"ha.xdp_mode", 14},
                                                         {"sync.port", 17},
                                                         {"service.probe", 20},
                                                         {"service.probe_failures", 21}};
    ASSERT_EQ(r.issues.size(), std::size(expected)) << issues_text(r);
    for (std::size_t n = 0; n < std::size(expected); ++n) {
        EXPECT_EQ(r.issues[n].key, expected[n].first) << issues_text(r);
        EXPECT_EQ(r.issues[n].line, expected[n].second) << r.issues[n].to_string();
        EXPECT_FALSE(r.issues[n].value.empty()) << r.issues[n].to_string();
        // Each message states what is allowed.
        const auto& m = r.issues[n].message;
        EXPECT_TRUE(m.find("must") != std::string::npos ||
                    m.find("use 1-65535") != std::string::npos)
            << r.issues[n].to_string();
    }
    EXPECT_EQ(find_issue(r, "ha.station_type")->message, "must be \"primary\" or \"secondary\"");
    EXPECT_EQ(find_issue(r, "ha.xdp_mode")->value, "\"fast\"");
    EXPECT_NE(find_issue(r, "ha.prober_rt_priority")->message.find("0-99"), std::string::npos);
    EXPECT_EQ(find_issue(r, "ha.prober_cpu")->value, "1024");
    EXPECT_NE(find_issue(r, "ha.prober_cpu")->message.find("0-1023"), std::string::npos);
}

TEST(Config, EveryBadAgentSettingIsReportedTooInFileOrder) {
    auto r = parse_config(R"([ha]
enable = true
station_type = "secondary"
cluster_ip = "198.18.1.100/24"
peer_ip = "198.18.0.1"
hardware_fault_switch = "on"
heartbeat_interface = "hb0:1"
lan_interface = "a-name-longer-than-15"
bpf_pin_root = "sys/fs/bpf"

[paths]
state_dir = "/var/lib/../fcm-ha"
key_file = "ha.key"
control_socket = ""

[[sync.root]]
path = "/"
mode = "file"

[[sync.root]]
path = "/var/lib/pbx/cdr"
mode = "stream"

[service]
unit = "kamailio service"
stop = "kamctl stop"
stop_timeout = "0s"
probe = "command"
core_dump_dir = "crash"
fault_action = "shutdown"
)");
    EXPECT_FALSE(r.config);
    const std::pair<std::string_view, int> expected[] = {{"ha.hardware_fault_switch", 6},
                                                         {"ha.heartbeat_interface", 7},
                                                         {"ha.lan_interface", 8},
                                                         {"ha.bpf_pin_root", 9},
                                                         {"paths.state_dir", 12},
                                                         {"paths.key_file", 13},
                                                         {"paths.control_socket", 14},
                                                         {"sync.root[0].path", 17},
                                                         {"sync.root[1].mode", 22},
                                                         {"service.unit", 25},
                                                         {"service.stop", 26},
                                                         {"service.stop_timeout", 27},
                                                         {"service.core_dump_dir", 29},
                                                         {"service.fault_action", 30},
                                                         {"service.probe_command", 0}};
    ASSERT_EQ(r.issues.size(), std::size(expected)) << issues_text(r);
    for (std::size_t n = 0; n < std::size(expected); ++n) {
        EXPECT_EQ(r.issues[n].key, expected[n].first) << issues_text(r);
        EXPECT_EQ(r.issues[n].line, expected[n].second) << r.issues[n].to_string();
    }
    EXPECT_EQ(find_issue(r, "sync.root[1].mode")->message,
              "must be \"file\", \"append\" or \"sqlite\"");
    EXPECT_EQ(find_issue(r, "service.fault_action")->value, "\"shutdown\"");
}

TEST(Config, SyntaxErrorReportsLineAndColumn) {
    auto r = parse_config("[ha]\nenable = true\nheartbeat_port = = 9527\n");
    EXPECT_FALSE(r.config);
    ASSERT_EQ(r.issues.size(), 1u);
    EXPECT_EQ(r.issues[0].line, 3);
    EXPECT_NE(r.issues[0].message.find("syntax error at column"), std::string::npos);
    EXPECT_EQ(r.issues[0].to_string().rfind("line 3: syntax error", 0), 0u)
        << r.issues[0].to_string();
}

TEST(Config, DuplicateKeyIsAnIssueNamingTheKeyAndLine) {
    auto r = parse_config("[ha]\nenable = true\nheartbeat_port = 9527\nenable = false\n");
    EXPECT_FALSE(r.config);
    ASSERT_EQ(r.issues.size(), 1u) << issues_text(r);
    EXPECT_EQ(r.issues[0].line, 4);
    EXPECT_NE(r.issues[0].message.find("'enable'"), std::string::npos) << r.issues[0].message;
    auto table = parse_config("[ha]\nenable = true\n[ha]\nenable = true\n");
    EXPECT_FALSE(table.config);
    ASSERT_EQ(table.issues.size(), 1u) << issues_text(table);
    EXPECT_EQ(table.issues[0].line, 3);
    EXPECT_NE(table.issues[0].message.find("'ha'"), std::string::npos);
}

TEST(Config, GarbageIsASyntaxErrorNotAConfig) {
    for (std::string_view text :
         {std::string_view("this is not toml {{{\n"), std::string_view("\x00\xff\xfe", 3),
          std::string_view("[ha\nenable = true\n"), std::string_view("<?xml version=\"1.0\"?>\n"),
          std::string_view("{\"ha\": {\"enable\": true}}\n")}) {
        auto r = parse_config(text);
        EXPECT_FALSE(r.config) << text;
        ASSERT_EQ(r.issues.size(), 1u) << issues_text(r);
        EXPECT_EQ(r.issues[0].line, 1);
        EXPECT_EQ(r.issues[0].to_string().rfind("line 1: syntax error", 0), 0u)
            << r.issues[0].to_string();
    }
}

TEST(Config, CommentsOnlyFileIsTheDisabledDefault) {
    auto r = parse_config("# nothing here yet\n\n   \n# [ha]\n# enable = true\n");
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(*r.config, Config{});
}

TEST(Config, UnknownKeySuggestsClosestKnownKey) {
    auto r = parse_with("heartbeat_timout = 7");
    const auto* i = find_issue(r, "ha.heartbeat_timout");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_EQ(i->line, 8);
    EXPECT_EQ(i->message,
              "unknown key 'ha.heartbeat_timout'; did you mean 'ha.heartbeat_timeout'?");
}

TEST(Config, UnknownKeyFarFromEveryKnownKeyHasNoSuggestion) {
    auto r = parse_with("colour = \"blue\"");
    const auto* i = find_issue(r, "ha.colour");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_EQ(i->message, "unknown key 'ha.colour'");
}

TEST(Config, KeyInTheWrongTableSuggestsItsTable) {
    auto r = parse_config("enable = true\n[paths]\nheartbeat_port = 9527\n");
    ASSERT_EQ(r.issues.size(), 2u) << issues_text(r);
    EXPECT_EQ(r.issues[0].message, "unknown key 'enable'; did you mean 'ha.enable'?");
    EXPECT_EQ(r.issues[1].message,
              "unknown key 'paths.heartbeat_port'; did you mean 'ha.heartbeat_port'?");
}

TEST(Config, UnknownTableIsReported) {
    auto r = parse_config("[heartbeat]\ntimeout = 7\n[servce]\nunit = \"x\"\n");
    ASSERT_EQ(r.issues.size(), 2u) << issues_text(r);
    EXPECT_EQ(r.issues[0].message, "unknown table '[heartbeat]'");
    EXPECT_EQ(r.issues[0].line, 1);
    EXPECT_EQ(r.issues[1].message, "unknown table '[servce]'; did you mean 'service'?");
}

TEST(Config, WrongTypesAreIssuesNotConversions) {
    auto r = parse_config("[ha]\nenable = \"yes\"\nheartbeat_port = \"9527\"\nnode_name = 5\n");
    ASSERT_EQ(r.issues.size(), 3u) << issues_text(r);
    EXPECT_EQ(r.issues[0].message, "must be true or false (without quotes)");
    EXPECT_EQ(r.issues[1].value, "\"9527\"");
    EXPECT_EQ(r.issues[2].key, "ha.node_name");
}

TEST(Config, StationTypeAcceptsTheGuideCapitalisation) {
    auto r2 = parse_config(R"([ha]
enable = true
station_type = "Secondary"
cluster_ip = "198.18.1.100/24"
peer_ip = "198.18.0.1"
heartbeat_interface = "hb0"
lan_interface = "lan0"
)");
    ASSERT_TRUE(r2.config) << issues_text(r2);
    EXPECT_EQ(r2.config->station_type, StationType::Secondary);
}

// --- cross-key rules ---------------------------------------------------------------------------

TEST(Config, EnabledRequiresStationTypeClusterIpPeerIpAndInterfaces) {
    auto r = parse_config("[ha]\nenable = true\n");
    EXPECT_FALSE(r.config);
    for (std::string_view key : {"ha.station_type", "ha.cluster_ip", "ha.peer_ip",
                                 "ha.heartbeat_interface", "ha.lan_interface"}) {
        const auto* i = find_issue(r, key);
        ASSERT_NE(i, nullptr) << key << "\n" << issues_text(r);
        EXPECT_EQ(i->line, 0);
        EXPECT_EQ(i->value, "");
        EXPECT_NE(i->message.find("required when ha.enable = true"), std::string::npos);
    }
}

TEST(Config, DisabledHaNeedsNoStationType) {
    auto r = parse_config("[ha]\nenable = false\nheartbeat_timeout = 5\n");
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_FALSE(r.config->enable);
}

TEST(Config, ClusterIpMustDifferFromPeerIp) {
    auto r = parse_config(R"([ha]
enable = true
station_type = "primary"
cluster_ip = "198.18.0.2/24"
peer_ip = "198.18.0.2"
heartbeat_interface = "hb0"
lan_interface = "lan0"
)");
    const auto* i = find_issue(r, "ha.peer_ip");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_EQ(i->line, 5);
    EXPECT_EQ(i->value, "\"198.18.0.2\"");
    EXPECT_NE(i->message.find("must differ from ha.cluster_ip"), std::string::npos);
}

TEST(Config, ClusterIpAcceptsIpv6WithPrefixAndBareAddresses) {
    auto v6 = parse_config(R"([ha]
enable = true
station_type = "primary"
cluster_ip = "fd00:4a::100/64"
peer_ip = "fd00:4a::2"
heartbeat_interface = "hb0"
lan_interface = "lan0"
)");
    ASSERT_TRUE(v6.config) << issues_text(v6);
    EXPECT_TRUE(v6.config->cluster_ip->addr.is_v6());
    EXPECT_EQ(v6.config->cluster_ip->len, 64);

    auto bare4 = parse_config("[ha]\ncluster_ip = \"198.18.1.100\"\n");
    ASSERT_TRUE(bare4.config) << issues_text(bare4);
    EXPECT_EQ(bare4.config->cluster_ip->len, 32);
    auto bare6 = parse_config("[ha]\ncluster_ip = \"fd00:4a::100\"\n");
    ASSERT_TRUE(bare6.config) << issues_text(bare6);
    EXPECT_EQ(bare6.config->cluster_ip->len, 128);

    for (std::string_view bad :
         {"198.18.1.100/33", "fd00:4a::1/129", "198.18.1", "224.0.0.5/4", "0.0.0.0/8"}) {
        auto r = parse_config("[ha]\ncluster_ip = \"" + std::string(bad) + "\"\n");
        const auto* i = find_issue(r, "ha.cluster_ip");
        ASSERT_NE(i, nullptr) << bad;
        EXPECT_EQ(i->line, 2);
    }
}

TEST(Config, ClusterIpMustBeAHostAddressOfItsSubnet) {
    const std::pair<std::string_view, std::string_view> bad[] = {
        {"198.18.1.0/24", "network address"},
        {"198.18.1.255/24", "broadcast address"},
        {"198.18.1.127/25", "broadcast address"},
        {"fd00:4a::/64", "subnet-router anycast"},
        {"127.0.0.1/8", "loopback"},
        {"::1", "loopback"},
        {"169.254.10.1/16", "link-local"},
        {"fe80::100/64", "link-local"},
        {"::ffff:198.18.1.100/120", "IPv4-mapped"},
        {"ff02::1/64", "multicast"},
    };
    for (const auto& [text, why] : bad) {
        auto r = parse_config("[ha]\ncluster_ip = \"" + std::string(text) + "\"\n");
        const auto* i = find_issue(r, "ha.cluster_ip");
        ASSERT_NE(i, nullptr) << text << "\n" << issues_text(r);
        EXPECT_EQ(i->line, 2) << text;
        EXPECT_EQ(i->value, "\"" + std::string(text) + "\"") << text;  // as written
        EXPECT_NE(i->message.find(why), std::string::npos) << text << ": " << i->message;
    }
    // /31 and /32 (and /127, /128) have no network or broadcast address.
    for (std::string_view good : {"198.18.1.1/24", "198.18.1.254/24", "198.18.1.0/31",
                                  "198.18.1.255/32", "fd00:4a::1/64", "fd00:4a::/128"}) {
        auto r = parse_config("[ha]\ncluster_ip = \"" + std::string(good) + "\"\n");
        EXPECT_TRUE(r.config) << good << "\n" << issues_text(r);
    }
}

TEST(Config, PeerAddressesMustBeReachableUnicastHosts) {
    for (std::string_view bad : {"127.0.0.2", "::1", "0.0.0.0", "255.255.255.255", "224.0.0.18"}) {
        auto r = parse_with("peer_lan_ip = \"" + std::string(bad) + "\"");
        const auto* i = find_issue(r, "ha.peer_lan_ip");
        ASSERT_NE(i, nullptr) << bad << "\n" << issues_text(r);
        EXPECT_NE(i->message.find("must be a unicast host address"), std::string::npos);
    }
    auto r = parse_config("[ha]\npeer_ip = \"127.0.0.1\"\n");
    const auto* i = find_issue(r, "ha.peer_ip");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_EQ(i->to_string(),
              "ha.peer_ip = \"127.0.0.1\" (line 2): is a loopback address (the peer cannot reach "
              "it): must be a unicast host address such as \"198.18.0.2\"");
}

TEST(Config, PeerMacMustBeUnicast) {
    for (std::string_view bad : {"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "02:00:00:00:00"}) {
        auto r = parse_with("peer_mac = \"" + std::string(bad) + "\"");
        ASSERT_NE(find_issue(r, "ha.peer_mac"), nullptr) << bad << issues_text(r);
    }
    auto r = parse_with("peer_mac = \"02-00-00-00-00-0A\"");
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(r.config->peer_mac->to_string(), "02:00:00:00:00:0a");
}

TEST(Config, HeartbeatIntervalMustFitTwoProbesInOneTimeout) {
    auto ok = parse_with("heartbeat_interval = \"3s\"");
    ASSERT_TRUE(ok.config) << issues_text(ok);
    EXPECT_EQ(ok.config->effective_interval(), 3s);

    auto half = parse_with("heartbeat_interval = \"3.5s\"");
    const auto* i = find_issue(half, "ha.heartbeat_interval");
    ASSERT_NE(i, nullptr) << issues_text(half);
    EXPECT_EQ(i->line, 8);
    EXPECT_EQ(i->value, "\"3.5s\"");
    EXPECT_NE(i->message.find("less than half of ha.heartbeat_timeout (7s)"), std::string::npos);

    auto tiny = parse_with("heartbeat_interval = \"40us\"");
    ASSERT_NE(find_issue(tiny, "ha.heartbeat_interval"), nullptr) << issues_text(tiny);
    EXPECT_NE(find_issue(tiny, "ha.heartbeat_interval")->message.find("50us"), std::string::npos);
}

TEST(Config, BadTimeoutDoesNotAlsoBlameTheIntervalAgainstTheDefault) {
    auto r = parse_with("heartbeat_timeout = 1\nheartbeat_interval = \"4s\"");
    ASSERT_EQ(r.issues.size(), 1u) << issues_text(r);
    EXPECT_EQ(r.issues[0].key, "ha.heartbeat_timeout");
}

TEST(Config, LanIntervalMustBeShorterThanTimeout) {
    auto r = parse_with("heartbeat_timeout = \"2ms\"\nlan_heartbeat_interval = \"2ms\"");
    ASSERT_NE(find_issue(r, "ha.lan_heartbeat_interval"), nullptr) << issues_text(r);
}

TEST(Config, InterfacesMustBeValidAndDistinct) {
    auto same = parse_config(R"([ha]
enable = true
station_type = "primary"
cluster_ip = "198.18.1.100/24"
peer_ip = "198.18.0.2"
heartbeat_interface = "eth0"
lan_interface = "eth0"
)");
    ASSERT_NE(find_issue(same, "ha.lan_interface"), nullptr) << issues_text(same);
    auto longname = parse_with("", "");
    Config c = *longname.config;
    c.heartbeat_interface = "a-name-longer-than-15";
    ASSERT_EQ(validate(c).size(), 1u);
    EXPECT_EQ(validate(c)[0].key, "ha.heartbeat_interface");
}

TEST(Config, SyncRootsMustBeAbsoluteUniqueAndNotNested) {
    auto r = parse_config(R"([[sync.root]]
path = "/var/lib/pbx"
mode = "file"

[[sync.root]]
path = "/var/lib/pbx/db"
mode = "sqlite"

[[sync.root]]
path = "relative/dir"

[[sync.root]]
path = "/var/lib/pbx/"

[[sync.root]]
mode = "rsync"
extra = 1
)");
    EXPECT_FALSE(r.config);
    const auto* nested = find_issue(r, "sync.root[1].path");
    ASSERT_NE(nested, nullptr) << issues_text(r);
    EXPECT_EQ(nested->line, 6);
    EXPECT_NE(nested->message.find("inside sync.root[0]"), std::string::npos);
    ASSERT_NE(find_issue(r, "sync.root[2].path"), nullptr) << issues_text(r);
    const auto* dup = find_issue(r, "sync.root[3].path");
    ASSERT_NE(dup, nullptr) << issues_text(r);
    EXPECT_NE(dup->message.find("duplicates sync.root[0]"), std::string::npos);
    ASSERT_NE(find_issue(r, "sync.root[4].mode"), nullptr) << issues_text(r);
    ASSERT_NE(find_issue(r, "sync.root[4].path"), nullptr) << issues_text(r);
    const auto* extra = find_issue(r, "sync.root[4].extra");
    ASSERT_NE(extra, nullptr) << issues_text(r);
    EXPECT_EQ(extra->line, 17);
}

TEST(Config, SyncRootMustBeAnArrayOfTables) {
    auto r = parse_config("[sync.root]\npath = \"/var/lib/pbx\"\n");
    const auto* i = find_issue(r, "sync.root");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_NE(i->message.find("[[sync.root]]"), std::string::npos);
}

TEST(Config, SyncRootMustNotContainTheAgentState) {
    auto r = parse_config(
        "[paths]\nstate_dir = \"/var/lib/fcm-ha\"\n[[sync.root]]\npath = \"/var/lib\"\n");
    ASSERT_NE(find_issue(r, "sync.root[0].path"), nullptr) << issues_text(r);
}

TEST(Config, ServiceStartAndUnitAreExclusive) {
    auto r = parse_config("[service]\nunit = \"kamailio.service\"\nstart = \"kamailio -DD\"\n");
    const auto* i = find_issue(r, "service.start");
    ASSERT_NE(i, nullptr) << issues_text(r);
    EXPECT_EQ(i->line, 3);
}

TEST(Config, CommandProbeNeedsProbeCommand) {
    auto r = parse_config("[service]\nstart = \"kamailio -DD\"\nprobe = \"command\"\n");
    ASSERT_NE(find_issue(r, "service.probe_command"), nullptr) << issues_text(r);
    auto ok = parse_config(
        "[service]\nstart = \"kamailio -DD\"\nprobe = \"command\"\nprobe_command = \"true\"\n");
    ASSERT_TRUE(ok.config) << issues_text(ok);
    EXPECT_EQ(ok.config->service.probe, ProbeKind::Command);
}

TEST(Config, ProbeTimeoutMustNotExceedProbeInterval) {
    auto r = parse_config("[service]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n");
    ASSERT_NE(find_issue(r, "service.probe_timeout"), nullptr) << issues_text(r);
}

TEST(Config, FullBackupTimeIsHourMinute24h) {
    for (std::string_view bad : {"\"24:00\"", "\"7:30\"", "\"12:60\"", "\"noon\"", "03:30:15"}) {
        auto r = parse_config("[sync]\nfull_backup_time = " + std::string(bad) + "\n");
        const auto* i = find_issue(r, "sync.full_backup_time");
        ASSERT_NE(i, nullptr) << bad;
        EXPECT_EQ(i->line, 2);
        EXPECT_NE(i->message.find("HH:MM"), std::string::npos);
    }
    auto ok = parse_config("[sync]\nfull_backup_time = \"23:59\"\n");
    ASSERT_TRUE(ok.config) << issues_text(ok);
    // A TOML local time is accepted too.
    auto local = parse_config("[sync]\nfull_backup_time = 03:30:00\n");
    ASSERT_TRUE(local.config) << issues_text(local);
    EXPECT_EQ(local.config->full_backup_time, "03:30");
    // What the scheduler is given.
    EXPECT_EQ(minute_of_day("23:59"), 23 * 60 + 59);
    EXPECT_EQ(minute_of_day("03:30"), 3 * 60 + 30);
    EXPECT_EQ(minute_of_day("00:00"), 0);
    EXPECT_EQ(minute_of_day("24:00"), std::nullopt);
    EXPECT_EQ(minute_of_day("3:30"), std::nullopt);
}

TEST(Config, MetricsListenIsAddressAndPortOrEmpty) {
    for (std::string_view good : {"", "127.0.0.1:9529", "[::1]:9529", "198.18.0.1:1"}) {
        auto r = parse_config("[metrics]\nlisten = \"" + std::string(good) + "\"\n");
        EXPECT_TRUE(r.config) << good << "\n" << issues_text(r);
    }
    for (std::string_view bad : {"localhost:9529", "127.0.0.1", "::1:9529", "127.0.0.1:0",
                                 "127.0.0.1:65536", "[198.18.0.1]:80"}) {
        auto r = parse_config("[metrics]\nlisten = \"" + std::string(bad) + "\"\n");
        const auto* i = find_issue(r, "metrics.listen");
        ASSERT_NE(i, nullptr) << bad;
        EXPECT_NE(i->message.find("ADDRESS:PORT"), std::string::npos);
    }
}

TEST(Config, ParseEndpointReadsBothFamilies) {
    auto v4 = parse_endpoint("198.18.0.1:5060");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->addr.to_string(), "198.18.0.1");
    EXPECT_EQ(v4->port, 5060);
    auto v6 = parse_endpoint("[fd00:4a::1]:9529");
    ASSERT_TRUE(v6);
    EXPECT_TRUE(v6->addr.is_v6());
    EXPECT_EQ(v6->port, 9529);
    EXPECT_FALSE(parse_endpoint(""));
    EXPECT_FALSE(parse_endpoint("[fd00:4a::1]"));
}

TEST(Config, PathsMustBeAbsolute) {
    auto r = parse_config(
        "[paths]\nstate_dir = \"var/lib\"\nkey_file = \"/etc/../ha.key\"\n[log]\nlevel = "
        "\"loud\"\n");
    ASSERT_EQ(r.issues.size(), 3u) << issues_text(r);
    EXPECT_EQ(r.issues[0].key, "paths.state_dir");
    EXPECT_EQ(r.issues[1].key, "paths.key_file");
    EXPECT_EQ(r.issues[2].key, "log.level");
}

TEST(Config, ValidateChecksAConfigBuiltInCode) {
    Config c{.enable = true,
             .station_type = StationType::Primary,
             .cluster_ip = IpPrefix::parse("198.18.1.100/24").value(),
             .peer_ip = IpAddr::parse("198.18.0.2").value(),
             .heartbeat_timeout = 20s,
             .heartbeat_interface = "hb0",
             .lan_interface = "lan0",
             .prober_rt_priority = 120};
    auto issues = validate(c);
    ASSERT_EQ(issues.size(), 2u);
    EXPECT_EQ(issues[0].key, "ha.heartbeat_timeout");
    EXPECT_EQ(issues[0].value, "\"20s\"");
    EXPECT_EQ(issues[1].key, "ha.prober_rt_priority");
    c.heartbeat_timeout = 3s;
    c.prober_rt_priority = 99;
    EXPECT_TRUE(validate(c).empty());
}

// --- to_toml ----------------------------------------------------------------------------------

Config every_field_set() {
    Config c;
    c.enable = true;
    c.station_type = StationType::Secondary;
    c.cluster_ip = IpPrefix::parse("fd00:4a:1::100/64").value();
    c.peer_ip = IpAddr::parse("198.18.0.1").value();
    c.peer_mac = MacAddr::parse("02:00:00:00:00:01").value();
    c.heartbeat_port = 10000;
    c.heartbeat_timeout = 1234567ns;
    c.software_fault_switch = true;
    c.hardware_fault_switch = true;
    c.heartbeat_interface = "hb1";
    c.lan_interface = "lan1";
    c.peer_lan_ip = IpAddr::parse("fd00:4a:1::1").value();
    c.heartbeat_interval = 100us;
    c.lan_heartbeat_interval = 450us;
    c.prober_rt_priority = 0;
    c.prober_cpu = 1;
    c.xdp_mode = XdpMode::Generic;
    c.bpf_pin_root = "/sys/fs/bpf/test \"quoted\"";
    c.node_name = "node-b.lab";
    c.state_dir = "/srv/state";
    c.key_file = "/srv/ha.key";
    c.control_socket = "/run/x.sock";
    c.metrics_listen = "";
    c.sync_roots = {{"/srv/db", SyncMode::Sqlite}, {"/srv/logs", SyncMode::Append}};
    c.sync_port = 2000;
    c.full_backup_time = "03:15";
    c.switch_drain_timeout = 0s;
    c.service.start = "sh -c 'echo \\\"hi\\\"\tthere'";
    c.service.stop = "kill-pbx";
    c.service.stop_timeout = 1500ms;
    c.service.probe = ProbeKind::Command;
    c.service.sip_target = "[fd00:4a:1::100]:5060";
    c.service.probe_command = "pbx-alive --quick";
    c.service.probe_interval = 2s;
    c.service.probe_timeout = 250ms;
    c.service.probe_failures = 5;
    c.service.core_dump_dir = "/var/crash";
    c.service.fault_action = FaultAction::Reboot;
    c.service.prestart_on_standby = true;
    c.log_level = "debug";
    return c;
}

TEST(Config, ToTomlRoundTripsToAnEqualConfig) {
    const Config c = every_field_set();
    ASSERT_TRUE(validate(c).empty()) << validate(c)[0].to_string();
    const std::string text = to_toml(c);
    auto r = parse_config(text);
    ASSERT_TRUE(r.config) << issues_text(r) << text;
    EXPECT_EQ(*r.config, c) << text;

    auto d = parse_config(to_toml(Config{}));
    ASSERT_TRUE(d.config) << issues_text(d);
    EXPECT_EQ(*d.config, Config{});
}

TEST(Config, ToTomlWritesGuideNamesAndGuideTimeoutForm) {
    auto r = parse_config(source_file("etc/ha.toml"));
    ASSERT_TRUE(r.config) << issues_text(r);
    const std::string text = to_toml(*r.config);
    EXPECT_NE(text.find("# High Available Enable"), std::string::npos);
    EXPECT_NE(text.find("# Heartbeat Timeout Period (s)"), std::string::npos);
    EXPECT_NE(text.find("\nheartbeat_timeout = 7\n"), std::string::npos) << text;
    auto again = parse_config(text);
    ASSERT_TRUE(again.config) << issues_text(again);
    EXPECT_EQ(*again.config, *r.config);
}

// --- set_config_value -------------------------------------------------------------------------

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

TEST(Config, SetConfigValueEditsOneKeyAndKeepsEverythingElse) {
    const std::string original = source_file("etc/ha.toml");
    auto edited = set_config_value(original, "ha.heartbeat_timeout", "5");
    ASSERT_TRUE(edited) << edited.error().message();
    auto r = parse_config(*edited);
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(r.config->heartbeat_timeout, 5s);

    const auto before = lines_of(original), after = lines_of(*edited);
    ASSERT_EQ(before.size(), after.size());
    int changed = 0;
    for (std::size_t n = 0; n < before.size(); ++n) {
        if (before[n] == after[n]) continue;
        ++changed;
        EXPECT_EQ(before[n], "heartbeat_timeout = 7");
        EXPECT_EQ(after[n], "heartbeat_timeout = 5");
    }
    EXPECT_EQ(changed, 1);
}

TEST(Config, SetConfigValueKeepsTrailingComment) {
    auto edited = set_config_value("[ha]\nheartbeat_timeout = 7   # seconds\n",
                                   "ha.heartbeat_timeout", "2ms");
    ASSERT_TRUE(edited) << edited.error().message();
    EXPECT_EQ(*edited, "[ha]\nheartbeat_timeout = \"2ms\"   # seconds\n");
}

TEST(Config, SetConfigValueAddsMissingKeyInItsTable) {
    const std::string text =
        "[ha]\nenable = false # off for now\n\n# the paths\n[paths]\nstate_dir = \"/srv\"\n";
    auto edited = set_config_value(text, "ha.node_name", "fcm-x");
    ASSERT_TRUE(edited) << edited.error().message();
    EXPECT_EQ(*edited,
              "[ha]\nenable = false # off for now\nnode_name = \"fcm-x\"\n\n# the paths\n[paths]\n"
              "state_dir = \"/srv\"\n");
}

TEST(Config, SetConfigValueAddsMissingTableAtTheEnd) {
    auto edited = set_config_value("[ha]\nenable = false", "log.level", "debug");
    ASSERT_TRUE(edited) << edited.error().message();
    EXPECT_EQ(*edited, "[ha]\nenable = false\n\n[log]\nlevel = \"debug\"\n");
    auto from_empty = set_config_value("", "ha.heartbeat_port", "9600");
    ASSERT_TRUE(from_empty) << from_empty.error().message();
    EXPECT_EQ(*from_empty, "[ha]\nheartbeat_port = 9600\n");
}

TEST(Config, SetConfigValueTakesValuesAsTheCliGivesThem) {
    const std::string base = "[ha]\nenable = false\n[service]\nstart = \"pbx\"\n";
    struct Case {
        std::string_view key, value;
        bool (*check)(const Config&);
    };
    const Case cases[] = {
        {"ha.enable", "Yes", [](const Config& c) { return !c.enable; }},  // incomplete when on
        {"ha.software_fault_switch", "on", [](const Config& c) { return c.software_fault_switch; }},
        {"ha.hardware_fault_switch", "true",
         [](const Config& c) { return c.hardware_fault_switch; }},
        {"ha.node_name", "fcm-b", [](const Config& c) { return c.node_name == "fcm-b"; }},
        {"ha.node_name", "\"fcm-c\"", [](const Config& c) { return c.node_name == "fcm-c"; }},
        {"ha.heartbeat_timeout", "800us",
         [](const Config& c) { return c.heartbeat_timeout == 800us; }},
        {"service.start", "kamailio -DD -f \"/etc/k.cfg\"",
         [](const Config& c) { return c.service.start == "kamailio -DD -f \"/etc/k.cfg\""; }},
        {"service.probe_failures", "7",
         [](const Config& c) { return c.service.probe_failures == 7; }},
    };
    for (const auto& tc : cases) {
        auto edited = set_config_value(base, tc.key, tc.value);
        if (tc.key == "ha.enable") {
            // Turning HA on without its mandatory settings is refused, listing what is missing.
            ASSERT_FALSE(edited);
            EXPECT_NE(edited.error().message().find("ha.station_type"), std::string::npos);
            continue;
        }
        ASSERT_TRUE(edited) << tc.key << ": " << edited.error().message();
        auto r = parse_config(*edited);
        ASSERT_TRUE(r.config) << issues_text(r);
        EXPECT_TRUE(tc.check(*r.config)) << tc.key << " = " << tc.value << "\n" << *edited;
    }
}

TEST(Config, SetConfigValueRejectsBadValueNamingKeyValueAndRange) {
    const std::string original = source_file("etc/ha.toml");
    auto edited = set_config_value(original, "ha.heartbeat_timeout", "11");
    ASSERT_FALSE(edited);
    const std::string msg = edited.error().message();
    EXPECT_NE(msg.find("ha.heartbeat_timeout = 11"), std::string::npos) << msg;
    EXPECT_NE(msg.find("3-10 seconds"), std::string::npos) << msg;

    auto port = set_config_value(original, "ha.heartbeat_port", "abc");
    ASSERT_FALSE(port);
    EXPECT_NE(port.error().message().find("ha.heartbeat_port = \"abc\""), std::string::npos)
        << port.error().message();
}

TEST(Config, SetConfigValueRejectsUnknownKeyWithSuggestion) {
    auto edited = set_config_value("", "ha.heartbeat_timout", "5");
    ASSERT_FALSE(edited);
    EXPECT_NE(edited.error().message().find("did you mean 'ha.heartbeat_timeout'"),
              std::string::npos);
    EXPECT_FALSE(set_config_value("", "sync.root", "/x"));
    EXPECT_FALSE(set_config_value("", "enable", "true"));
}

TEST(Config, SetConfigValueRefusesAKeyItCannotEditInPlace) {
    // A dotted key at the top level is valid TOML but outside the [ha] table the editor looks at.
    auto edited = set_config_value("ha.heartbeat_timeout = 7\n", "ha.heartbeat_timeout", "5");
    ASSERT_FALSE(edited);
}

TEST(Config, SetConfigValueHandlesMultiLineStrings) {
    const std::string text =
        "[service]\nstart = \"\"\"\nkamailio -DD\n[ha]\n\"\"\"\nstop_timeout = \"5s\"\n";
    auto edited = set_config_value(text, "service.stop_timeout", "7s");
    ASSERT_TRUE(edited) << edited.error().message();
    auto r = parse_config(*edited);
    ASSERT_TRUE(r.config) << issues_text(r);
    EXPECT_EQ(r.config->service.stop_timeout, 7s);
    EXPECT_EQ(r.config->service.start, "kamailio -DD\n[ha]\n");
}

}  // namespace
}  // namespace ha::core
