// fcm-hactl: the operator CLI of fcm-ha. Talks to fcm-ha-agent over its control socket (one JSON
// request line, one JSON answer line); `config check` and `keygen` work without the agent.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/api/client.hpp"
#include "agent/api/store_queries.hpp"
#include "agent/core/config.hpp"
#include "common/atomic_file.hpp"
#include "common/keyfile.hpp"
#include "tools/hactl/render.hpp"

namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;      // the agent refused, or config check found issues
constexpr int kExitUsage = 2;       // bad command line
constexpr int kExitNotRunning = 3;  // no agent listening on the socket
constexpr int kExitComm = 4;        // talking to the agent failed (timeout, permission, garbage)

constexpr std::string_view kDefaultSocket = "/run/fcm-ha/agent.sock";
constexpr std::chrono::milliseconds kDefaultTimeout{10000};
// A force switch waits for the sync stream to drain (switch_drain_timeout, 10 s by default).
constexpr std::chrono::milliseconds kSwitchTimeout{60000};

constexpr std::string_view kMainHelp = R"(usage: fcm-hactl [OPTIONS] COMMAND [ARGS]

Operator CLI of the fcm-ha high-availability agent (fcm-ha-agent).

Commands:
  status                 HA status of this box: HA Status, Full Backup Status, MAC, role,
                         station type, peer, term, uptime, heartbeat, sync lag, faults, alerts
  switch                 force switch: swap the active and standby roles (active box only,
                         HA Status Dual, after the sync stream is drained)
  config show            the running configuration
  config check FILE      check a configuration file offline; every problem, one per line
  config set KEY VALUE   change one setting through the agent (refused on the standby)
  log backup             the HA backup log, newest first
  log failover           the HA failover log (role changes, causes, timings), newest first
  events                 system events ("HA failure warning" alerts), newest first
  sync status            data sync state and lag
  sync full              start a full backup to the standby now
  keygen FILE            write a new random shared key file (mode 0600), offline
  debug SUBSYS on|off    switch debug logging of one subsystem (hb, sync, nl, api, ...)
  help [COMMAND]         this text, or the help of one command

Options:
  --socket PATH          control socket of the agent (default: control_socket from
                         --config, else $FCM_HA_SOCKET, else /run/fcm-ha/agent.sock)
  --config FILE          take the control socket path from this agent configuration
  --json                 print the agent's JSON answer instead of the human form
  --timeout SECONDS      how long to wait for the agent (default 10, switch 60)
  --limit N              log/events: how many records (default 50, at most 10000)
  -h, --help             help; `fcm-hactl COMMAND --help` for one command

Exit codes:
  0  success
  1  the agent refused or the command failed (the reason is printed), or config check
     found problems
  2  bad command line (unknown command, option or argument)
  3  fcm-ha-agent is not running (nobody listens on the control socket)
  4  could not talk to the agent (timeout, permission denied, malformed answer)

Examples:
  fcm-hactl status
  fcm-hactl --json status | jq .role
  fcm-hactl config check /etc/fcm-ha/ha.toml
  fcm-hactl config set ha.heartbeat_timeout 5
  fcm-hactl log backup --limit 10
  fcm-hactl --socket /run/fcm-ha-b/agent.sock switch
)";

