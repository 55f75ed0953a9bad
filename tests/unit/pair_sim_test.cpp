// Randomized pair test: two state machines, a lossy and partitionable two-path link, hung and
// killed agents, faults, force switches; asserts the HA invariants over >= 100 000 events.
#include <gtest/gtest.h>

#include <array>
#include <random>
#include <sstream>

#include "agent/core/liveness.hpp"
#include "agent/core/machine.hpp"
#include "common/log.hpp"

using namespace ha;
using namespace ha::core;
using namespace std::chrono_literals;

namespace {

constexpr Duration kTimeout = 7s;
constexpr Duration kInterval = 700ms;
constexpr Duration kLanInterval = 2800ms;

struct Link {
    bool cut = false;
    double loss = 0.0;
};

struct Box {
    MachineConfig cfg;
    std::optional<Machine> m;
    std::uint64_t persisted_term = 0;
    bool powered = true;
    bool hung = false;        // SIGSTOP: kernel answers, agent does nothing
    bool dead = false;        // killed, not restarted yet: the kernel answers "agent gone"
    TimePoint alive_until{};  // what the agent last wrote into the BPF map
    bool holds_ip = false;    // the kernel has the cluster IP
    bool fence_flag = false;  // fence set by an authenticated message or the agent
    bool service = false;
    bool sw_fault = false, hw_fault = false;
    std::array<Liveness, 2> live{Liveness(kTimeout), Liveness(kTimeout)};
    std::array<TimePoint, 2> next_send{};
    std::uint64_t seq = 0;
    std::optional<TimePoint> probe_done_at;
    bool initial_synced = false;
    std::optional<TimePoint> sync_done_at;
    std::uint64_t lag = 0;
    PeerStatus published{};  // the state the kernel answers with (refreshed each agent loop)
    std::uint64_t max_peer_term_heard = 0;  // since this agent started

    [[nodiscard]] bool agent_runs() const { return powered && !hung && !dead && m.has_value(); }
    // The kernel's LAN program: a fence message, a stale tick or a closed agent socket.
    [[nodiscard]] bool fenced(TimePoint now) const {
        return fence_flag || now > alive_until || dead;
    }
    // Answers ARP and serves on the cluster IP.
    [[nodiscard]] bool answering(TimePoint now) const {
        return powered && holds_ip && !fenced(now);
    }
};

class PairSim {
  public:
    PairSim(std::uint64_t seed, bool sw_switch, bool hw_switch) : rng_(seed), seed_(seed) {
        for (int i = 0; i < 2; ++i) {
            MachineConfig c;
            c.enable = true;
            c.station = i == 0 ? StationType::Primary : StationType::Secondary;
            c.timeout = kTimeout;
            c.interval = kInterval;
            c.has_lan_path = true;
            c.software_fault_switch = sw_switch;
            c.hardware_fault_switch = hw_switch;
            c.model = "FCM630A";
            c.proto = 1;
            c.version = "1.0";
            c.own_mac.bytes = {2, 0, 0, 0, 0, static_cast<std::uint8_t>(i + 1)};
            boxes_[i].cfg = c;
            boot(i);
        }
    }

