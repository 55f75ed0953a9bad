#include "agent/core/machine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <type_traits>

#include "common/duration.hpp"
#include "common/log.hpp"

namespace ha::core {

std::string_view to_string(State s) {
    switch (s) {
        case State::Booting:
            return "Booting";
        case State::Probing:
            return "Probing";
        case State::Active:
            return "Active";
        case State::Standby:
            return "Standby";
        case State::SwitchingOut:
            return "SwitchingOut";
        case State::HandingOff:
            return "HandingOff";
        case State::Off:
            return "Off";
    }
    return "?";
}
std::string_view to_string(HaStatus s) {
    switch (s) {
        case HaStatus::Off:
            return "Off";
        case HaStatus::Single:
            return "Single";
        case HaStatus::Dual:
            return "Dual";
    }
    return "?";
}
std::string_view to_string(Path p) {
    switch (p) {
        case Path::Direct:
            return "direct";
        case Path::Lan:
            return "lan";
    }
    return "?";
}
std::string_view to_string(FaultKind k) {
    switch (k) {
        case FaultKind::Software:
            return "software";
        case FaultKind::Hardware:
            return "hardware";
        case FaultKind::HeartbeatLink:
            return "heartbeat-link";
    }
    return "?";
}
std::string_view to_string(PeerMsg m) {
    switch (m) {
        case PeerMsg::TakeoverNow:
            return "TakeoverNow";
        case PeerMsg::Fence:
            return "Fence";
        case PeerMsg::DisableHa:
            return "DisableHa";
    }
    return "?";
}
std::string_view to_string(AlertKind k) {
    switch (k) {
        case AlertKind::Heartbeat:
            return "heartbeat";
        case AlertKind::HeartbeatLink:
            return "heartbeat-link";
        case AlertKind::PeerMacMismatch:
            return "peer-mac-mismatch";
        case AlertKind::PairRefused:
            return "pair-refused";
        case AlertKind::VersionMismatch:
            return "version-mismatch";
        case AlertKind::ClusterIpConflict:
            return "cluster-ip-conflict";
        case AlertKind::ClusterIpRemoved:
            return "cluster-ip-removed";
        case AlertKind::SoftwareFault:
            return "software-fault";
        case AlertKind::HardwareFault:
            return "hardware-fault";
        case AlertKind::SplitBrain:
            return "split-brain";
        case AlertKind::PeerHung:
            return "peer-hung";
        case AlertKind::HandoffFailed:
            return "handoff-failed";
    }
    return "?";
}

std::string describe(const Action& a) {
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, AcProbeClusterIp>)
                return x.careful ? "ProbeClusterIp careful" : "ProbeClusterIp";
            else if constexpr (std::is_same_v<T, AcAcquireClusterIp>)
                return "AcquireClusterIp";
            else if constexpr (std::is_same_v<T, AcReleaseClusterIp>)
                return "ReleaseClusterIp";
            else if constexpr (std::is_same_v<T, AcStartService>)
                return "StartService";
            else if constexpr (std::is_same_v<T, AcStopService>)
                return "StopService";
            else if constexpr (std::is_same_v<T, AcPersistTerm>)
                return fmt::format("PersistTerm {}", x.term);
            else if constexpr (std::is_same_v<T, AcSendPeer>)
                return fmt::format("SendPeer {} term={}", to_string(x.msg), x.term);
            else if constexpr (std::is_same_v<T, AcAlert>)
                return fmt::format("Alert {} {} '{}'", to_string(x.kind),
                                   x.raised ? "raise" : "clear", x.content);
            else if constexpr (std::is_same_v<T, AcLog>)
                return fmt::format("Log {} '{}'",
                                   x.kind == LogKind::Failover ? "failover" : "backup", x.text);
            else if constexpr (std::is_same_v<T, AcRequestFullSync>)
                return "RequestFullSync";
            else if constexpr (std::is_same_v<T, AcQuarantineData>)
                return fmt::format("QuarantineData term={}", x.term);
            else if constexpr (std::is_same_v<T, AcReboot>)
                return "Reboot";
            else if constexpr (std::is_same_v<T, AcCommandResult>)
                return fmt::format("CommandResult ok={} '{}'", x.ok, x.message);
            else if constexpr (std::is_same_v<T, AcFenceSelf>)
                return fmt::format("FenceSelf {}", x.on);
            else
                static_assert(sizeof(T) == 0, "unhandled action");
        },
        a);
}

