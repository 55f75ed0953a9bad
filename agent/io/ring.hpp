// The agent's io_uring ring and its completion dispatch. One thread owns the ring.
//
// Every submitted operation carries a pointer to a Completion in user_data; whoever submits owns
// that object and must keep it (and any buffer the kernel writes into) alive until the final CQE
// (one without IORING_CQE_F_MORE). Cancelling means submitting a cancel and still waiting.
#pragma once

#include <liburing.h>

#include <chrono>
#include <functional>
#include <optional>

#include "common/clock.hpp"
#include "common/result.hpp"

namespace ha::io {

class Completion {
  public:
    virtual ~Completion() = default;
    // res: the CQE's result (-errno on failure); flags: IORING_CQE_F_MORE etc.
    virtual void completed(int res, unsigned flags) = 0;
};

// A completion that calls a function; handy for one-off operations owned by a longer-lived object.
class FnCompletion final : public Completion {
  public:
    explicit FnCompletion(std::function<void(int, unsigned)> fn) : fn_(std::move(fn)) {}
    void completed(int res, unsigned flags) override { fn_(res, flags); }

  private:
    std::function<void(int, unsigned)> fn_;
};

class Ring {
  public:
    // Probes the opcodes the agent uses and refuses to start with the missing one named.
    static Result<Ring> create(unsigned entries = 256);
    Ring(Ring&& o) noexcept;
    Ring& operator=(Ring&&) = delete;
    Ring(const Ring&) = delete;
    ~Ring();

    // A submission slot; submits pending entries first when the queue is full.
    io_uring_sqe* sqe();
    // Arms a readiness poll (one-shot) on fd; `c` is called with the poll mask.
    void poll(int fd, unsigned mask, Completion* c);
    // Submits, waits for at least one completion or until `deadline`, dispatches the batch.
    // Returns the number of completions dispatched. -EINTR is not an error.
    Result<unsigned> run_once(std::optional<TimePoint> deadline);
    io_uring* raw() { return &ring_; }

  private:
    Ring() = default;
    io_uring ring_{};
    bool live_ = false;
};

}  // namespace ha::io
