// fcm-hactl, the built binary, against a real ControlServer answered by a loop thread: status in
// the guide's form and as JSON, refusals printed verbatim with exit 1, logs and events from a
// real EventStore, usage errors (exit 2), no agent (exit 3), config check and keygen offline.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "agent/api/control_server.hpp"
#include "agent/api/store_queries.hpp"
#include "agent/store/event_store.hpp"
#include "agent/store/guide_format.hpp"
#include "common/atomic_file.hpp"
#include "fake_loop.hpp"

#ifndef HACTL_PATH
#error "HACTL_PATH must name the built fcm-hactl"
#endif

namespace ha::api {
namespace {

using nlohmann::json;
using testing::FakeLoop;
using testing::TempDir;

struct Run {
    int code = -1;
    std::string out;
    std::string err;
};

// Runs fcm-hactl with `args`; FCM_HA_SOCKET is set to `env_socket` when given, else removed.
// posix_spawn, not fork: the test process has server and loop threads running.
Run hactl(const TempDir& tmp, const std::vector<std::string>& args,
          const std::string& env_socket = "") {
    std::string out_path = tmp.path() + "/stdout", err_path = tmp.path() + "/stderr";
    std::string prog = HACTL_PATH;
    std::vector<std::string> arg_store = args;
    std::vector<char*> argv{prog.data()};
    for (auto& a : arg_store) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_store;
    for (char** e = environ; *e != nullptr; ++e) {
        if (std::string_view(*e).substr(0, 14) != "FCM_HA_SOCKET=") env_store.emplace_back(*e);
    }
    if (!env_socket.empty()) env_store.push_back("FCM_HA_SOCKET=" + env_socket);
    std::vector<char*> envp;
    envp.reserve(env_store.size() + 1);
    for (auto& e : env_store) envp.push_back(e.data());
    envp.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, prog.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    Run r;
    int status = 0;
    if (rc != 0 || ::waitpid(pid, &status, 0) != pid) return r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_file(out_path).value_or(std::string());
    r.err = read_file(err_path).value_or(std::string());
    return r;
}

json sample_status() {
    return {{"ok", true},
            {"ha_status", "Dual"},
            {"backup_status", "Idle"},
            {"mac", "02:00:00:00:00:01"},
            {"role", "Active"},
            {"station", "Primary"},
            {"node", "fcm-a"},
            {"term", 7},
            {"uptime_s", 93784},
            {"peer",
             {{"address", "198.18.1.2"},
              {"mac", "02:00:00:00:00:02"},
              {"role", "Standby"},
              {"last_seen_ms", 12},
              {"direct", true},
              {"lan", false}}},
            {"heartbeat",
             {{"mode", "native XDP"},
              {"interface", "hb0"},
              {"interval_us", 700000},
              {"timeout_us", 7000000},
              {"rtt_us", {{"p50", 41}, {"p99", 88}, {"max", 130}}}}},
            {"sync", {{"connected", true}, {"lag_bytes", 0}, {"oldest_unacked_ms", 0}}},
            {"faults", json::array()},
            {"alerts", json::array()}};
}

class HactlAgent : public ::testing::Test {
  protected:
    void SetUp() override {
        ServerOptions o;
        o.socket_path = tmp_.path() + "/run/agent.sock";
        auto s = ControlServer::start(o);
        ASSERT_TRUE(s) << s.error().message();
        server_ = std::move(*s);
        auto st =
            store::EventStore::open({.dir = tmp_.path() + "/log", .sync = store::SyncPolicy::None});
        ASSERT_TRUE(st) << st.error().message();
        store_.emplace(std::move(*st));
        loop_ =
            std::make_unique<FakeLoop>(*server_, [this](const json& req) { return handle(req); });
    }
    void TearDown() override {
        loop_.reset();
        if (server_) server_->stop();
    }

    // What the agent's handler does, with a fixed box: active, Dual, refuses switch while the
    // sync stream is behind; the standby variant refuses config changes.
    json handle(const json& req) {
        const auto& cmd = req["cmd"].get_ref<const std::string&>();
        if (cmd == "status") return status_;
        if (cmd == "sync_status") return json{{"ok", "yes"}, {"sync", 5}};  // nonsense
        if (cmd == "switch") return error_response(switch_refusal_);
        if (cmd == "config_set")
            return error_response("configuration is restricted on the standby");
        if (cmd == "log" || cmd == "events") return answer_store_query(*store_, req);
        if (cmd == "debug")
            return ok_response({{"subsystem", req["subsystem"]}, {"on", req["on"]}});
        return error_response("not handled in this test: " + cmd);
    }

    std::vector<std::string> with_socket(std::vector<std::string> args) {
        args.insert(args.begin(), {"--socket", server_->socket_path()});
        return args;
    }

