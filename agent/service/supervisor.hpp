// Runs the PBX service and watches it: a shell command in its own process group, or a systemd
// unit. Exit is observed through a pidfd the agent's io_uring loop polls; stop sends SIGTERM to
// the whole group (Kamailio's workers keep answering SIP if only the main PID dies), then SIGKILL
// after stop_timeout. Called on the loop thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "agent/core/config.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::service {

struct ExitInfo {
    int status = 0;  // exit code, or the signal number when signalled
    bool signalled = false;
    bool core_dumped = false;
    bool expected = false;  // we asked it to stop
    [[nodiscard]] std::string describe() const;
};

class Supervisor {
  public:
    explicit Supervisor(core::ServiceConfig cfg) : cfg_(std::move(cfg)) {}
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;
    ~Supervisor();

    [[nodiscard]] bool configured() const { return !cfg_.start.empty() || !cfg_.unit.empty(); }
    Status start();
    // Asks the service to stop; returns at once. The pidfd reports the exit; the loop calls
    // kill_deadline()/on_deadline() to escalate to SIGKILL.
    Status stop();
    [[nodiscard]] bool running() const { return pid_ > 0; }
    // Asked to stop, not yet reaped: a start now must wait for the exit (restart).
    [[nodiscard]] bool stopping() const { return pid_ > 0 && stopping_; }
    // -1 when not running. Readable (POLLIN) when the process has exited.
    [[nodiscard]] int pidfd() const { return pidfd_.get(); }
    // Call when pidfd is readable: reaps the child and reports how it ended.
    std::optional<ExitInfo> reap();
    [[nodiscard]] std::optional<TimePoint> kill_deadline() const { return kill_at_; }
    void on_deadline(TimePoint now);
    [[nodiscard]] pid_t pid() const { return pid_; }

  private:
    core::ServiceConfig cfg_;
    pid_t pid_ = -1;
    UniqueFd pidfd_;
    bool stopping_ = false;
    std::optional<TimePoint> kill_at_;
};

}  // namespace ha::service
