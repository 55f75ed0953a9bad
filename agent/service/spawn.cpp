#include "agent/service/spawn.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

namespace ha::service {

namespace {
std::optional<cpu_set_t>& child_cpus() {
    static std::optional<cpu_set_t> cpus;
    return cpus;
}
}  // namespace

void set_child_cpus(const cpu_set_t& cpus) {
    child_cpus() = cpus;
}

void use_child_cpus() {
    if (const auto& cpus = child_cpus()) (void)::sched_setaffinity(0, sizeof *cpus, &*cpus);
}

Result<pid_t> spawn_shell(const std::string& cmd, bool own_group) {
    const pid_t pid = ::fork();
    if (pid < 0) return last_errno("fork for '" + cmd + "'");
    if (pid == 0) {
        if (own_group) ::setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        use_child_cpus();
        ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    return pid;
}

bool run_shell(const std::string& cmd) {
    auto pid = spawn_shell(cmd, false);
    if (!pid) return false;
    int status = 0;
    while (::waitpid(*pid, &status, 0) < 0) {
        if (errno != EINTR) return false;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace ha::service