MachineConfig MachineConfig::from(const Config& c, std::string model, std::uint16_t proto,
                                  std::string version, MacAddr own_mac) {
    MachineConfig m;
    m.enable = c.enable;
    m.station = c.station_type.value_or(StationType::Primary);
    m.peer_mac = c.peer_mac;
    m.software_fault_switch = c.software_fault_switch;
    m.hardware_fault_switch = c.hardware_fault_switch;
    m.fault_action = c.service.fault_action;
    m.has_lan_path = c.peer_lan_ip.has_value();
    m.timeout = c.heartbeat_timeout;
    m.interval = c.effective_interval();
    m.drain_timeout = c.switch_drain_timeout;
    m.model = std::move(model);
    m.proto = proto;
    m.version = std::move(version);
    m.own_mac = own_mac;
    return m;
}

namespace {
// A box that hears nobody at boot listens at least this long before deciding alone: a peer's
// first reply may wait for ARP resolution of the heartbeat link, and a sub-millisecond timeout
// would otherwise let a booting box promote beside an active peer it simply had not heard yet.
constexpr Duration kBootListenFloor = std::chrono::seconds(1);
Duration boot_listen(Duration timeout) {
    return std::max(timeout, kBootListenFloor);
}
constexpr unsigned kFaultBit(FaultKind k) {
    return 1u << static_cast<unsigned>(k);
}
constexpr std::uint32_t kAlertBit(AlertKind k) {
    return 1u << static_cast<unsigned>(k);
}
}  // namespace

Machine::Machine(MachineConfig config, std::uint64_t term, TimePoint now)
    : cfg_(std::move(config)), term_(term), state_since_(now) {}

Actions Machine::start(TimePoint now) {
    Actions out;
    if (!cfg_.enable) {
        state_ = State::Off;
        reason_ = "HA disabled in configuration";
        return out;
    }
    // Boot negotiation: listen a timeout (a second at least) before deciding alone. A peer already
    // active keeps its role (no preemption); both booting: the primary becomes active.
    enter(State::Booting, "agent started", now, out);
    deadline_ = now + boot_listen(cfg_.timeout);
    return out;
}

HaStatus Machine::ha_status() const {
    if (state_ == State::Off) return HaStatus::Off;
    return peer_visible() && peer_ && peer_compatible(*peer_) ? HaStatus::Dual : HaStatus::Single;
}

PeerStatus Machine::own_status() const {
    PeerStatus s;
    s.station = cfg_.station;
    s.state = state_;
    s.term = term_;
    s.ha_enabled = state_ != State::Off;
    s.healthy = healthy();
    s.synced = synced_;
    s.model = cfg_.model;
    s.proto = cfg_.proto;
    s.version = cfg_.version;
    s.mac = cfg_.own_mac;
    return s;
}

Snapshot Machine::snapshot() const {
    return Snapshot{state_,        ha_status(),   term_, serving_,        healthy(), synced_,
                    peer_seen_[0], peer_seen_[1], peer_, peer_last_seen_, reason_};
}

std::string Machine::config_restriction() const {
    switch (state_) {
        case State::Standby:
        case State::HandingOff:
            return "configuration is restricted on the standby";
        case State::Booting:
        case State::Probing:
            return "configuration is restricted while HA negotiates the role";
        case State::Active:
        case State::SwitchingOut:
        case State::Off:
            return {};
    }
    return {};
}

void Machine::reconfigure(const MachineConfig& config) {
    const bool was_enabled = cfg_.enable;
    cfg_ = config;
    cfg_.enable = was_enabled;  // enabling/disabling goes through EvCommand / a restart
}

std::optional<TimePoint> Machine::next_deadline() const {
    std::optional<TimePoint> d = deadline_;
    for (const auto& t : {resend_at_, hb_clear_at_})
        if (t && (!d || *t < *d)) d = t;
    return d;
}

bool Machine::peer_compatible(const PeerStatus& p) const {
    // The guide: same model; one primary and one secondary. Protocol version must match to pair.
    return p.station != cfg_.station && p.model == cfg_.model && p.proto == cfg_.proto;
}

