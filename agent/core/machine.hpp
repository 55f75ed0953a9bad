// The HA state machine: pure, single-threaded, value-typed. Each call takes one event and the
// current monotonic time and returns the actions to carry out, in order. It never reads a clock,
// never does I/O and keeps deadlines, not timers: the driver arms one timer for next_deadline().
//
// The rules are the guide's ("HA Configuration Parameters", "Active/Standby Role in HA",
// "Force Switch", "Disabling HA Setup") made precise in DESIGN.md. The invariant everything here
// protects: never two actives that can hear each other; a box that cannot prove the peer is gone
// (heartbeat lost on the direct link and on the LAN path, and no ARP answer for the cluster IP)
// does not promote.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/core/config.hpp"
#include "common/clock.hpp"
#include "common/net_types.hpp"

namespace ha::core {

// How long an agent may miss its tick before its kernel calls it stale (replies marked, LAN
// fence up): the heartbeat timeout, but never less than this floor. A box's loop can miss a few
// milliseconds under load even at SCHED_FIFO (7 ms seen on the shared lab VM); a tick judged at a
// sub-millisecond timeout would fence a healthy active's cluster IP whenever that happens. A dead
// agent is no slower to detect for it: its kernel reports the closed socket at once.
inline constexpr std::chrono::milliseconds kAgentStallFloor{20};
constexpr std::chrono::nanoseconds agent_stale_after(std::chrono::nanoseconds timeout) {
    return std::max<std::chrono::nanoseconds>(timeout, kAgentStallFloor);
}

// Runtime role as the guide shows it ("Role of Current UCM"), plus the transitional states.
enum class State : std::uint8_t {
    Booting = 0,       // listening for the peer before deciding
    Probing = 1,       // ARP-probing the cluster IP before promoting
    Active = 2,        // holds the cluster IP, runs the PBX
    Standby = 3,       // mirrors data, watches the active
    SwitchingOut = 4,  // force switch on the active: service stopped, draining sync
    HandingOff = 5,    // released the cluster IP, waiting for the peer to take over
    Off = 6,           // HA disabled ("HA Status: Off")
};
enum class HaStatus : std::uint8_t { Off, Single, Dual };
enum class Path : std::uint8_t { Direct = 0, Lan = 1 };
enum class FaultKind : std::uint8_t {
    Software,       // PBX crash, core dump, deadlock (liveness probe)
    Hardware,       // LAN/WAN carrier loss, disk I/O errors
    HeartbeatLink,  // heartbeat NIC carrier loss: an alert, never a promotion by itself
};
enum class PeerMsg : std::uint8_t {
    TakeoverNow = 1,  // "I released the cluster IP: take over now" (self-fault handoff, switch)
    Fence = 2,        // "you are hung: I am taking over" (the peer's kernel drops the VIP)
    DisableHa = 3,    // HA disabled on the active: the standby turns Off
};
enum class AlertKind : std::uint8_t {
    Heartbeat,          // "HEARTBEAT ... loose connection" / "... has recovered from failure"
    HeartbeatLink,      // heartbeat NIC carrier
    PeerMacMismatch,    // heartbeats from a MAC other than the configured peer MAC
    PairRefused,        // same station type, other model or protocol version
    VersionMismatch,    // other software version: paired, alerted until both match
    ClusterIpConflict,  // the ARP probe found another MAC on the cluster IP
    ClusterIpRemoved,   // someone removed the cluster IP behind our back (restored)
    SoftwareFault,
    HardwareFault,
    SplitBrain,     // two actives met; the loser's data went to quarantine
    PeerHung,       // the peer's kernel answers, its agent does not
    HandoffFailed,  // the peer did not take over after a handoff; we reclaimed
};
enum class LogKind : std::uint8_t { Failover, Backup };

std::string_view to_string(State s);
std::string_view to_string(HaStatus s);
std::string_view to_string(Path p);
std::string_view to_string(FaultKind k);
std::string_view to_string(PeerMsg m);
std::string_view to_string(AlertKind k);

// What one box tells the other in every heartbeat (request and reply alike).
struct PeerStatus {
    StationType station = StationType::Primary;
    State state = State::Booting;
    std::uint64_t term = 0;
    bool ha_enabled = true;
    bool healthy = true;       // no local fault raised on that box
    bool agent_stale = false;  // set by the peer's kernel: its agent stopped refreshing its tick
    bool agent_gone = false;   // set by the peer's kernel: its agent process is gone
    bool synced = false;       // a standby whose initial sync completed
    std::string model;
    std::uint16_t proto = 0;
    std::string version;
    MacAddr mac;
};

// --- events -----------------------------------------------------------------------------------

struct EvTick {};  // time advanced (the timer for next_deadline() fired)
struct EvPeerSeen {
    Path path = Path::Direct;
    PeerStatus peer;
};
struct EvPeerLost {  // the liveness tracker's verdict for one path (requests sent, none answered)
    Path path = Path::Direct;
};
struct EvForeignPeer {  // authenticated heartbeat from a MAC other than the configured peer MAC
    MacAddr mac;
};
struct EvArpProbeDone {
    bool conflict = false;  // another MAC answered (or probed) for the cluster IP
    MacAddr by;
};
struct EvClusterIpRemoved {};  // netlink: the address vanished while we are active
struct EvFault {
    FaultKind kind = FaultKind::Software;
    bool raised = true;  // false = cleared
    std::string detail;  // "pbx exited signal=SIGSEGV core dumped", "lan0 carrier down"
};
enum class ServiceState : std::uint8_t { Running, Stopped, Failed };
struct EvService {
    ServiceState state = ServiceState::Running;
    std::string detail;
};
struct EvPeerMessage {
    PeerMsg msg = PeerMsg::TakeoverNow;
    std::uint64_t term = 0;         // the sender's
    std::uint64_t target_term = 0;  // ours, as the sender last saw it
};
struct EvSync {
    std::uint64_t lag_bytes = 0;
    std::chrono::nanoseconds oldest_unacked{0};
    bool connected = false;
    bool initial_done = false;  // standby: initial sync complete
};
enum class Command : std::uint8_t { Switch, DisableHa };
struct EvCommand {
    Command cmd = Command::Switch;
};

using Event =
    std::variant<EvTick, EvPeerSeen, EvPeerLost, EvForeignPeer, EvArpProbeDone, EvClusterIpRemoved,
                 EvFault, EvService, EvPeerMessage, EvSync, EvCommand>;

// --- actions ----------------------------------------------------------------------------------

struct AcProbeClusterIp {  // RFC 5227 ARP probe (NS for IPv6); answer with EvArpProbeDone
    // A box deciding alone (at boot, nobody heard) probes slowly, RFC 5227 style: nobody is
    // waiting for it, and a peer that is just starting must get the time to answer. A takeover
    // from a peer proven gone probes fast: the outage runs meanwhile.
    bool careful = false;
};
struct AcAcquireClusterIp {};  // add the address, then gratuitous ARP / unsolicited NA bursts
struct AcReleaseClusterIp {};  // remove the address: always before anything else on demotion
struct AcStartService {};
struct AcStopService {};
struct AcPersistTerm {  // write durably before the promotion's next action runs
    std::uint64_t term;
};
struct AcSendPeer {
    PeerMsg msg = PeerMsg::TakeoverNow;
    std::uint64_t term = 0;
    std::uint64_t target_term = 0;  // the peer's term as we last saw it (stale-message guard)
};
struct AcAlert {  // a system event: "HA failure warning", Generate Alert / Restore to normal
    AlertKind kind;
    bool raised;
    std::string content;
};
struct AcLog {  // the HA log (failover log or backup log)
    LogKind kind;
    std::string text;
    // Failover entries: the role change and how long detection took (last sign of the peer, or
    // the fault, to the decision). The driver adds takeover and service-ready times it measures.
    State from = State::Off;
    State to = State::Off;
    std::uint64_t term = 0;
    std::chrono::nanoseconds detection{0};
};
struct AcRequestFullSync {};  // standby: pull everything that differs from the active
struct AcQuarantineData {     // demoted after split brain: keep what we wrote, aside
    std::uint64_t term;
};
struct AcReboot {};
struct AcCommandResult {  // answer to EvCommand
    bool ok;
    std::string message;
};
struct AcFenceSelf {  // the LAN XDP program drops cluster-IP traffic while on
    bool on;
};

using Action =
    std::variant<AcProbeClusterIp, AcAcquireClusterIp, AcReleaseClusterIp, AcStartService,
                 AcStopService, AcPersistTerm, AcSendPeer, AcAlert, AcLog, AcRequestFullSync,
                 AcQuarantineData, AcReboot, AcCommandResult, AcFenceSelf>;
using Actions = std::vector<Action>;

std::string describe(const Action& a);  // one line for debug logs and tests

// --- the machine ------------------------------------------------------------------------------

struct MachineConfig {
    bool enable = false;
    StationType station = StationType::Primary;
    std::optional<MacAddr> peer_mac;
    bool software_fault_switch = false;
    bool hardware_fault_switch = false;
    FaultAction fault_action = FaultAction::RestartService;
    bool has_lan_path = false;  // a second heartbeat path is configured
    std::chrono::nanoseconds timeout = std::chrono::seconds(7);
    std::chrono::nanoseconds interval = std::chrono::milliseconds(700);
    std::chrono::nanoseconds drain_timeout = std::chrono::seconds(10);
    std::string model;
    std::uint16_t proto = 1;
    std::string version;
    MacAddr own_mac;