    void run(std::uint64_t events_wanted) {
        while (events_ < events_wanted) {
            now_ += std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 150)(rng_));
            perturb();
            for (int i = 0; i < 2; ++i) step(i);
            check_invariants();
            if (::testing::Test::HasFatalFailure()) return;
        }
    }

    std::uint64_t promotions = 0, switches_ok = 0, switches_refused = 0, handoffs = 0,
                  demotions_split = 0, kills = 0, hangs = 0, cuts = 0, partitions = 0;

  private:
    std::mt19937_64 rng_;
    std::uint64_t seed_;
    TimePoint now_{};
    std::array<Box, 2> boxes_;
    std::array<Link, 2> links_;  // Direct, Lan
    std::uint64_t events_ = 0;
    std::optional<TimePoint> dual_since_;
    std::optional<TimePoint> dual_heard_;  // first heartbeat heard between the two, that episode
    bool dual_lossless_ = true;            // the LAN lost nothing during the episode
    std::optional<TimePoint> stable_since_;
    std::ostringstream trace_;

    bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
    Box& peer_of(int i) { return boxes_[1 - i]; }

    void boot(int i) {
        Box& b = boxes_[i];
        b.m.emplace(b.cfg, b.persisted_term, now_);
        b.live = {Liveness(kTimeout), Liveness(kTimeout)};
        b.hung = false;
        b.dead = false;
        b.fence_flag = false;
        // A starting agent is not serving: it removes a cluster IP its kernel kept.
        b.holds_ip = false;
        b.service = false;
        b.probe_done_at.reset();
        b.sync_done_at.reset();
        b.initial_synced = false;
        b.alive_until = now_ + agent_stale_after(kTimeout);
        b.max_peer_term_heard = 0;
        apply(i, b.m->start(now_));
    }

    void deliver(int i, const Event& e) {
        Box& b = boxes_[i];
        if (!b.agent_runs()) return;
        ++events_;
        if (auto* seen = std::get_if<EvPeerSeen>(&e)) {
            b.max_peer_term_heard = std::max(b.max_peer_term_heard, seen->peer.term);
            // Two answering boxes, and the loser (lower term; tie: the secondary) hears the
            // winner: from here it must step down.
            const bool loser =
                b.m->term() < seen->peer.term ||
                (b.m->term() == seen->peer.term && b.cfg.station == StationType::Secondary);
            if (dual_since_ && !dual_heard_ && loser && seen->peer.state == State::Active &&
                !seen->peer.agent_stale)
                dual_heard_ = now_;
        }
        apply(i, b.m->handle(e, now_));
    }

    bool transmits(int path) {
        const Link& l = links_[path];
        return !l.cut && !chance(l.loss);
    }

    void apply(int i, const Actions& actions) {
        Box& b = boxes_[i];
        for (const auto& a : actions) {
            trace_ << "t="
                   << std::chrono::duration_cast<std::chrono::milliseconds>(now_.time_since_epoch())
                          .count()
                   << " box" << i << " " << describe(a) << "\n";
            if (std::holds_alternative<AcProbeClusterIp>(a)) {
                b.probe_done_at = now_ + 3ms;
                // A standby starts a takeover only on evidence: every path lost, or the peer's
                // kernel saying its agent is gone or hung, or the peer handing over.
                const std::string why = b.m->snapshot().last_reason;
                if (why == "heartbeat lost on all paths") {
                    EXPECT_FALSE(b.live[0].alive() || b.live[1].alive())
                        << "box" << i << " probes for a takeover while a path is alive; seed "
                        << seed_ << "\n"
                        << tail();
                }
            } else if (std::holds_alternative<AcAcquireClusterIp>(a)) {
                // Invariant: a promotion never happens while the peer answers for the IP on a
                // LAN where it can be heard.
                Box& p = peer_of(i);
                EXPECT_FALSE(p.answering(now_) && !links_[1].cut)
                    << "box" << i << " acquired the cluster IP while box" << 1 - i
                    << " answers for it on a live LAN; seed " << seed_ << "\n"
                    << tail();
                if (!b.holds_ip) ++promotions;
                b.holds_ip = true;
            } else if (std::holds_alternative<AcReleaseClusterIp>(a)) {
                b.holds_ip = false;
            } else if (std::holds_alternative<AcStartService>(a)) {
                b.service = true;
            } else if (std::holds_alternative<AcStopService>(a)) {
                b.service = false;
                // The PBX stopped: the last writes drain to the standby soon after.
                b.lag = 0;
            } else if (auto* t = std::get_if<AcPersistTerm>(&a)) {
                EXPECT_GT(t->term, b.persisted_term) << "term went backwards; seed " << seed_;
                // "Higher term wins" must mean "newer wins": a promotion outranks every term
                // this box has heard from its peer.
                EXPECT_GT(t->term, b.max_peer_term_heard)
                    << "box" << i << " promoted to term " << t->term << " not above the peer's "
                    << b.max_peer_term_heard << "; seed " << seed_ << "\n"
                    << tail();
                b.persisted_term = t->term;
            } else if (auto* s = std::get_if<AcSendPeer>(&a)) {
                Box& p = peer_of(i);
                if (!p.powered) continue;
                int path = transmits(0) ? 0 : transmits(1) ? 1 : -1;
                if (path < 0) continue;
                // The peer's kernel sets its fence, unless aimed at a term it has left.
                if (s->msg == PeerMsg::Fence && s->target_term >= p.published.term)
                    p.fence_flag = true;
                if (s->msg == PeerMsg::TakeoverNow) ++handoffs;
                if (p.agent_runs())
                    pending_.push_back({1 - i, EvPeerMessage{s->msg, s->term, s->target_term}});
            } else if (auto* f = std::get_if<AcFenceSelf>(&a)) {
                b.fence_flag = f->on;
            } else if (std::holds_alternative<AcRequestFullSync>(a)) {
                b.initial_synced = false;
                b.sync_done_at = now_ + 500ms;
            } else if (auto* r = std::get_if<AcCommandResult>(&a)) {
                if (r->ok)
                    ++switches_ok;
                else
                    ++switches_refused;
            } else if (auto* al = std::get_if<AcAlert>(&a)) {
                if (al->kind == AlertKind::SplitBrain && al->raised) ++demotions_split;
            } else if (std::holds_alternative<AcReboot>(a)) {
                boot(i);
                return;
            }
        }
    }

    std::vector<std::pair<int, Event>> pending_;

    void flush_pending() {
        auto p = std::move(pending_);
        pending_.clear();
        for (auto& [i, e] : p) deliver(i, e);
    }

    void step(int i) {
        Box& b = boxes_[i];
        Box& p = peer_of(i);
        if (!b.agent_runs()) return;
        // The agent loop: refresh the kernel's view, drain, send probes, judge liveness, timers.
        b.alive_until = now_ + agent_stale_after(kTimeout);
        b.published = b.m->own_status();
        flush_pending();
        for (int path = 0; path < 2; ++path) {
            if (now_ < b.next_send[path]) continue;
            b.next_send[path] = now_ + (path == 0 ? kInterval : kLanInterval);
            const std::uint64_t seq = ++b.seq;
            b.live[path].sent(seq, now_);
            if (!p.powered || !transmits(path)) continue;
            // The peer's kernel answers with its last published state, stale when its agent
            // stopped refreshing; its agent (if running) also learns our state from the request.
            if (p.agent_runs()) {
                p.live[path].heard(now_);
                PeerStatus mine = b.m->own_status();
                pending_.push_back({1 - i, EvPeerSeen{static_cast<Path>(path), mine}});
            }
            if (!transmits(path)) continue;
            PeerStatus reply = p.published;
            reply.agent_gone = p.dead;
            reply.agent_stale = now_ > p.alive_until || p.dead;
            b.live[path].replied(seq, now_);
            deliver(i, EvPeerSeen{static_cast<Path>(path), reply});
        }
        for (int path = 0; path < 2; ++path) {
            if (auto changed = b.live[path].update(now_); changed && !*changed)
                deliver(i, EvPeerLost{static_cast<Path>(path)});
        }
        if (b.probe_done_at && now_ >= *b.probe_done_at) {
            b.probe_done_at.reset();
            // RFC 5227: three probes; the fence drops the peer's ARP answers.
            const bool conflict = p.answering(now_) && !links_[1].cut;
            deliver(i, EvArpProbeDone{conflict, p.cfg.own_mac});
        }
        if (b.sync_done_at && now_ >= *b.sync_done_at && !links_[0].cut) {
            b.sync_done_at.reset();
            b.initial_synced = true;
        }
        if (b.m->state() == State::Active || b.m->state() == State::SwitchingOut) {
            if (b.service && chance(0.3)) b.lag += 4096;
            if (!links_[0].cut && chance(0.7)) b.lag = 0;
            deliver(i, EvSync{b.lag, b.lag ? 5ms : 0ms, !links_[0].cut, false});
        } else if (b.m->state() == State::Standby) {
            deliver(i, EvSync{0, 0ms, !links_[0].cut, b.initial_synced});
        }
        if (auto d = b.m->next_deadline(); d && now_ >= *d) deliver(i, EvTick{});
    }

    void perturb() {
        // A full partition (both paths at once), often with a restart on one side while it lasts:
        // the way two actives with equal terms can meet when it heals.
        if (!links_[0].cut && !links_[1].cut && chance(0.001)) {
            links_[0].cut = links_[1].cut = true;
            ++partitions;
            if (chance(0.5)) {
                const int victim = static_cast<int>(rng_() % 2);
                if (boxes_[victim].powered) boot(victim);
            }
        }
        // Link faults.
        for (int path = 0; path < 2; ++path) {
            Link& l = links_[path];
            if (l.cut && chance(0.01))
                l.cut = false;
            else if (!l.cut && chance(0.002)) {
                l.cut = true;
                ++cuts;
            }
            if (chance(0.005)) l.loss = std::array<double, 3>{0.0, 0.05, 0.3}[rng_() % 3];
        }
        for (int i = 0; i < 2; ++i) {
            Box& b = boxes_[i];
            if (!b.powered) {
                if (chance(0.01)) {
                    b.powered = true;
                    boot(i);
                }
                continue;
            }
            if (b.hung) {
                if (chance(0.01)) b.hung = false;  // SIGCONT: the agent resumes where it was
                continue;
            }
            if (b.dead) {
                if (chance(0.01)) boot(i);  // restarted (by hand or by the service manager)
                continue;
            }
            if (chance(0.0005)) {  // kill -9: the kernel keeps the IP, answers "agent gone"
                ++kills;
                if (chance(0.5))
                    boot(i);  // restarted at once
                else
                    b.dead = true;
            } else if (chance(0.0003)) {
                b.powered = false;  // all its links down
                b.holds_ip = false;
            } else if (chance(0.0005)) {
                b.hung = true;
                ++hangs;
            } else if (chance(0.001)) {
                b.sw_fault = !b.sw_fault;
                deliver(i, EvFault{FaultKind::Software, b.sw_fault, "sim"});
            } else if (chance(0.001)) {
                b.hw_fault = !b.hw_fault;
                deliver(i, EvFault{FaultKind::Hardware, b.hw_fault, "sim"});
            } else if (chance(0.002)) {
                deliver(i, EvCommand{Command::Switch});
            }
        }
    }

    [[nodiscard]] std::string tail() const {
        std::string t = trace_.str();
        return t.size() > 6000 ? t.substr(t.size() - 6000) : t;
    }

    void check_invariants() {
        Box& a = boxes_[0];
        Box& b = boxes_[1];
        // Never two actives that can hear each other: when both answer for the cluster IP on a
        // live LAN, the loser steps down as soon as it hears the winner (one loop later at most),
        // and on a LAN that loses nothing that takes one LAN heartbeat round at most.
        const bool dual = a.answering(now_) && b.answering(now_) && !links_[1].cut;
        if (dual) {
            if (!dual_since_) {
                dual_since_ = now_;
                dual_heard_.reset();
                dual_lossless_ = true;
            }
            if (links_[1].loss > 0) dual_lossless_ = false;
            if (dual_heard_) {
                ASSERT_LE(now_ - *dual_heard_, 2 * kInterval)
                    << "two boxes answer for the cluster IP although they heard each other; seed "
                    << seed_ << "\n"
                    << tail();
            }
            if (dual_lossless_) {
                ASSERT_LE(now_ - *dual_since_, kLanInterval + 2 * kInterval)
                    << "two boxes answer for the cluster IP on a live LAN; seed " << seed_ << "\n"
                    << tail();
            }
        } else {
            dual_since_.reset();
        }
        // Liveness: with both boxes up, healthy and fully connected for a while, exactly one
        // serves (this is what a force switch must leave behind too).
        const bool stable = a.agent_runs() && b.agent_runs() && !a.sw_fault && !a.hw_fault &&
                            !b.sw_fault && !b.hw_fault && !links_[0].cut && !links_[1].cut &&
                            links_[0].loss == 0 && links_[1].loss == 0;
        if (!stable) {
            stable_since_.reset();
            return;
        }
        if (!stable_since_) stable_since_ = now_;
        if (now_ - *stable_since_ > 4 * kTimeout) {
            const int serving = int(a.answering(now_)) + int(b.answering(now_));
            ASSERT_EQ(serving, 1) << "stable pair with " << serving << " actives; seed " << seed_
                                  << "\n"
                                  << tail();
        }
    }
};

}  // namespace