void Machine::enter(State s, std::string reason, TimePoint now, Actions& out) {
    (void)out;
    if (s == state_ && s != State::Booting) return;
    log::info("core", "state from={} to={} reason=\"{}\" term={} peer_last_seen_age={}",
              to_string(state_), to_string(s), reason, term_,
              peer_last_seen_ ? format_duration(now - *peer_last_seen_) : std::string("never"));
    state_ = s;
    state_since_ = now;
    reason_ = std::move(reason);
    deadline_.reset();
    resend_at_.reset();
}

void Machine::alert(AlertKind kind, bool raised, std::string content, Actions& out) {
    const bool is_raised = (alerts_raised_ & kAlertBit(kind)) != 0;
    if (raised == is_raised) return;  // one Generate Alert, one Restore to normal: no flood
    if (raised)
        alerts_raised_ |= kAlertBit(kind);
    else
        alerts_raised_ &= ~kAlertBit(kind);
    out.push_back(AcAlert{kind, raised, std::move(content)});
}

Actions Machine::handle(const Event& ev, TimePoint now) {
    Actions out;
    std::visit([&](const auto& e) { on(e, now, out); }, ev);
    return out;
}

// --- timers ---------------------------------------------------------------------------------

void Machine::on(const EvTick&, TimePoint now, Actions& out) {
    if (hb_clear_at_ && now >= *hb_clear_at_) {
        hb_clear_at_.reset();
        if (peer_visible()) alert(AlertKind::Heartbeat, false, "has recovered from failure", out);
    }
    if (resend_at_ && now >= *resend_at_ && state_ == State::HandingOff) {
        send_peer(PeerMsg::TakeoverNow, out);
        resend_at_ = now + cfg_.interval;
    }
    if (!deadline_ || now < *deadline_) return;
    deadline_.reset();
    switch (state_) {
        case State::Booting:
            // Nobody answered while we listened: alone. Promote only after the ARP probe.
            if (!peer_visible())
                begin_probe("no peer answered at boot", now, out, /*careful=*/true);
            else
                consider_promotion(now, out);
            break;
        case State::Probing:
            // The probe adapter always answers; a missing answer is treated as a conflict.
            alert(AlertKind::ClusterIpConflict, true,
                  "ARP probe for the cluster IP did not complete", out);
            probe_failed("ARP probe timed out", now, out);
            break;
        case State::SwitchingOut:
            // Sync did not drain in time: abort the switch, serve again. Nothing was released.
            out.push_back(AcStartService{});
            out.push_back(AcCommandResult{
                false,
                fmt::format("force switch aborted: sync not drained within {} (lag {} bytes)",
                            format_duration(cfg_.drain_timeout), sync_.lag_bytes)});
            out.push_back(AcLog{LogKind::Failover, "force switch aborted: sync not drained"});
            switch_requested_ = false;
            enter(State::Active, "force switch aborted", now, out);
            break;
        case State::HandingOff:
            // The peer never took over: take the service back rather than leave nobody serving.
            alert(AlertKind::HandoffFailed, true,
                  "peer did not take over after handoff; reclaiming the cluster IP", out);
            begin_probe("handoff not taken by the peer", now, out);
            break;
        case State::Standby:
            // Retry after an ARP conflict or a refused promotion.
            consider_promotion(now, out);
            break;
        case State::Active:
        case State::Off:
            break;
    }
}

// --- heartbeat ------------------------------------------------------------------------------