    static MachineConfig from(const Config& c, std::string model, std::uint16_t proto,
                              std::string version, MacAddr own_mac);
};

// A snapshot for `fcm-hactl status` and for the heartbeat the kernel answers with.
struct Snapshot {
    State state;
    HaStatus ha_status;
    std::uint64_t term;
    bool serving;  // holds (or is acquiring) the cluster IP and runs the PBX
    bool healthy;
    bool synced;
    bool peer_direct;  // peer heard on the direct link
    bool peer_lan;     // peer heard on the LAN path
    std::optional<PeerStatus> peer;
    std::optional<TimePoint> peer_last_seen;
    std::string last_reason;  // why the last role change happened
};

class Machine {
  public:
    // `term` is the persisted term read at start (0 on a new box).
    Machine(MachineConfig config, std::uint64_t term, TimePoint now);

    // The boot actions (nothing when HA is off). Call once, before any event.
    Actions start(TimePoint now);
    Actions handle(const Event& ev, TimePoint now);

    [[nodiscard]] std::optional<TimePoint> next_deadline() const;
    [[nodiscard]] Snapshot snapshot() const;
    [[nodiscard]] PeerStatus own_status() const;  // what our heartbeats carry
    [[nodiscard]] State state() const { return state_; }
    [[nodiscard]] std::uint64_t term() const { return term_; }
    [[nodiscard]] bool serving() const { return serving_; }
    [[nodiscard]] HaStatus ha_status() const;
    // The guide: "configuration is restricted on the standby". Empty = allowed; else the reason.
    [[nodiscard]] std::string config_restriction() const;
    // Settings pushed from the active (peer MAC, fault switches) or changed by the operator.
    void reconfigure(const MachineConfig& config);

