// The agent: owns the pure state machine and every adapter, turns adapter output into events and
// the machine's actions into syscalls, in the order the machine gave them. One thread (the loop)
// runs all of it; the control server, the sync engine and the metrics server have their own
// threads and talk to the loop through lock-free queues and eventfds.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/core/config.hpp"
#include "agent/core/machine.hpp"
#include "common/result.hpp"

namespace ha {

struct BuildInfo {
    std::string model;
    std::uint16_t proto = 1;
    std::string version;
};

class Agent {
  public:
    static Result<std::unique_ptr<Agent>> create(core::Config cfg, std::string config_path,
                                                 BuildInfo build);
    ~Agent();
    Agent(const Agent&) = delete;
    Agent& operator=(const Agent&) = delete;

    // Runs until SIGTERM/SIGINT (clean stop: release the cluster IP, stop the PBX, detach XDP).
    // Returns the process exit code.
    int run();

    struct Impl;

  private:
    explicit Agent(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace ha