const std::map<std::string, std::string, std::less<>> kCommandHelp = {
    {"status", R"(usage: fcm-hactl [--json] status

Shows the guide's HA Status page (HA Status: Dual/Single/Off, HA Full Backup Status:
Idle/In progress, MAC Address and Role of Current FCM), then station type, peer (address, MAC,
role, last seen, RTT), term, uptime, heartbeat mode (native XDP / generic XDP / user space),
sync lag, raised faults and alerts.
Exit: 0, 3 when the agent is not running, 4 on communication errors.
)"},
    {"switch", R"(usage: fcm-hactl switch

Force switch (guide: "Force Switch"): the active box drains the sync stream, then the standby
takes over and this box becomes standby. Only on the active, only while HA Status is Dual.
When refused, the agent's reason is printed and the exit status is 1.
Example: fcm-hactl switch
)"},
    {"config", R"(usage: fcm-hactl config show
       fcm-hactl config check FILE
       fcm-hactl config set KEY VALUE

show   prints the running configuration (TOML) of the agent.
check  parses FILE offline (no agent needed) and prints every problem as
       "FILE:LINE: key = value: message"; exit 1 if there is any, else prints "FILE: OK".
set    changes one key in the agent's configuration file and applies it. The standby refuses:
       "configuration is restricted on the standby". VALUE is written as TOML would read it.
Examples:
  fcm-hactl config check /etc/fcm-ha/ha.toml
  fcm-hactl config set ha.software_fault_switch true
)"},
    {"log", R"(usage: fcm-hactl log backup|failover [--limit N]

backup    the HA backup log: "[2021-06-15 03:00:35 AM] HA backup success!!" lines with files,
          bytes and duration (or the error of a failed backup).
failover  every role change with its cause, term and timings (detection, takeover, service ready).
Newest first; --limit N (default 50).
)"},
    {"events", R"(usage: fcm-hactl events [--limit N]

System events as the guide's system events page shows them: TIME, EVENT NAME
("HA failure warning"), TYPE ("Generate Alert" / "Restore to normal"), CONTENT
("MAC: ... -- HEARTBEAT ... loose connection"). Newest first; --limit N (default 50).
)"},
    {"sync", R"(usage: fcm-hactl sync status|full

status  data sync state: connected, lag in bytes and age of the oldest unacknowledged change.
full    start a full backup to the standby now (the daily one runs at full_backup_time).
)"},
    {"keygen", R"(usage: fcm-hactl keygen FILE [--force]

Writes a new random 128-bit shared key (32 hex digits) to FILE with mode 0600, atomically.
Both boxes need the same key file. An existing FILE is kept unless --force is given.
)"},
    {"debug", R"(usage: fcm-hactl debug SUBSYS on|off

Switches debug logging for one subsystem of the running agent (hb, sync, nl, api, core, ...).
Example: fcm-hactl debug hb on
)"},
    {"help", R"(usage: fcm-hactl help [COMMAND]
)"},
};

struct Cli {
    std::optional<std::string> socket;
    std::optional<std::string> config;
    bool json = false;
    bool help = false;
    bool force = false;
    std::optional<std::chrono::milliseconds> timeout;
    std::optional<std::size_t> limit;
    std::vector<std::string> args;
};

void print(std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
}

// An error: `shown` on stderr, and with --json {"ok": false, "error": message, ...extra} on
// stdout, so a script reading stdout gets JSON whatever went wrong.
int report_error(bool json_out, int code, const std::string& message, const std::string& shown,
                 json extra = json::object()) {
    if (json_out) {
        extra["ok"] = false;
        extra["error"] = message;
        print(extra.dump(2) + "\n");
    }
    std::fprintf(stderr, "fcm-hactl: %s\n", shown.c_str());
    return code;
}

// A bad command line.
int usage_error(bool json_out, const std::string& message) {
    return report_error(json_out, kExitUsage, message, message + " (see fcm-hactl --help)");
}
int usage_error(const Cli& cli, const std::string& message) {
    return usage_error(cli.json, message);
}

std::optional<std::uint64_t> parse_uint(std::string_view s) {
    if (s.empty() || s.size() > 18) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

// Returns "" on success, else the usage error.
std::string parse_args(int argc, char** argv, Cli& cli) {
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&](std::string_view name, std::string& out) -> std::string {
            std::string prefix = std::string(name) + "=";
            if (a.substr(0, prefix.size()) == prefix) {
                out = std::string(a.substr(prefix.size()));
            } else if (i + 1 < argc) {
                out = argv[++i];
            } else {
                return "option " + std::string(name) + " needs a value";
            }
            if (out.empty()) return "option " + std::string(name) + " needs a non-empty value";
            return {};
        };
        auto is = [&](std::string_view name) {
            return a == name || (a.size() > name.size() && a.substr(0, name.size()) == name &&
                                 a[name.size()] == '=');
        };
        std::string v;
        if (a == "--json") {
            cli.json = true;
        } else if (a == "-h" || a == "--help") {
            cli.help = true;
        } else if (a == "--force") {
            cli.force = true;
        } else if (is("--socket")) {
            if (auto e = value("--socket", v); !e.empty()) return e;
            cli.socket = v;
        } else if (is("--config")) {
            if (auto e = value("--config", v); !e.empty()) return e;
            cli.config = v;
        } else if (is("--timeout")) {
            if (auto e = value("--timeout", v); !e.empty()) return e;
            auto n = parse_uint(v);
            if (!n || *n == 0 || *n > 3600) {
                return "--timeout '" + v + "': must be whole seconds, 1-3600";
            }
            cli.timeout = std::chrono::seconds(*n);
        } else if (is("--limit")) {
            if (auto e = value("--limit", v); !e.empty()) return e;
            auto n = parse_uint(v);
            if (!n || *n == 0 || *n > ha::api::kMaxLogLimit) {
                return "--limit '" + v + "': must be 1-" + std::to_string(ha::api::kMaxLogLimit);
            }
            cli.limit = static_cast<std::size_t>(*n);
        } else if (a.size() > 1 && a[0] == '-') {
            return "unknown option '" + std::string(a) + "'";
        } else {
            cli.args.emplace_back(a);
        }
    }
    return {};
}

