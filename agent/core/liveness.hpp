// Liveness of the peer on one heartbeat path, judged from evidence: requests we actually sent
// that got no reply within the timeout. A prober that did not run (CPU starvation, a VM stall)
// sent nothing and so has no evidence of loss; a wall-clock "time since last reply" detector
// would raise false losses there. Pure: the caller passes the send/receive times.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>

#include "common/clock.hpp"

namespace ha::core {

class Liveness {
  public:
    // `timeout`: how long a sent request may stay unanswered. `min_unanswered`: how many
    // consecutive unanswered requests are needed too (one lost datagram is not a dead peer).
    explicit Liveness(Duration timeout, unsigned min_unanswered = 2)
        : timeout_(timeout), min_unanswered_(min_unanswered) {}

    void sent(std::uint64_t seq, TimePoint at);
    // A valid reply for `seq`. Returns the round-trip time when `seq` is one we sent and still
    // track. A reply also acknowledges every older request (they were answered or overtaken).
    std::optional<Duration> replied(std::uint64_t seq, TimePoint at);
    // Evidence of life that is not a reply to one of our requests (the peer's own request).
    void heard(TimePoint at);

    // Lost: at least min_unanswered requests were sent after the last sign of life, and the
    // oldest of them has been unanswered for the full timeout. Call after draining received
    // replies, so a reply that is already queued counts.
    [[nodiscard]] bool lost(TimePoint now) const;
    [[nodiscard]] bool alive() const { return alive_; }
    // When lost() could next turn true (for the loop's timer), or nothing if no request is out.
    [[nodiscard]] std::optional<TimePoint> next_check() const;
    // Update the verdict; returns the new state when it changed.
    std::optional<bool> update(TimePoint now);
    void reset() {
        out_.clear();
        alive_ = false;
        last_life_.reset();
    }
    [[nodiscard]] std::optional<TimePoint> last_life() const { return last_life_; }
    void set_timeout(Duration t) { timeout_ = t; }

  private:
    struct Sent {
        std::uint64_t seq = 0;
        TimePoint at{};
    };
    Duration timeout_;
    unsigned min_unanswered_;
    std::deque<Sent> out_;  // unanswered requests, oldest first
    std::optional<TimePoint> last_life_;
    bool alive_ = false;
};

}  // namespace ha::core
