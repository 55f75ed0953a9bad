// Child processes (the PBX, probe and stop commands) and helper threads of the agent, and what
// they must not inherit from the loop thread: it runs the prober at SCHED_FIFO, pinned to one CPU
// when ha.prober_cpu is set. The real-time policy does not pass on (the loop thread sets it with
// SCHED_RESET_ON_FORK); the CPU pin would, so children and helper threads take back the CPUs
// recorded here.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <string>

#include "common/result.hpp"

namespace ha::service {

// Records the CPUs children get; call before the loop thread pins itself.
void set_child_cpus(const cpu_set_t& cpus);
// The calling thread goes back to the recorded CPUs (nothing recorded: nothing to do).
void use_child_cpus();

// fork + `sh -c cmd` with the default signal mask (the agent blocks the signals its signalfd
// reads) and the recorded CPUs. `own_group`: the child leads a process group of its own.
Result<pid_t> spawn_shell(const std::string& cmd, bool own_group);
// spawn_shell, then waits for it. True when it exited with status 0.
bool run_shell(const std::string& cmd);

}  // namespace ha::service
