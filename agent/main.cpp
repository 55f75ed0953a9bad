// fcm-ha-agent: the HA daemon, one per box. Reads the configuration, refuses to start on any bad
// value (all of them listed), then runs the io_uring loop until SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "agent/agent.hpp"
#include "agent/core/config.hpp"
#include "common/atomic_file.hpp"
#include "common/log.hpp"

#ifndef HA_VERSION
#define HA_VERSION "0.0.0"
#endif
#ifndef HA_MODEL
#define HA_MODEL "FCM630A"
#endif
#ifndef HA_PROTO_VERSION
#define HA_PROTO_VERSION 1
#endif

namespace {

constexpr const char* kUsage = R"(Usage: fcm-ha-agent [--config PATH] [--log-level LEVEL] [--check]

The high-availability agent of an FCM630A IP PBX pair. Run one per box, as root (it needs
CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN), normally from fcm-ha-agent.service.

Options:
  --config PATH         configuration file (default /etc/fcm-ha/ha.toml)
  --log-level LEVEL     error | warn | info | debug (default: [log] level, else info)
  --version-override V  report software version V to the peer (rolling-upgrade drills)
  --model-override M    report model M to the peer (drills: another model must not pair)
  --check               validate the configuration, print every issue, and exit
  --version             print the version and exit
  -h, --help            this text

Exit codes: 0 clean stop, 1 bad configuration, 2 bad arguments, 3 start-up failure.
Operate it with fcm-hactl (status, switch, log, events, config, sync).
)";

}  // namespace

int main(int argc, char** argv) {
    std::string config_path = "/etc/fcm-ha/ha.toml";
    std::string level_text;
    std::string version = HA_VERSION;
    std::string model = HA_MODEL;
    bool check_only = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto need = [&](const char* what) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "fcm-ha-agent: %s needs a value\n", what);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (a == "--version") {
            std::printf("fcm-ha-agent %s (model %s, protocol %d)\n", HA_VERSION, HA_MODEL,
                        HA_PROTO_VERSION);
            return 0;
        } else if (a == "--config") {
            config_path = need("--config");
        } else if (a == "--log-level") {
            level_text = need("--log-level");
        } else if (a == "--version-override") {
            version = need("--version-override");
        } else if (a == "--model-override") {
            model = need("--model-override");
        } else if (a == "--check") {
            check_only = true;
        } else {
            std::fprintf(stderr, "fcm-ha-agent: unknown argument '%s' (see --help)\n", a.c_str());
            return 2;
        }
    }
    if (!level_text.empty()) {
        ha::log::Level lvl;
        if (!ha::log::parse_level(level_text, lvl)) {
            std::fprintf(stderr, "fcm-ha-agent: --log-level '%s': use error, warn, info or debug\n",
                         level_text.c_str());
            return 2;
        }
        ha::log::set_level(lvl);
    }
    if (std::getenv("JOURNAL_STREAM") != nullptr) ha::log::set_journal_prefix(true);

    auto text = ha::read_file(config_path);
    if (!text) {
        std::fprintf(stderr, "fcm-ha-agent: cannot read configuration: %s\n",
                     text.error().message().c_str());
        return 1;
    }
    auto report = ha::core::parse_config(*text);
    if (!report.config) {
        std::fprintf(stderr, "fcm-ha-agent: %s has %zu problem(s); not starting:\n",
                     config_path.c_str(), report.issues.size());
        // The same "FILE:LINE: key = value: message" form as `fcm-hactl config check`.
        for (const auto& issue : report.issues) {
            std::string where =
                issue.line > 0 ? config_path + ":" + std::to_string(issue.line) : config_path;
            std::string what = issue.key.empty() ? issue.message
                               : issue.value.empty()
                                   ? issue.key + ": " + issue.message
                                   : issue.key + " = " + issue.value + ": " + issue.message;
            std::fprintf(stderr, "  %s: %s\n", where.c_str(), what.c_str());
        }
        return 1;
    }
    if (check_only) {
        std::printf("%s: OK\n", config_path.c_str());
        return 0;
    }
    // Block the signals the loop reads through its signalfd before any thread exists: a thread
    // started with them unblocked would take SIGTERM's default action and kill the process
    // without the clean stop (release the cluster IP, hand over, detach XDP).
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    ha::core::Config cfg = std::move(*report.config);
    if (level_text.empty()) {
        ha::log::Level lvl;
        if (ha::log::parse_level(cfg.log_level, lvl)) ha::log::set_level(lvl);
    }
    if (cfg.node_name.empty()) {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        cfg.node_name = host;
    }
    auto agent = ha::Agent::create(std::move(cfg), config_path, {model, HA_PROTO_VERSION, version});
    if (!agent) {
        ha::log::error("agent", "cannot start: {}", agent.error().message());
        return 3;
    }
    return (*agent)->run();
}