    TempDir tmp_;
    std::unique_ptr<ControlServer> server_;
    std::optional<store::EventStore> store_;
    std::unique_ptr<FakeLoop> loop_;
    std::string switch_refusal_ =
        "force switch refused: sync lag 4096 bytes not drained within 10s";
    json status_ = sample_status();
};

TEST_F(HactlAgent, StatusShowsTheGuidesHaStatusPage) {
    auto r = hactl(tmp_, with_socket({"status"}));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find("HA Status: Dual\n"
                         "HA Full Backup Status: Idle\n"
                         "MAC Address of Current FCM: 02:00:00:00:00:01\n"
                         "Role of Current FCM: Active\n"),
              0u)
        << r.out;
    const char* heartbeat =
        "Heartbeat: native XDP on hb0, interval 700ms, timeout 7s, RTT p50 41us p99 88us max "
        "130us";
    for (const char* part :
         {"Station Type: Primary", "Term: 7", "Uptime: 1d 2h 3m 4s",
          "Peer: 198.18.1.2, MAC 02:00:00:00:00:02, role Standby, last seen 12ms ago",
          "Peer paths: direct link up, LAN down", heartbeat, "Sync: connected, lag 0 B",
          "Faults: none", "Alerts: none"}) {
        EXPECT_NE(r.out.find(part), std::string::npos) << part << "\n" << r.out;
    }
}

TEST_F(HactlAgent, StatusOfABoxWithHaOffShowsNoMadeUpMacOrStation) {
    status_ = {{"ok", true},
               {"ha_status", "Off"},
               {"backup_status", "Idle"},
               {"mac", "00:00:00:00:00:00"},
               {"role", "Off"},
               {"station", ""},
               {"term", 0},
               {"uptime_s", 5},
               {"peer", json::object()}};
    auto r = hactl(tmp_, with_socket({"status"}));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find("HA Status: Off\n"
                         "HA Full Backup Status: Idle\n"
                         "MAC Address of Current FCM: -\n"
                         "Role of Current FCM: Off\n"
                         "\n"
                         "Station Type: -\n"),
              0u)
        << r.out;
    EXPECT_NE(r.out.find("Peer: none\n"), std::string::npos) << r.out;
    // The agent sends the TOML spelling; the page shows the guide's.
    status_ = sample_status();
    status_["station"] = "secondary";
    EXPECT_NE(hactl(tmp_, with_socket({"status"})).out.find("Station Type: Secondary\n"),
              std::string::npos);
}

TEST_F(HactlAgent, MalformedAnswerIsExit4NotACrash) {
    auto r = hactl(tmp_, with_socket({"sync", "status"}));
    EXPECT_EQ(r.code, 4) << r.out << r.err;
    EXPECT_NE(r.err.find("malformed answer from the agent"), std::string::npos) << r.err;
    auto j = hactl(tmp_, with_socket({"--json", "sync", "status"}));
    EXPECT_EQ(j.code, 4) << j.err;
    EXPECT_EQ(json::parse(j.out)["ok"], false) << j.out;
}

TEST_F(HactlAgent, StatusJsonIsTheAgentsAnswer) {
    auto r = hactl(tmp_, with_socket({"status", "--json"}));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out), sample_status());
}

TEST_F(HactlAgent, SocketFromEnvironment) {
    auto r = hactl(tmp_, {"--json", "status"}, server_->socket_path());
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["role"], "Active");
}

TEST_F(HactlAgent, SwitchRefusalIsPrintedVerbatimWithExit1) {
    auto r = hactl(tmp_, with_socket({"switch"}));
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, switch_refusal_ + "\n");  // not "switch refused: force switch refused: ..."
    auto j = hactl(tmp_, with_socket({"--json", "switch"}));
    EXPECT_EQ(j.code, 1);
    EXPECT_EQ(json::parse(j.out)["error"], switch_refusal_);
}

TEST_F(HactlAgent, ConfigSetOnTheStandbyIsRefused) {
    auto r = hactl(tmp_, with_socket({"config", "set", "ha.heartbeat_timeout", "5"}));
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("configuration is restricted on the standby"), std::string::npos) << r.err;
}