void Machine::on(const EvPeerSeen& e, TimePoint now, Actions& out) {
    const PeerStatus& p = e.peer;
    // The peer's kernel answers before its agent first published a state (it just started):
    // the reply is stale and empty and says nothing about the peer's configuration.
    if (p.agent_stale && p.model.empty() && p.term == 0) return;
    if (cfg_.peer_mac && !cfg_.peer_mac->is_zero() && !(p.mac == *cfg_.peer_mac)) {
        // The adapter filters by MAC too; this is the belt to its braces.
        on(EvForeignPeer{p.mac}, now, out);
        return;
    }
    const bool was_visible = peer_visible();
    peer_seen_[static_cast<int>(e.path)] = true;
    peer_ = p;
    peer_last_seen_ = now;
    peer_term_seen_ = std::max(peer_term_seen_, p.term);

    if (!peer_compatible(p)) {
        std::string why =
            p.station == cfg_.station ? fmt::format("both boxes are {}", to_string(p.station))
            : p.model != cfg_.model
                ? fmt::format("peer model {} differs from {}", p.model, cfg_.model)
                : fmt::format("peer protocol {} differs from {}", p.proto, cfg_.proto);
        alert(AlertKind::PairRefused, true, "refusing to pair: " + why, out);
        // Never promote next to a box we cannot pair with: the ARP probe is the only guard left,
        // and two simultaneous probes would both pass.
        return;
    }
    alert(AlertKind::PairRefused, false, "peer compatible", out);
    if (!was_visible && (alerts_raised_ & kAlertBit(AlertKind::Heartbeat)) != 0 && !hb_clear_at_) {
        // A flapping link must not flood the log: restore only once the peer stayed back for a
        // hold time; a loss before then keeps the one alert raised.
        hb_clear_at_ = now + std::max<Duration>(cfg_.timeout, std::chrono::seconds(1));
    }
    alert(AlertKind::VersionMismatch, p.version != cfg_.version,
          p.version != cfg_.version
              ? fmt::format("software version {} on peer, {} here", p.version, cfg_.version)
              : "software versions match",
          out);

    // A peer whose kernel answers while its agent is hung: its LAN program fences the cluster IP
    // once its tick is stale, so after one more timeout the standby may take over.
    if (p.agent_stale) {
        if (!peer_stale_since_) {
            peer_stale_since_ = now;
            alert(AlertKind::PeerHung, true,
                  p.agent_gone ? "peer agent exited (kernel alive)"
                               : "peer agent not responding (kernel alive)",
                  out);
        }
    } else if (peer_stale_since_) {
        peer_stale_since_.reset();
        alert(AlertKind::PeerHung, false, "peer agent responding again", out);
    }

    if (p.state == State::Off && !p.ha_enabled) {
        // HA disabled on the peer (the guide: disabling on the active replicates to the standby).
        if (state_ == State::Standby || state_ == State::Booting) {
            enter(State::Off, "HA disabled on the peer", now, out);
            return;
        }
    }

    switch (state_) {
        case State::Booting:
            if (p.state == State::Active || p.state == State::SwitchingOut) {
                enter(State::Standby, "peer is active", now, out);
                out.push_back(AcRequestFullSync{});
            } else if (p.state == State::Probing && cfg_.station == StationType::Secondary) {
                enter(State::Standby, "peer is promoting", now, out);
            } else {
                consider_promotion(now, out);
            }
            break;
        case State::Probing:
            // A peer that just handed over may still report Active at its old term for a
            // moment (a reply or request from before its TakeoverNow): that is not a peer that
            // got there first. One that did got a new term.
            if (p.state == State::Active && !p.agent_stale &&
                !(handover_term_ && p.term <= *handover_term_)) {
                // Someone got there first: yield (the probe result is ignored in Standby).
                enter(State::Standby, "peer became active during the probe", now, out);
                out.push_back(AcRequestFullSync{});
            }
            break;
        case State::Active:
            retry_fault_handoff(now, out);
            if (state_ != State::Active) break;
            [[fallthrough]];
        case State::SwitchingOut:
            if (p.state == State::Active && !p.agent_stale) {
                // Two actives met (a healed partition). Higher term wins; tie: the primary.
                const bool we_win =
                    term_ > p.term || (term_ == p.term && cfg_.station == StationType::Primary);
                if (!we_win) {
                    // The address goes before anything else, the alert included.
                    const std::uint64_t ours = term_;
                    demote(fmt::format("two actives met, peer term {} wins over {}", p.term, ours),
                           now, out);
                    alert(AlertKind::SplitBrain, true,
                          fmt::format("two actives met: peer term {} beats ours {}; our changes "
                                      "kept in quarantine",
                                      p.term, ours),
                          out);
                    out.push_back(AcQuarantineData{term_});
                    out.push_back(AcRequestFullSync{});
                }
            }
            break;
        case State::HandingOff:
            if (p.state == State::Active && p.term > term_) {
                out.push_back(AcLog{
                    LogKind::Failover,
                    fmt::format("handed over to the peer (term {}): {}", p.term, pending_reason_),
                    State::Active, State::Standby, p.term, Duration{0}});
                enter(State::Standby, "peer took over: " + pending_reason_, now, out);
                alert(AlertKind::HandoffFailed, false, "peer took over", out);
                if (cfg_.fault_action == FaultAction::Reboot && !healthy()) {
                    out.push_back(AcReboot{});
                }
                if (switch_requested_) {
                    out.push_back(AcCommandResult{true, "switched: the peer is active"});
                    switch_requested_ = false;
                }
                out.push_back(AcRequestFullSync{});
            }
            break;
        case State::Standby:
            consider_promotion(now, out, /*on_evidence=*/true);
            break;
        case State::Off:
            break;
    }
}

