#include "agent/core/liveness.hpp"

namespace ha::core {

namespace {
// Bound memory when the peer is gone for long: only the recent requests carry the verdict.
constexpr std::size_t kMaxOutstanding = 4096;
}  // namespace

void Liveness::sent(std::uint64_t seq, TimePoint at) {
    const std::optional<TimePoint> prev =
        out_.empty() ? std::nullopt : std::optional<TimePoint>(out_.back().at);
    out_.push_back(Sent{seq, at});
    // The oldest request leaves. The watch keeps its start and its count: they are times and
    // sends, not places in out_, and a peer silent for longer than out_ holds is still silent
    // since then.
    if (out_.size() > kMaxOutstanding) out_.pop_front();
    const bool counts = !last_life_ || at >= *last_life_;
    if (!counts) return;
    if (watch_ && prev && at - *prev <= max_gap_)
        ++watch_->unanswered;
    else
        watch_ = Watch{at, 1};
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
    // Requests sent before this sign of life are no evidence of loss any more.
    while (!out_.empty() && out_.front().at <= at - timeout_) out_.pop_front();
    // An older sign of life than the last one changes nothing; rebuilding from out_ then would
    // also lose the start of a run whose first requests were trimmed.
    if (last_life_ && at <= *last_life_) return;
    last_life_ = at;
    rebuild_watch();
}

void Liveness::rebuild_watch() {
    watch_.reset();
    std::optional<TimePoint> prev;
    for (const auto& s : out_) {
        if (last_life_ && s.at < *last_life_) continue;
        if (!watch_ || (prev && s.at - *prev > max_gap_)) watch_ = Watch{s.at, 0};
        ++watch_->unanswered;
        prev = s.at;
    }
}

std::optional<TimePoint> Liveness::watch_from() const {
    if (!watch_) return std::nullopt;
    // The run started right after the last sign of life: the peer has been silent since then.
    // It started after a pause in our sending: only from the run's first request on.
    if (last_life_ && watch_->since - *last_life_ <= max_gap_) return last_life_;
    return watch_->since;
}

bool Liveness::lost(TimePoint now) const {
    const auto from = watch_from();
    if (!from || watch_->unanswered < min_unanswered_ || now - *from < timeout_) return false;
    // Still watching now: the last send is recent (the prober did not stall since).
    return now - out_.back().at <= max_gap_;
}

std::optional<TimePoint> Liveness::next_check(TimePoint now) const {
    // Already lost: nothing can change the verdict but a reply, which wakes the loop anyway. (A
    // deadline left in the past would spin the loop at 100 % while the peer is gone.)
    if (!alive_) return std::nullopt;
    const auto from = watch_from();
    if (!from || watch_->unanswered < min_unanswered_) return std::nullopt;  // next send decides
    const TimePoint at = *from + timeout_;
    if (at > now) return at;
    return std::nullopt;  // past: lost already, or waiting for our next send (a pause ended)
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