TEST_F(HactlAgent, LogsAndEventsComeFromTheStoreNewestFirst) {
    ::setenv("TZ", "CST-8", 1);
    ::tzset();
    constexpr std::int64_t kMs = 1'623'697'235'000;  // 2021-06-15 03:00:35 at UTC+8
    ASSERT_TRUE(store_->append(store::BackupRecord{.success = true,
                                                   .files = 3,
                                                   .bytes = 2048,
                                                   .duration = std::chrono::milliseconds(1500)},
                               kMs - 86'400'000));
    ASSERT_TRUE(store_->append(store::BackupRecord{.success = false, .error = "peer gone"}, kMs));
    std::string when = store::local_time_text(kMs);
    ASSERT_TRUE(store_->append(store::SystemEvent{.raised = true,
                                                  .key = "heartbeat",
                                                  .content = store::heartbeat_alert_content(
                                                      "02:00:00:00:00:02", when, true)},
                               kMs));
    ::unsetenv("TZ");
    ::tzset();

    auto b = hactl(tmp_, with_socket({"log", "backup"}));
    EXPECT_EQ(b.code, 0) << b.err;
    EXPECT_EQ(b.out,
              "[2021-06-15 03:00:35 AM] HA backup failed!!  (error: peer gone)\n"
              "[2021-06-14 03:00:35 AM] HA backup success!!  (3 files, 2.0 KiB in 1.5s)\n");
    auto one = hactl(tmp_, with_socket({"log", "backup", "--limit", "1", "--json"}));
    EXPECT_EQ(one.code, 0) << one.err;
    auto j = json::parse(one.out);
    ASSERT_EQ(j["records"].size(), 1u);
    EXPECT_EQ(j["records"][0]["result"], "failed");

    auto e = hactl(tmp_, with_socket({"events"}));
    EXPECT_EQ(e.code, 0) << e.err;
    EXPECT_EQ(e.out,
              "TIME                 EVENT NAME          TYPE            CONTENT\n"
              "2021-06-15 03:00:35  HA failure warning  Generate Alert  MAC: 02:00:00:00:00:02 -- "
              "HEARTBEAT 2021-06-15 03:00:35 loose connection\n");
    auto f = hactl(tmp_, with_socket({"log", "failover"}));
    EXPECT_EQ(f.code, 0) << f.err;
    EXPECT_EQ(f.out, "HA failover log is empty\n");
}

TEST_F(HactlAgent, DebugSwitch) {
    auto r = hactl(tmp_, with_socket({"debug", "hb", "on"}));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "debug logging for hb: on\n");
    auto bad = hactl(tmp_, with_socket({"debug", "hb", "maybe"}));
    EXPECT_EQ(bad.code, 2);
    EXPECT_NE(bad.err.find("'maybe'"), std::string::npos) << bad.err;
}

TEST(Hactl, NoAgentIsAClearMessageAndExit3) {
    TempDir tmp;
    std::string sock = tmp.path() + "/agent.sock";
    auto r = hactl(tmp, {"--socket", sock, "status"});
    EXPECT_EQ(r.code, 3);
    EXPECT_EQ(r.err, "fcm-hactl: fcm-ha-agent is not running (no listener on " + sock + ")\n");
    // A socket file left behind by a dead agent reads the same.
    auto server = ControlServer::start({.socket_path = sock});
    ASSERT_TRUE(server);
    (*server)->stop();
    auto again = hactl(tmp, {"status"}, sock);
    EXPECT_EQ(again.code, 3);
    EXPECT_NE(again.err.find("no listener on " + sock), std::string::npos) << again.err;
}

TEST(Hactl, UsageErrorsNameTheBadArgumentWithExit2) {
    TempDir tmp;
    struct Case {
        std::vector<std::string> args;
        std::string needle;
    } cases[] = {
        {{"frobnicate"}, "unknown command 'frobnicate'"},
        {{"--bogus", "status"}, "unknown option '--bogus'"},
        {{"log", "audit"}, "unknown log 'audit'"},
        {{"events", "--limit", "0"}, "--limit '0'"},
        {{"status", "extra"}, "unexpected argument 'extra'"},
        {{"config", "check"}, "missing argument"},
        {{"--socket"}, "option --socket needs a value"},
        {{"status", "--limit", "5"}, "--limit applies only to log and events"},
        {{"status", "--force"}, "--force applies only to keygen"},
        {{"--timeout", "0", "status"}, "--timeout '0'"},
        {{"config", "check", tmp.path() + "/nope.toml"}, "nope.toml: No such file"},
    };
    for (const auto& c : cases) {
        auto r = hactl(tmp, c.args);
        EXPECT_EQ(r.code, 2) << c.needle;
        EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.needle << ": " << r.err;
        EXPECT_EQ(r.out, "") << c.needle;
        // With --json the same error is also a JSON answer on stdout, wherever --json stands
        // (last, unless that would make it the value of --socket).
        auto args = c.args;
        args.insert(args.back() == "--socket" ? args.begin() : args.end(), "--json");
        auto j = hactl(tmp, args);
        EXPECT_EQ(j.code, 2) << c.needle;
        auto answer = json::parse(j.out, nullptr, false);
        ASSERT_TRUE(answer.is_object()) << c.needle << ": " << j.out;
        EXPECT_EQ(answer["ok"], false);
        EXPECT_NE(answer["error"].get<std::string>().find(c.needle), std::string::npos)
            << c.needle << ": " << j.out;
    }
    // No command at all: the usage on stderr (nothing on stdout for a pipe to take as output).
    auto none = hactl(tmp, {});
    EXPECT_EQ(none.code, 2);
    EXPECT_EQ(none.out, "");
    EXPECT_EQ(none.err.find("usage: fcm-hactl"), 0u) << none.err;
}

