// A sync engine in its own process, for tests that kill -9 one side mid-transfer.
// usage: sync_peer active|standby <roots-base> <state-dir> <peer-ip> <listen-ip> <k0-hex> <k1-hex>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/log.hpp"
#include "sync/engine.hpp"

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(
            stderr,
            "usage: %s active|standby <roots-base> <state-dir> <peer-ip> <listen-ip> <k0> <k1>\n",
            argv[0]);
        return 2;
    }
    const std::string role = argv[1];
    const std::string base = argv[2];
    ha::sync::SyncConfig c;
    c.roots = {{base + "/vm", ha::sync::Mode::File},
               {base + "/cdr", ha::sync::Mode::Append},
               {base + "/db", ha::sync::Mode::Sqlite}};
    c.state_dir = argv[3];
    auto peer = ha::IpAddr::parse(argv[4]);
    auto listen = ha::IpAddr::parse(argv[5]);
    if (!peer || !listen || (role != "active" && role != "standby")) {
        std::fprintf(stderr, "bad role or address\n");
        return 2;
    }
    c.peer = *peer;
    c.listen = *listen;
    c.key = ha::Key{std::strtoull(argv[6], nullptr, 16), std::strtoull(argv[7], nullptr, 16)};
    c.full_backup_minute = -1;
    c.io_timeout = std::chrono::milliseconds(1500);
    c.reconnect_max = std::chrono::milliseconds(300);
    auto e = ha::sync::Engine::create(c);
    if (!e) {
        std::fprintf(stderr, "engine: %s\n", e.error().message().c_str());
        return 1;
    }
    (*e)->set_role(role == "active" ? ha::sync::Role::Active : ha::sync::Role::Standby);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}