// --socket, then --config's control_socket, then $FCM_HA_SOCKET, then the default.
std::optional<std::string> resolve_socket(const Cli& cli, std::string& error) {
    if (cli.socket) return *cli.socket;
    if (cli.config) {
        auto text = ha::read_file(*cli.config);
        if (!text) {
            error = "--config " + *cli.config + ": " + text.error().message();
            return std::nullopt;
        }
        auto report = ha::core::parse_config(*text);
        if (!report.config) {
            error = "--config " + *cli.config + " has " + std::to_string(report.issues.size()) +
                    " problem(s); run: fcm-hactl config check " + *cli.config;
            return std::nullopt;
        }
        return report.config->control_socket;
    }
    if (const char* env = std::getenv("FCM_HA_SOCKET"); env != nullptr && *env != '\0') {
        return std::string(env);
    }
    return std::string(kDefaultSocket);
}

// Sends one request and prints the answer: the JSON as is with --json, else `render(answer)`.
template <typename Render>
int agent_call(const Cli& cli, const json& request, std::chrono::milliseconds default_timeout,
               Render render, std::string_view refused_prefix = "") {
    std::string error;
    auto socket = resolve_socket(cli, error);
    if (!socket) return usage_error(cli, error);
    auto answer = ha::api::call(*socket, request, cli.timeout.value_or(default_timeout));
    if (!answer) {
        const auto& e = answer.error();
        bool down = ha::api::is_not_running(e);
        const std::string msg = down ? e.context : e.message();
        return report_error(cli.json, down ? kExitNotRunning : kExitComm, msg, msg);
    }
    const json& a = *answer;
    bool ok = a.value("ok", false);
    if (cli.json) {
        print(a.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
        return ok ? kExitOk : kExitFailed;
    }
    if (!ok) {
        std::string reason = a.contains("error") && a["error"].is_string()
                                 ? a["error"].get<std::string>()
                                 : std::string("the agent gave no reason");
        // "force switch refused: ..." from the agent needs no "switch refused: " in front.
        if (reason.find("refused") != std::string::npos) refused_prefix = {};
        std::fprintf(stderr, "%.*s%s\n", static_cast<int>(refused_prefix.size()),
                     refused_prefix.data(), reason.c_str());
        return kExitFailed;
    }
    print(render(a));
    return kExitOk;
}

std::string message_or(const json& a, std::string_view fallback) {
    if (auto it = a.find("message"); it != a.end() && it->is_string()) {
        return it->get<std::string>() + "\n";
    }
    return std::string(fallback) + "\n";
}

std::string issue_line(const std::string& file, const ha::core::ConfigIssue& is) {
    std::string where = is.line > 0 ? file + ":" + std::to_string(is.line) : file;
    std::string what = is.key;
    if (!is.value.empty()) what += " = " + is.value;
    return where + ": " + (what.empty() ? "" : what + ": ") + is.message;
}

int config_check(const Cli& cli, const std::string& file) {
    auto text = ha::read_file(file);
    if (!text) return usage_error(cli, "config check: " + text.error().message());
    auto report = ha::core::parse_config(*text);
    std::vector<ha::core::ConfigIssue> issues = report.issues;
    if (report.config) {
        // parse_config may already include these; report each problem once.
        for (auto& extra : ha::core::validate(*report.config)) {
            bool seen = false;
            for (const auto& is : issues) {
                seen = seen || (is.key == extra.key && is.message == extra.message);
            }
            if (!seen) issues.push_back(std::move(extra));
        }
    }
    if (cli.json) {
        json arr = json::array();
        for (const auto& is : issues) {
            arr.push_back(
                {{"key", is.key}, {"value", is.value}, {"message", is.message}, {"line", is.line}});
        }
        print(json{{"ok", issues.empty()}, {"file", file}, {"issues", arr}}.dump(2) + "\n");
    } else if (issues.empty()) {
        print(file + ": OK\n");
    } else {
        for (const auto& is : issues) print(issue_line(file, is) + "\n");
    }
    return issues.empty() ? kExitOk : kExitFailed;
}

int keygen(const Cli& cli, const std::string& file) {
    auto failed = [&](const std::string& message) {
        return report_error(cli.json, kExitFailed, message, "keygen: " + message,
                            json{{"file", file}});
    };
    if (!cli.force && ::access(file.c_str(), F_OK) == 0) {
        return failed(file +
                      " exists; both boxes must hold the same key, so it is kept (use --force to "
                      "replace it)");
    }
    if (auto st = ha::write_new_key_file(file); !st) return failed(st.error().message());
    if (cli.json) {
        print(json{{"ok", true}, {"file", file}}.dump(2) + "\n");
    } else {
        print("wrote a new key to " + file + " (mode 0600); copy it to the peer box\n");
    }
    return kExitOk;
}

int expect_args(const Cli& cli, std::size_t n, const std::string& usage) {
    if (cli.args.size() == n) return -1;
    if (cli.args.size() > n) {
        return usage_error(cli, "unexpected argument '" + cli.args[n] + "'; usage: " + usage);
    }
    return usage_error(cli, "missing argument; usage: " + usage);
}

int run(const Cli& cli) {
    const std::string& cmd = cli.args[0];
    auto sub = [&]() -> std::string { return cli.args.size() > 1 ? cli.args[1] : std::string(); };
    auto limit_json = [&](json req) {
        if (cli.limit) req["limit"] = *cli.limit;
        return req;
    };
    if (cli.limit && cmd != "log" && cmd != "events") {
        return usage_error(cli, "--limit applies only to log and events, not '" + cmd + "'");
    }
    if (cli.force && cmd != "keygen") {
        return usage_error(cli, "--force applies only to keygen, not '" + cmd + "'");
    }

    if (cmd == "status") {
        if (int rc = expect_args(cli, 1, "fcm-hactl status"); rc >= 0) return rc;
        return agent_call(cli, {{"cmd", "status"}}, kDefaultTimeout,
                          [](const json& a) { return ha::hactl::render_status(a); });
    }
    if (cmd == "switch") {
        if (int rc = expect_args(cli, 1, "fcm-hactl switch"); rc >= 0) return rc;
        return agent_call(
            cli, {{"cmd", "switch"}}, kSwitchTimeout,
            [](const json& a) { return message_or(a, "switch done: roles swapped"); },
            "switch refused: ");
    }
    if (cmd == "config") {
        std::string s = sub();
        if (s == "show") {
            if (int rc = expect_args(cli, 2, "fcm-hactl config show"); rc >= 0) return rc;
            return agent_call(cli, {{"cmd", "config_show"}}, kDefaultTimeout, [](const json& a) {
                std::string t = a.value("toml", std::string());
                if (!t.empty() && t.back() != '\n') t.push_back('\n');
                return t;
            });
        }
        if (s == "check") {
            if (int rc = expect_args(cli, 3, "fcm-hactl config check FILE"); rc >= 0) return rc;
            return config_check(cli, cli.args[2]);
        }
        if (s == "set") {
            if (int rc = expect_args(cli, 4, "fcm-hactl config set KEY VALUE"); rc >= 0) return rc;
            return agent_call(
                cli, {{"cmd", "config_set"}, {"key", cli.args[2]}, {"value", cli.args[3]}},
                kDefaultTimeout,
                [&](const json& a) {
                    return message_or(a, cli.args[2] + " = " + cli.args[3] + ": applied");
                },
                "config set refused: ");
        }
        return usage_error(cli, s.empty() ? "config needs show, check FILE or set KEY VALUE"
                                          : "unknown config subcommand '" + s + "'");
    }
    if (cmd == "log") {
        std::string s = sub();
        if (s != "backup" && s != "failover") {
            return usage_error(cli, s.empty() ? "log needs backup or failover"
                                              : "unknown log '" + s + "' (backup or failover)");
        }
        if (int rc = expect_args(cli, 2, "fcm-hactl log backup|failover"); rc >= 0) return rc;
        return agent_call(cli, limit_json({{"cmd", "log"}, {"which", s}}), kDefaultTimeout,
                          [s](const json& a) {
                              return s == "backup" ? ha::hactl::render_backup_log(a)
                                                   : ha::hactl::render_failover_log(a);
                          });
    }
    if (cmd == "events") {
        if (int rc = expect_args(cli, 1, "fcm-hactl events"); rc >= 0) return rc;
        return agent_call(cli, limit_json({{"cmd", "events"}}), kDefaultTimeout,
                          [](const json& a) { return ha::hactl::render_events(a); });
    }
    if (cmd == "sync") {
        std::string s = sub();
        if (s == "status") {
            if (int rc = expect_args(cli, 2, "fcm-hactl sync status"); rc >= 0) return rc;
            return agent_call(cli, {{"cmd", "sync_status"}}, kDefaultTimeout, [](const json& a) {
                const json& sy = a.contains("sync") ? a["sync"] : a;
                return "Sync: " + ha::hactl::render_sync(sy) + "\n";
            });
        }
        if (s == "full") {
            if (int rc = expect_args(cli, 2, "fcm-hactl sync full"); rc >= 0) return rc;
            return agent_call(
                cli, {{"cmd", "sync_full"}}, kDefaultTimeout,
                [](const json& a) { return message_or(a, "full backup started"); },
                "sync full refused: ");
        }
        return usage_error(
            cli, s.empty() ? "sync needs status or full" : "unknown sync subcommand '" + s + "'");
    }
    if (cmd == "keygen") {
        if (int rc = expect_args(cli, 2, "fcm-hactl keygen FILE"); rc >= 0) return rc;
        return keygen(cli, cli.args[1]);
    }
    if (cmd == "debug") {
        if (int rc = expect_args(cli, 3, "fcm-hactl debug SUBSYS on|off"); rc >= 0) return rc;
        const std::string& onoff = cli.args[2];
        if (onoff != "on" && onoff != "off") {
            return usage_error(cli, "debug: '" + onoff + "' must be on or off");
        }
        bool on = onoff == "on";
        return agent_call(
            cli, {{"cmd", "debug"}, {"subsystem", cli.args[1]}, {"on", on}}, kDefaultTimeout,
            [&](const json&) { return "debug logging for " + cli.args[1] + ": " + onoff + "\n"; });
    }
    return usage_error(cli, "unknown command '" + cmd + "'");
}

// json_out: --json anywhere on the line (it may follow a bad argument; the error is JSON too).
int hactl_main(int argc, char** argv, bool json_out) {
    Cli cli;
    cli.json = json_out;
    if (auto err = parse_args(argc, argv, cli); !err.empty()) return usage_error(cli, err);
    if (!cli.args.empty() && cli.args[0] == "help") {
        cli.help = true;
        cli.args.erase(cli.args.begin());
    }
    if (cli.help) {
        if (cli.args.empty()) {
            print(kMainHelp);
            return kExitOk;
        }
        auto it = kCommandHelp.find(cli.args[0]);
        if (it == kCommandHelp.end())
            return usage_error(cli, "unknown command '" + cli.args[0] + "'");
        print(it->second);
        return kExitOk;
    }
    if (cli.args.empty()) {
        if (cli.json) return usage_error(cli, "no command given");
        std::fputs(kMainHelp.data(), stderr);
        return kExitUsage;
    }
    return run(cli);
}

}  // namespace

int main(int argc, char** argv) {
    bool json_out = false;
    for (int i = 1; i < argc; ++i) json_out = json_out || std::string_view(argv[i]) == "--json";
    auto report = [&](const std::string& message, int code) {
        return report_error(json_out, code, message, message);
    };
    // nlohmann::json throws on an answer of the wrong shape ({"ok": "yes"}): that is the agent
    // talking nonsense (exit 4), not a reason for the CLI to abort with a core dump.
    try {
        return hactl_main(argc, argv, json_out);
    } catch (const json::exception& e) {
        return report(std::string("malformed answer from the agent: ") + e.what(), kExitComm);
    } catch (const std::exception& e) {
        return report(std::string("internal error: ") + e.what(), kExitFailed);
    }
}
