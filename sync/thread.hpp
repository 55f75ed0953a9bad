// A joinable thread with a small, fixed stack. The agent locks its memory (mlockall with
// MCL_FUTURE), so the whole stack of every new thread is faulted in and pinned when it starts:
// with the default 8 MiB that took ~4 ms per thread in the lab VM and delayed the standby's first
// connection after a role change by two helper threads' worth. Also names the thread.
#pragma once

#include <pthread.h>

#include <cstddef>
#include <functional>
#include <memory>

#include "common/result.hpp"

namespace ha::sync {

class SmallThread {
  public:
    // `name` at most 15 characters. Fails only when the system cannot start a thread.
    static Result<std::unique_ptr<SmallThread>> start(const char* name, std::function<void()> fn,
                                                      std::size_t stack_bytes = 512u << 10);
    ~SmallThread();  // joins
    SmallThread(const SmallThread&) = delete;
    SmallThread& operator=(const SmallThread&) = delete;

  private:
    SmallThread() = default;
    static void* trampoline(void* self);
    pthread_t thread_{};
    const char* name_ = "";
    std::function<void()> fn_;
};

}  // namespace ha::sync