TEST(PairSim, InvariantsHoldOverHundredThousandRandomEvents) {
    log::set_level(log::Level::Warn);  // every transition logs at info: too much for 400k events
    std::uint64_t total_promotions = 0, total_switches = 0, total_splits = 0, total_handoffs = 0;
    const std::array<std::uint64_t, 4> seeds{1, 2, 3, 2026};
    for (std::size_t k = 0; k < seeds.size(); ++k) {
        PairSim sim(seeds[k], k % 2 == 0, k / 2 == 0);
        sim.run(100'000);
        if (HasFatalFailure()) return;
        total_promotions += sim.promotions;
        total_switches += sim.switches_ok;
        total_splits += sim.demotions_split;
        total_handoffs += sim.handoffs;
        std::printf(
            "seed %llu: promotions=%llu switches ok=%llu refused=%llu handoffs=%llu "
            "split-brain demotions=%llu kills=%llu hangs=%llu cuts=%llu partitions=%llu\n",
            static_cast<unsigned long long>(seeds[k]),
            static_cast<unsigned long long>(sim.promotions),
            static_cast<unsigned long long>(sim.switches_ok),
            static_cast<unsigned long long>(sim.switches_refused),
            static_cast<unsigned long long>(sim.handoffs),
            static_cast<unsigned long long>(sim.demotions_split),
            static_cast<unsigned long long>(sim.kills), static_cast<unsigned long long>(sim.hangs),
            static_cast<unsigned long long>(sim.cuts),
            static_cast<unsigned long long>(sim.partitions));
    }
    // The run must have exercised what it claims to check.
    EXPECT_GT(total_promotions, 50u);
    EXPECT_GT(total_switches, 5u);
    EXPECT_GT(total_handoffs, 5u);
    EXPECT_GT(total_splits, 0u);
}