void Machine::on(const EvPeerLost& e, TimePoint now, Actions& out) {
    const bool was_visible = peer_visible();
    peer_seen_[static_cast<int>(e.path)] = false;
    if (e.path == Path::Direct && peer_seen_[1]) {
        alert(AlertKind::HeartbeatLink, true,
              "heartbeat link lost; peer still answers over the LAN", out);
    }
    if (!was_visible || peer_visible()) return;
    hb_clear_at_.reset();
    alert(AlertKind::Heartbeat, true, "loose connection", out);
    if (peer_ && !peer_->agent_stale) peer_stale_since_.reset();
    if (state_ == State::Off) return;
    detect_at_ = now;
    consider_promotion(now, out);
}

void Machine::on(const EvForeignPeer& e, TimePoint, Actions& out) {
    // The kernel's filter counts drops without keeping the sender: then the MAC is unknown.
    const std::string who =
        e.mac.is_zero() ? std::string("a MAC other than the peer's") : e.mac.to_string();
    alert(AlertKind::PeerMacMismatch, true,
          fmt::format("heartbeats from {} ignored: configured peer MAC is {}", who,
                      cfg_.peer_mac ? cfg_.peer_mac->to_string() : std::string("unset")),
          out);
}

// --- promotion ------------------------------------------------------------------------------

void Machine::consider_promotion(TimePoint now, Actions& out, bool on_evidence) {
    if (state_ != State::Standby && state_ != State::Booting) return;
    if (!healthy()) return;  // a faulty box never takes over
    if (peer_visible() && peer_) {
        const PeerStatus& p = *peer_;
        if (!peer_compatible(p)) return;
        // The peer's kernel says its agent exited (the agent's lifeline socket is gone): no doubt
        // to wait out. Its LAN program already fences the cluster IP; the Fence makes it explicit.
        if (p.agent_gone && on_evidence) {
            send_peer(PeerMsg::Fence, out);
            begin_probe("peer agent exited (its kernel says so)", now, out);
            return;
        }
        // The peer's kernel marks replies stale once its agent missed its tick for
        // agent_stale_after(timeout), and its LAN program fences the cluster IP from that same
        // instant. A whole-VM pause makes the first replies after it stale too, before the
        // peer's loop catches up: so the verdict needs stale replies spanning a while more, and
        // is taken only when a stale reply arrives (evidence), never because our own timer fired
        // late. The floor: a SCHED_FIFO agent loop was seen to miss 7 ms under stress-ng on this
        // VM; a hung verdict on that would hand a healthy active's service away.
        const Duration stale_confirm =
            std::max<Duration>(2 * cfg_.interval, std::chrono::milliseconds(kAgentStallFloor));
        if (p.agent_stale && on_evidence && peer_stale_since_ &&
            now - *peer_stale_since_ >= stale_confirm) {
            // Fence it explicitly too (in case its LAN tick still looks fresh) and promote behind
            // the ARP probe.
            send_peer(PeerMsg::Fence, out);
            begin_probe("peer agent hung (stale heartbeat replies)", now, out);
            return;
        }
        if (p.agent_stale) return;  // the next stale reply decides
        if (p.state == State::Active || p.state == State::SwitchingOut ||
            p.state == State::HandingOff || p.state == State::Probing)
            return;
        // Nobody serves and both see each other: the primary takes the role; a secondary waits
        // unless the primary cannot (unhealthy or off).
        const bool primary_can = p.healthy && p.ha_enabled;
        if (cfg_.station == StationType::Primary || !primary_can) {
            begin_probe(state_ == State::Booting ? "both booting: primary becomes active"
                                                 : "no active peer: primary becomes active",
                        now, out);
        } else if (state_ == State::Booting) {
            enter(State::Standby, "both booting: secondary waits for the primary", now, out);
            deadline_ = now + cfg_.timeout;
        }
        return;
    }
    if (state_ != State::Standby) return;
    // Peer silent on every path. The guide's timeout is how long the peer has been silent on all
    // of them: a path given up early (its NIC lost carrier) does not shorten it, so the last sign
    // on any path counts, and the decision waits for it to be a timeout old.
    if (peer_last_seen_ && now - *peer_last_seen_ < cfg_.timeout) {
        deadline_ = *peer_last_seen_ + cfg_.timeout;
        return;
    }
    if (detect_at_) detect_at_ = std::max(*detect_at_, now);  // decided now, not at the loss
    // Promote only behind an ARP probe.
    begin_probe("heartbeat lost on all paths", now, out);
}