  private:
    struct Alerts;
    void on(const EvTick&, TimePoint now, Actions& out);
    void on(const EvPeerSeen&, TimePoint now, Actions& out);
    void on(const EvPeerLost&, TimePoint now, Actions& out);
    void on(const EvForeignPeer&, TimePoint now, Actions& out);
    void on(const EvArpProbeDone&, TimePoint now, Actions& out);
    void on(const EvClusterIpRemoved&, TimePoint now, Actions& out);
    void on(const EvFault&, TimePoint now, Actions& out);
    void on(const EvService&, TimePoint now, Actions& out);
    void on(const EvPeerMessage&, TimePoint now, Actions& out);
    void on(const EvSync&, TimePoint now, Actions& out);
    void on(const EvCommand&, TimePoint now, Actions& out);

    [[nodiscard]] bool peer_visible() const { return peer_seen_[0] || peer_seen_[1]; }
    [[nodiscard]] bool peer_compatible(const PeerStatus& p) const;
    [[nodiscard]] bool healthy() const { return faults_ == 0; }
    void enter(State s, std::string reason, TimePoint now, Actions& out);
    void begin_probe(std::string reason, TimePoint now, Actions& out, bool careful = false);
    void promote(TimePoint now, Actions& out);
    void probe_failed(std::string reason, TimePoint now, Actions& out);
    void demote(std::string reason, TimePoint now, Actions& out);
    void hand_off(std::string reason, TimePoint now, Actions& out);
    // on_evidence: called for a heartbeat just received (a stale peer may be judged hung).
    void consider_promotion(TimePoint now, Actions& out, bool on_evidence = false);
    void alert(AlertKind kind, bool raised, std::string content, Actions& out);
    void handle_fault_policy(FaultKind kind, const std::string& detail, TimePoint now,
                             Actions& out);
    // Active with a fault whose switch is on: hand over as soon as the standby is ready.
    void retry_fault_handoff(TimePoint now, Actions& out);
    void send_peer(PeerMsg msg, Actions& out) const;
    [[nodiscard]] std::uint64_t peer_term() const { return peer_ ? peer_->term : 0; }
    std::string fault_detail_[2];  // the detail of the raised Software/Hardware fault

    MachineConfig cfg_;
    State state_ = State::Booting;
    std::uint64_t term_ = 0;
    std::uint64_t peer_term_seen_ = 0;
    bool serving_ = false;
    bool synced_ = false;
    bool peer_seen_[2] = {false, false};
    std::optional<PeerStatus> peer_;
    std::optional<TimePoint> peer_last_seen_;
    std::optional<TimePoint> peer_stale_since_;
    unsigned faults_ = 0;              // bitmask of raised FaultKind::Software/Hardware
    std::uint32_t alerts_raised_ = 0;  // bitmask of AlertKind
    EvSync sync_{};
    std::string reason_;
    std::string pending_reason_;         // why a probe/handoff started, logged when it completes
    State probe_from_ = State::Booting;  // the state a probe started from (for the failover log)
    std::optional<std::uint64_t> handover_term_;  // probing on the peer's TakeoverNow: its term
    TimePoint state_since_;
    std::optional<TimePoint> deadline_;   // the one deadline of the current state
    std::optional<TimePoint> resend_at_;  // HandingOff: resend TakeoverNow
    std::optional<TimePoint> detect_at_;  // when loss/fault was detected (for the failover log)
    // Hysteresis of the heartbeat alert: "recovered" only after the peer stayed back this long.
    std::optional<TimePoint> hb_clear_at_;
    bool switch_requested_ = false;
};

}  // namespace ha::core
