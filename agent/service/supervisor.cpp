#include "agent/service/supervisor.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "agent/service/spawn.hpp"
#include "common/log.hpp"

namespace ha::service {

std::string ExitInfo::describe() const {
    if (signalled)
        return fmt::format("killed by signal {} ({}){}", status, strsignal(status),
                           core_dumped ? ", core dumped" : "");
    return fmt::format("exited with status {}", status);
}

Supervisor::~Supervisor() {
    if (pid_ > 0) {
        ::kill(-pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
}

Status Supervisor::start() {
    if (pid_ > 0) return {};
    if (!configured()) return {};
    std::string cmd =
        cfg_.unit.empty() ? cfg_.start : fmt::format("exec systemctl start --wait {}", cfg_.unit);
    // Own process group, so stop() reaches every worker.
    auto spawned = spawn_shell(cmd, true);
    if (!spawned) return unexpected(spawned.error().wrap("service start"));
    const pid_t pid = *spawned;
    ::setpgid(pid, pid);  // both sides set it: no race with an early stop()
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
        int err = errno;
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return errno_error(err, "pidfd_open");
    }
    pid_ = pid;
    pidfd_.reset(fd);
    stopping_ = false;
    kill_at_.reset();
    log::info("service", "started pid={} cmd=\"{}\"", pid, cmd);
    return {};
}

Status Supervisor::stop() {
    if (pid_ <= 0) return {};
    if (!cfg_.unit.empty()) {
        // `systemctl start --wait` returns when the unit stops; ask systemd to stop it.
        std::string cmd = fmt::format("systemctl stop --no-block {}", cfg_.unit);
        if (!run_shell(cmd)) log::warn("service", "'{}' failed", cmd);
    } else if (!cfg_.stop.empty()) {
        std::string cmd = cfg_.stop;
        if (!run_shell(cmd)) log::warn("service", "stop command '{}' failed", cmd);
    }
    ::kill(-pid_, SIGTERM);
    stopping_ = true;
    kill_at_ = Clock::now() + std::chrono::duration_cast<Duration>(cfg_.stop_timeout);
    return {};
}

void Supervisor::on_deadline(TimePoint now) {
    if (kill_at_ && now >= *kill_at_ && pid_ > 0) {
        log::warn("service", "pid={} did not stop within {}ms: SIGKILL to its group", pid_,
                  std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.stop_timeout).count());
        ::kill(-pid_, SIGKILL);
        kill_at_.reset();
    }
}

std::optional<ExitInfo> Supervisor::reap() {
    if (pid_ <= 0) return std::nullopt;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return std::nullopt;
    ExitInfo info;
    if (r > 0) {
        if (WIFSIGNALED(status)) {
            info.signalled = true;
            info.status = WTERMSIG(status);
            info.core_dumped = WCOREDUMP(status);
        } else {
            info.status = WEXITSTATUS(status);
        }
    }
    info.expected = stopping_;
    // The main process is gone; make sure no worker of its group lingers on the cluster IP.
    ::kill(-pid_, SIGKILL);
    log::info("service", "pid={} {}{}", pid_, info.describe(), info.expected ? " (requested)" : "");
    pid_ = -1;
    pidfd_.reset();
    stopping_ = false;
    kill_at_.reset();
    return info;
}

}  // namespace ha::service