void Machine::begin_probe(std::string reason, TimePoint now, Actions& out, bool careful) {
    handover_term_.reset();
    pending_reason_ = std::move(reason);
    if (!detect_at_) detect_at_ = now;
    probe_from_ = state_;
    enter(State::Probing, pending_reason_, now, out);
    out.push_back(AcProbeClusterIp{careful});
    // The probe takes milliseconds; this bounds a lost answer.
    deadline_ = now + std::max<Duration>(cfg_.timeout, std::chrono::seconds(1));
}

void Machine::on(const EvArpProbeDone& e, TimePoint now, Actions& out) {
    if (state_ != State::Probing) return;
    if (e.conflict) {
        alert(AlertKind::ClusterIpConflict, true,
              fmt::format("cluster IP answered by {}: not promoting", e.by.to_string()), out);
        probe_failed("ARP probe conflict with " + e.by.to_string(), now, out);
        return;
    }
    alert(AlertKind::ClusterIpConflict, false, "cluster IP free", out);
    promote(now, out);
}

void Machine::probe_failed(std::string reason, TimePoint now, Actions& out) {
    detect_at_.reset();
    if (probe_from_ == State::Booting && !peer_visible()) {
        // Still undecided: listen again before deciding alone.
        enter(State::Booting, std::move(reason), now, out);
        deadline_ = now + boot_listen(cfg_.timeout);
        return;
    }
    // Someone holds the cluster IP, most likely the peer we lost sight of: stay standby and try
    // again, at most ten times a second (each try is a few ARP frames on the LAN).
    enter(State::Standby, std::move(reason), now, out);
    deadline_ = now + std::max<Duration>(cfg_.timeout, std::chrono::milliseconds(100));
}

void Machine::promote(TimePoint now, Actions& out) {
    // RFC 5227 done; the term is bumped and made durable before the address moves, so a crash
    // after the takeover can never come back with an older term.
    term_ = std::max(term_, peer_term_seen_) + 1;
    out.push_back(AcPersistTerm{term_});
    out.push_back(AcFenceSelf{false});
    out.push_back(AcAcquireClusterIp{});
    out.push_back(AcStartService{});
    serving_ = true;
    // Detection: from the last sign of the peer (or the fault/command) to the decision.
    Duration detection{0};
    if (detect_at_ && peer_last_seen_ && *peer_last_seen_ < *detect_at_ && !peer_visible())
        detection = *detect_at_ - *peer_last_seen_;
    out.push_back(AcLog{LogKind::Failover,
                        fmt::format("became active (term {}): {}", term_, pending_reason_),
                        probe_from_, State::Active, term_, detection});
    enter(State::Active, pending_reason_, now, out);
    alert(AlertKind::HandoffFailed, false, "serving", out);
    detect_at_.reset();
}

void Machine::demote(std::string reason, TimePoint now, Actions& out) {
    // The address goes first: nothing else may run while two boxes could answer for it.
    out.push_back(AcReleaseClusterIp{});
    out.push_back(AcStopService{});
    serving_ = false;
    out.push_back(AcLog{LogKind::Failover, "became standby: " + reason, state_, State::Standby,
                        term_, Duration{0}});
    enter(State::Standby, std::move(reason), now, out);
}