TEST(Hactl, HelpListsCommandsAndExitCodes) {
    TempDir tmp;
    auto r = hactl(tmp, {"--help"});
    EXPECT_EQ(r.code, 0);
    for (const char* part : {"status", "switch", "config check FILE", "log backup", "events",
                             "sync status", "keygen FILE", "Exit codes:", "Examples:"}) {
        EXPECT_NE(r.out.find(part), std::string::npos) << part;
    }
    auto sub = hactl(tmp, {"switch", "--help"});
    EXPECT_EQ(sub.code, 0);
    EXPECT_EQ(sub.out.find("usage: fcm-hactl switch"), 0u) << sub.out;
}

TEST(Hactl, KeygenWritesAPrivateKeyAndKeepsAnExistingOne) {
    TempDir tmp;
    std::string key = tmp.path() + "/ha.key";
    auto r = hactl(tmp, {"keygen", key});
    EXPECT_EQ(r.code, 0) << r.err;
    struct stat st {};
    ASSERT_EQ(::stat(key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto first = read_file(key);
    ASSERT_TRUE(first);
    auto again = hactl(tmp, {"keygen", key});
    EXPECT_EQ(again.code, 1);
    EXPECT_NE(again.err.find("--force"), std::string::npos);
    EXPECT_EQ(read_file(key).value_or(""), *first);
    EXPECT_EQ(hactl(tmp, {"keygen", key, "--force"}).code, 0);
    EXPECT_NE(read_file(key).value_or(""), *first);
}

// Last: the parser is the core's; these check that the CLI reports its verdict faithfully.
TEST(HactlConfigCheck, GoodFileIsOk) {
    TempDir tmp;
    std::string file = tmp.path() + "/ha.toml";
    ASSERT_TRUE(write_file_atomic(file,
                                  "[ha]\n"
                                  "enable = true\n"
                                  "station_type = \"primary\"\n"
                                  "cluster_ip = \"198.18.0.100/24\"\n"
                                  "peer_ip = \"198.18.1.2\"\n"
                                  "heartbeat_port = 9527\n"
                                  "heartbeat_timeout = 7\n"
                                  "heartbeat_interface = \"hb0\"\n"
                                  "lan_interface = \"lan0\"\n"));
    auto r = hactl(tmp, {"config", "check", file});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_EQ(r.out, file + ": OK\n");
}

TEST(HactlConfigCheck, BadFileListsEveryIssueWithLineKeyAndValue) {
    TempDir tmp;
    std::string file = tmp.path() + "/bad.toml";
    ASSERT_TRUE(write_file_atomic(file,
                                  "[ha]\n"
                                  "enable = true\n"
                                  "station_type = \"tertiary\"\n"
                                  "cluster_ip = \"198.18.0.100/24\"\n"
                                  "peer_ip = \"198.18.1.2\"\n"
                                  "heartbeat_port = 70000\n"
                                  "heartbeat_timeout = 11\n"
                                  "heartbeat_interface = \"hb0\"\n"
                                  "lan_interface = \"lan0\"\n"));
    auto r = hactl(tmp, {"config", "check", file});
    EXPECT_EQ(r.code, 1);
    std::vector<std::string> lines;
    for (std::size_t pos = 0, nl; (nl = r.out.find('\n', pos)) != std::string::npos; pos = nl + 1) {
        lines.push_back(r.out.substr(pos, nl - pos));
    }
    ASSERT_EQ(lines.size(), 3u) << r.out;
    EXPECT_EQ(lines[0].find(file + ":3: ha.station_type = \"tertiary\": "), 0u) << lines[0];
    EXPECT_EQ(lines[1].find(file + ":6: ha.heartbeat_port = 70000: "), 0u) << lines[1];
    EXPECT_EQ(lines[2].find(file + ":7: ha.heartbeat_timeout = 11: "), 0u) << lines[2];
    auto missing = hactl(tmp, {"config", "check", tmp.path() + "/nope.toml"});
    EXPECT_EQ(missing.code, 2);
    EXPECT_NE(missing.err.find("nope.toml"), std::string::npos);
}

}  // namespace
}  // namespace ha::api
