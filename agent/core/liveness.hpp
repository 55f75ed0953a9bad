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
    // `timeout`: how long sent requests must stay unanswered. `max_gap`: the longest pause in our
    // own sending that still counts as watching continuously (give it room over the send
    // interval). `min_unanswered`: how many unanswered requests are needed too (one lost
    // datagram is not a dead peer).
    explicit Liveness(Duration timeout, Duration max_gap = Duration::max(),
                      unsigned min_unanswered = 2)
        : timeout_(timeout),
          max_gap_(max_gap == Duration::max() ? timeout / 2 : max_gap),
          min_unanswered_(min_unanswered) {}

    void sent(std::uint64_t seq, TimePoint at);
    // A valid reply for `seq`. Returns the round-trip time when `seq` is one we sent and still
    // track. A reply also acknowledges every older request (they were answered or overtaken).
    std::optional<Duration> replied(std::uint64_t seq, TimePoint at);
    // Evidence of life that is not a reply to one of our requests (the peer's own request).
    void heard(TimePoint at);

    // Lost: the peer has been silent for the full timeout since its last sign of life while we
    // kept asking: at least min_unanswered requests went out since, with no pause in our own
    // sending longer than max_gap, up to now. A pause means the prober did not run:
    // after a stall of the whole machine the replies to what we sent before it may not have
    // been read yet, so that is no evidence; the watch starts again after the pause. Call after
    // draining received replies, so a reply that is already queued counts.
    [[nodiscard]] bool lost(TimePoint now) const;
    [[nodiscard]] bool alive() const { return alive_; }
    // When lost() could next turn true by time passing alone (for the loop's timer); nothing if
    // only a reply or our next send can change the verdict. Never a time before `now`.
    [[nodiscard]] std::optional<TimePoint> next_check(TimePoint now) const;
    // Update the verdict; returns the new state when it changed.
    std::optional<bool> update(TimePoint now);
    void reset() {
        out_.clear();
        watch_.reset();
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
    // The first unanswered request of the current unbroken run of sends (after the last sign of
    // life and after the last pause), and how many were sent from it on.
    struct Watch {
        TimePoint since{};
        std::size_t unanswered = 0;
    };
    // Recomputed from out_ on a newer sign of life, extended in O(1) per send: the loop asks for
    // the verdict on every iteration, and with the peer gone out_ holds thousands of requests.
    // Trimming out_ leaves it alone (the run may start before out_'s oldest request).
    void rebuild_watch();
    // Where the silence being judged starts: the last sign of life, or the first request after
    // a pause in our sending.
    [[nodiscard]] std::optional<TimePoint> watch_from() const;

    Duration timeout_;
    Duration max_gap_;
    unsigned min_unanswered_;
    std::deque<Sent> out_;  // unanswered requests, oldest first
    std::optional<Watch> watch_;
    std::optional<TimePoint> last_life_;
    bool alive_ = false;
};

}  // namespace ha::core