void Machine::hand_off(std::string reason, TimePoint now, Actions& out) {
    out.push_back(AcReleaseClusterIp{});
    out.push_back(AcStopService{});
    serving_ = false;
    send_peer(PeerMsg::TakeoverNow, out);
    pending_reason_ = std::move(reason);
    enter(State::HandingOff, pending_reason_, now, out);
    resend_at_ = now + cfg_.interval;
    deadline_ = now + std::max<Duration>(cfg_.timeout, std::chrono::seconds(2));
}

void Machine::on(const EvClusterIpRemoved&, TimePoint, Actions& out) {
    if (!serving_) return;
    alert(AlertKind::ClusterIpRemoved, true, "cluster IP removed behind our back; restored", out);
    out.push_back(AcAcquireClusterIp{});
    // Restored at once: the alert clears with the next removal-free stretch (the adapter re-adds).
    alert(AlertKind::ClusterIpRemoved, false, "cluster IP restored", out);
}

// --- faults and service ---------------------------------------------------------------------

void Machine::retry_fault_handoff(TimePoint now, Actions& out) {
    // The guide's self-failure detection: the active hands over once a fault is raised. If no
    // ready standby was there at that instant (it was booting, syncing or away), hand over as
    // soon as one is, for as long as the fault lasts.
    // Cheap first: this runs on every reply while Active.
    if (healthy() || state_ != State::Active || !peer_ || ha_status() != HaStatus::Dual) return;
    if (peer_->state != State::Standby || !peer_->healthy || peer_->agent_stale) return;
    for (FaultKind kind : {FaultKind::Hardware, FaultKind::Software}) {
        const bool on =
            kind == FaultKind::Software ? cfg_.software_fault_switch : cfg_.hardware_fault_switch;
        if (!on || (faults_ & kFaultBit(kind)) == 0) continue;
        detect_at_ = now;
        hand_off(fmt::format("{} fault: {}", to_string(kind),
                             fault_detail_[kind == FaultKind::Software ? 0 : 1]),
                 now, out);
        return;
    }
}

void Machine::handle_fault_policy(FaultKind kind, const std::string& detail, TimePoint now,
                                  Actions& out) {
    const AlertKind ak =
        kind == FaultKind::Software ? AlertKind::SoftwareFault : AlertKind::HardwareFault;
    alert(ak, true, fmt::format("{} fault: {}", to_string(kind), detail), out);
    fault_detail_[kind == FaultKind::Software ? 0 : 1] = detail;
    if (state_ != State::Active) return;
    // Active FCM self-failure detection: with the switch on, tell the standby to take over at
    // once (no timeout wait), then recover locally and rejoin as standby.
    retry_fault_handoff(now, out);
    if (state_ != State::Active) return;
    // Switch off (alert only), or no ready standby yet (retry_fault_handoff runs again when one
    // shows up): keep serving, restart a dead PBX.
    if (kind == FaultKind::Software) {
        out.push_back(AcStopService{});
        out.push_back(AcStartService{});
    }
}

void Machine::on(const EvFault& e, TimePoint now, Actions& out) {
    if (e.kind == FaultKind::HeartbeatLink) {
        alert(AlertKind::HeartbeatLink, e.raised,
              e.raised ? "heartbeat NIC carrier lost: " + e.detail : "heartbeat NIC carrier back",
              out);
        return;
    }
    const unsigned bit = kFaultBit(e.kind);
    if (!e.raised) {
        if (faults_ & bit) {
            faults_ &= ~bit;
            alert(
                e.kind == FaultKind::Software ? AlertKind::SoftwareFault : AlertKind::HardwareFault,
                false, fmt::format("{} fault cleared: {}", to_string(e.kind), e.detail), out);
        }
        if (state_ == State::Standby) consider_promotion(now, out);
        return;
    }
    faults_ |= bit;
    handle_fault_policy(e.kind, e.detail, now, out);
}

void Machine::on(const EvService& e, TimePoint now, Actions& out) {
    switch (e.state) {
        case ServiceState::Running:
            if (faults_ & kFaultBit(FaultKind::Software)) {
                on(EvFault{FaultKind::Software, false, "service running again"}, now, out);
            }
            break;
        case ServiceState::Stopped:
            if (state_ == State::SwitchingOut && sync_.lag_bytes == 0 && sync_.connected) {
                hand_off("force switch", now, out);
            }
            break;
        case ServiceState::Failed:
            if (state_ == State::Active) {
                faults_ |= kFaultBit(FaultKind::Software);
                handle_fault_policy(FaultKind::Software, e.detail, now, out);
            }
            break;
    }
}

