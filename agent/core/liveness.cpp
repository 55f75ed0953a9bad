#include "agent/core/liveness.hpp"

namespace ha::core {

namespace {
// Bound memory when the peer is gone for long: the oldest evidence is all that matters.
constexpr std::size_t kMaxOutstanding = 4096;
}  // namespace

void Liveness::sent(std::uint64_t seq, TimePoint at) {
    if (out_.size() >= kMaxOutstanding) {
        // Keep the oldest (it carries the verdict) and the newest.
        out_.erase(out_.begin() + 1);
    }
    out_.push_back(Sent{seq, at});
}

std::optional<Duration> Liveness::replied(std::uint64_t seq, TimePoint at) {
    std::optional<Duration> rtt;
    while (!out_.empty() && out_.front().seq <= seq) {
        if (out_.front().seq == seq) rtt = at - out_.front().at;
        out_.pop_front();
    }
    heard(at);
    return rtt;
}

void Liveness::heard(TimePoint at) {
    if (!last_life_ || at > *last_life_) last_life_ = at;
    // Requests sent before this sign of life are no evidence of loss any more.
    while (!out_.empty() && out_.front().at <= at - timeout_) out_.pop_front();
}

bool Liveness::lost(TimePoint now) const {
    std::size_t unanswered = 0;
    std::optional<TimePoint> oldest;
    for (const auto& s : out_) {
        if (last_life_ && s.at < *last_life_) continue;
        if (!oldest) oldest = s.at;
        ++unanswered;
    }
    return oldest && unanswered >= min_unanswered_ && now - *oldest >= timeout_;
}

std::optional<TimePoint> Liveness::next_check() const {
    // Already lost: nothing can change the verdict but a reply, which wakes the loop anyway. (A
    // deadline left in the past here would spin the loop at 100 % while the peer is gone.)
    if (!alive_) return std::nullopt;
    for (const auto& s : out_) {
        if (last_life_ && s.at < *last_life_) continue;
        return s.at + timeout_;
    }
    return std::nullopt;
}

std::optional<bool> Liveness::update(TimePoint now) {
    bool now_alive = alive_;
    if (lost(now))
        now_alive = false;
    else if (last_life_ && now - *last_life_ < timeout_)
        now_alive = true;
    if (now_alive == alive_) return std::nullopt;
    alive_ = now_alive;
    return alive_;
}

}  // namespace ha::core