void Machine::send_peer(PeerMsg msg, Actions& out) const {
    out.push_back(AcSendPeer{msg, term_, peer_term()});
}

void Machine::on(const EvPeerMessage& e, TimePoint now, Actions& out) {
    // A message aimed at a term we have since left is stale: sent before our last promotion and
    // delivered late (a neighbour queue flushed when a link came back, say). Acting on it could
    // start a takeover beside a healthy active, or fence one.
    if (e.target_term < term_) {
        log::info("core", "ignoring stale {} from the peer: aimed at term {}, ours is {}",
                  to_string(e.msg), e.target_term, term_);
        return;
    }
    switch (e.msg) {
        case PeerMsg::TakeoverNow:
            // The active released the cluster IP and asks us to serve. Still behind the probe.
            if (state_ == State::Standby || state_ == State::Booting) {
                if (!healthy()) return;
                detect_at_ = now;
                peer_term_seen_ = std::max(peer_term_seen_, e.term);
                begin_probe("peer handed over", now, out);
                handover_term_ = e.term;
            }
            break;
        case PeerMsg::Fence:
            // The peer believes we are hung and takes over: step down at once.
            if (serving_ || state_ == State::Probing) {
                out.push_back(AcFenceSelf{true});
                demote("fenced by the peer", now, out);
                out.push_back(AcRequestFullSync{});
            }
            break;
        case PeerMsg::DisableHa:
            if (state_ == State::Standby || state_ == State::Booting) {
                out.push_back(AcLog{LogKind::Failover, "HA disabled by the active"});
                enter(State::Off, "HA disabled on the active", now, out);
            }
            break;
    }
}

void Machine::on(const EvSync& e, TimePoint now, Actions& out) {
    sync_ = e;
    if (state_ == State::Standby || state_ == State::Booting) synced_ = e.initial_done;
    if (state_ == State::SwitchingOut && e.lag_bytes == 0 && e.connected) {
        // Drained: zero acknowledged data would be lost. Roles swap now.
        hand_off("force switch", now, out);
    }
}

void Machine::on(const EvCommand& e, TimePoint now, Actions& out) {
    switch (e.cmd) {
        case Command::Switch: {
            // The guide greys the button on the standby; Force Switch needs a peer to switch to.
            std::string refuse;
            if (state_ == State::Off)
                refuse = "HA is disabled";
            else if (state_ != State::Active)
                refuse =
                    fmt::format("force switch is only available on the active (this box is {})",
                                to_string(state_));
            else if (ha_status() != HaStatus::Dual)
                refuse = "HA status is Single: the peer is not reachable";
            else if (!peer_ || peer_->state != State::Standby || peer_->agent_stale)
                refuse = "the peer is not a ready standby";
            else if (!peer_->healthy)
                refuse = "the standby reports a fault";
            else if (!peer_->synced)
                refuse = "the standby has not finished its initial sync";
            else if (!sync_.connected)
                refuse = "the sync stream to the standby is down";
            if (!refuse.empty()) {
                out.push_back(AcCommandResult{false, "force switch refused: " + refuse});
                return;
            }
            switch_requested_ = true;
            detect_at_ = now;
            // Stop writes first, then wait for the stream to drain, then swap.
            out.push_back(AcStopService{});
            enter(State::SwitchingOut, "force switch requested", now, out);
            deadline_ = now + cfg_.drain_timeout;
            return;
        }
        case Command::DisableHa:
            if (state_ == State::Off) {
                out.push_back(AcCommandResult{false, "HA is already disabled"});
                return;
            }
            if (state_ == State::Standby) {
                out.push_back(AcCommandResult{false, "configuration is restricted on the standby"});
                return;
            }
            send_peer(PeerMsg::DisableHa, out);
            out.push_back(AcLog{LogKind::Failover, "HA disabled"});
            enter(State::Off, "HA disabled by the operator", now, out);
            out.push_back(AcCommandResult{
                true, serving_ ? "HA disabled; this box keeps serving" : "HA disabled"});
            return;
    }
}

}  // namespace ha::core
