// HA state machine rules, one test per rule of the guide / DESIGN.md, driven with a fake clock.
#include <gtest/gtest.h>

#include <algorithm>

#include "agent/core/liveness.hpp"
#include "agent/core/machine.hpp"
#include "common/log.hpp"

using namespace ha;
using namespace ha::core;
using namespace std::chrono_literals;

namespace {

MacAddr mac(std::uint8_t last) {
    MacAddr m;
    m.bytes = {2, 0, 0, 0, 0, last};
    return m;
}

MachineConfig cfg(StationType st) {
    MachineConfig c;
    c.enable = true;
    c.station = st;
    c.timeout = 7s;
    c.interval = 700ms;
    c.model = "FCM630A";
    c.proto = 1;
    c.version = "1.0";
    c.own_mac = mac(st == StationType::Primary ? 1 : 2);
    return c;
}

PeerStatus peer(StationType st, State s, std::uint64_t term = 0) {
    PeerStatus p;
    p.station = st;
    p.state = s;
    p.term = term;
    p.model = "FCM630A";
    p.proto = 1;
    p.version = "1.0";
    p.mac = mac(st == StationType::Primary ? 1 : 2);
    p.synced = true;
    return p;
}

template <typename T>
bool has(const Actions& a) {
    return std::any_of(a.begin(), a.end(),
                       [](const Action& x) { return std::holds_alternative<T>(x); });
}
template <typename T>
const T* find(const Actions& a) {
    for (const auto& x : a)
        if (auto* p = std::get_if<T>(&x)) return p;
    return nullptr;
}
template <typename T>
std::ptrdiff_t index_of(const Actions& a) {
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::holds_alternative<T>(a[i])) return static_cast<std::ptrdiff_t>(i);
    return -1;
}

struct Fixture {
    TimePoint now{};
    Machine m;
    explicit Fixture(MachineConfig c, std::uint64_t term = 0) : m(std::move(c), term, TimePoint{}) {
        log::set_level(log::Level::Warn);  // state transitions log at info
        m.start(now);
    }
    Actions ev(const Event& e) { return m.handle(e, now); }
    Actions advance(Duration d) {
        now += d;
        return m.handle(EvTick{}, now);
    }
    // Alone at boot: timeout passes, probe, no conflict -> Active.
    void make_active() {
        advance(7s);
        EXPECT_EQ(m.state(), State::Probing);
        ev(EvArpProbeDone{false, {}});
        EXPECT_EQ(m.state(), State::Active);
    }
};

}  // namespace

TEST(Machine, HaDisabledByDefaultReportsOff) {
    MachineConfig c = cfg(StationType::Primary);
    c.enable = false;
    Machine m(c, 0, TimePoint{});
    EXPECT_TRUE(m.start(TimePoint{}).empty());
    EXPECT_EQ(m.ha_status(), HaStatus::Off);
    EXPECT_EQ(m.state(), State::Off);
}

TEST(Machine, AloneAtBootPromotesOnlyAfterArpProbeFindsNobody) {
    Fixture f(cfg(StationType::Primary));
    EXPECT_EQ(f.m.state(), State::Booting);
    auto a = f.advance(6s);
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    a = f.advance(1s);
    ASSERT_TRUE(has<AcProbeClusterIp>(a));
    EXPECT_TRUE(find<AcProbeClusterIp>(a)->careful) << "alone at boot: an RFC 5227 paced probe";
    EXPECT_FALSE(has<AcAcquireClusterIp>(a));
    a = f.ev(EvArpProbeDone{false, {}});
    EXPECT_EQ(f.m.state(), State::Active);
    // Term persisted before the address moves; service after the address.
    ASSERT_TRUE(has<AcPersistTerm>(a));
    EXPECT_LT(index_of<AcPersistTerm>(a), index_of<AcAcquireClusterIp>(a));
    EXPECT_LT(index_of<AcAcquireClusterIp>(a), index_of<AcStartService>(a));
    EXPECT_EQ(find<AcPersistTerm>(a)->term, 1u);
    EXPECT_EQ(f.m.ha_status(), HaStatus::Single);
}

TEST(Machine, ArpProbeConflictBlocksPromotionAndAlerts) {
    Fixture f(cfg(StationType::Primary));
    f.advance(7s);
    auto a = f.ev(EvArpProbeDone{true, mac(9)});
    EXPECT_NE(f.m.state(), State::Active);
    EXPECT_FALSE(has<AcAcquireClusterIp>(a));
    ASSERT_TRUE(has<AcAlert>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::ClusterIpConflict);
    // Retries after a timeout, still behind the probe.
    a = f.advance(7s);
    EXPECT_TRUE(has<AcProbeClusterIp>(a));
}

TEST(Machine, BootListensAtLeastASecondWhateverTheTimeout) {
    // A 1 ms timeout must not let a booting box decide before a peer's first reply could arrive.
    MachineConfig c = cfg(StationType::Primary);
    c.timeout = 1ms;
    c.interval = 100us;
    Fixture f(c);
    EXPECT_FALSE(has<AcProbeClusterIp>(f.advance(500ms)));
    EXPECT_TRUE(has<AcProbeClusterIp>(f.advance(500ms)));
}

TEST(Machine, BootingBesideAnActivePeerBecomesStandbyWithoutPreemption) {
    // Guide "Active/Standby Role": a peer already active stays active, even a secondary.
    Fixture f(cfg(StationType::Primary));
    auto a = f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Active, 4)});
    EXPECT_EQ(f.m.state(), State::Standby);
    EXPECT_TRUE(has<AcRequestFullSync>(a));  // Data Sync 1: the standby requests all data
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(f.m.ha_status(), HaStatus::Dual);
}

TEST(Machine, BothBootingThePrimaryBecomesActive) {
    Fixture p(cfg(StationType::Primary));
    Fixture s(cfg(StationType::Secondary));
    auto a = p.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Booting)});
    EXPECT_TRUE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(p.m.state(), State::Probing);
    s.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Booting)});
    EXPECT_EQ(s.m.state(), State::Standby);
}

TEST(Machine, SameStationTypeRefusesToPairAndNeverPromotesBesideIt) {
    // Guide "Station Type": the two FCM cannot be configured as the same type.
    Fixture f(cfg(StationType::Primary));
    auto a = f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Booting)});
    ASSERT_TRUE(has<AcAlert>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::PairRefused);
    a = f.advance(7s);
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(f.m.ha_status(), HaStatus::Single);
}

TEST(Machine, OtherModelOrProtocolRefusesToPair) {
    Fixture f(cfg(StationType::Primary));
    PeerStatus p = peer(StationType::Secondary, State::Booting);
    p.model = "FCM620";
    auto a = f.ev(EvPeerSeen{Path::Direct, p});
    ASSERT_TRUE(has<AcAlert>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::PairRefused);
    Fixture g(cfg(StationType::Primary));
    p = peer(StationType::Secondary, State::Booting);
    p.proto = 2;
    a = g.ev(EvPeerSeen{Path::Direct, p});
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::PairRefused);
}

TEST(Machine, OtherSoftwareVersionPairsWithAnAlertForRollingUpgrade) {
    // Guide "Firmware Upgrade": the standby is upgraded first and pairs with the old active.
    Fixture f(cfg(StationType::Secondary));
    PeerStatus p = peer(StationType::Primary, State::Active, 1);
    p.version = "1.1";
    auto a = f.ev(EvPeerSeen{Path::Direct, p});
    EXPECT_EQ(f.m.state(), State::Standby);
    bool version_alert = false;
    for (auto& x : a)
        if (auto* al = std::get_if<AcAlert>(&x))
            version_alert |= al->kind == AlertKind::VersionMismatch && al->raised;
    EXPECT_TRUE(version_alert);
    p.version = "1.0";
    a = f.ev(EvPeerSeen{Path::Direct, p});
    ASSERT_TRUE(has<AcAlert>(a));
    EXPECT_FALSE(find<AcAlert>(a)->raised);
}

TEST(Machine, StandbyPromotesOnlyWhenBothPathsLostAndProbeClear) {
    MachineConfig c = cfg(StationType::Secondary);
    c.has_lan_path = true;
    Fixture f(c);
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 3)});
    f.ev(EvPeerSeen{Path::Lan, peer(StationType::Primary, State::Active, 3)});
    f.advance(7s);  // each path's loss is reported a timeout after its last reply
    auto a = f.ev(EvPeerLost{Path::Direct});
    EXPECT_EQ(f.m.state(), State::Standby);  // LAN path still answers: no promotion
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::HeartbeatLink);
    a = f.ev(EvPeerLost{Path::Lan});
    EXPECT_TRUE(has<AcProbeClusterIp>(a));
    a = f.ev(EvArpProbeDone{false, {}});
    EXPECT_EQ(f.m.state(), State::Active);
    EXPECT_EQ(find<AcPersistTerm>(a)->term, 4u);  // term grows past the peer's
}

TEST(Machine, HeartbeatCarrierLossDoesNotShortenTheTimeout) {
    // Guide Table 1: the standby takes over once the active "has been disconnected for this
    // period". The direct path is given up at once when the heartbeat NIC loses carrier, and the
    // LAN path (probed less often) can report its loss a timeout after a reply older than the
    // last direct one: the peer's silence on every path must still be a whole timeout.
    MachineConfig c = cfg(StationType::Secondary);
    c.has_lan_path = true;
    Fixture f(c);
    f.ev(EvPeerSeen{Path::Lan, peer(StationType::Primary, State::Active, 3)});
    f.now += 2s;
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 3)});  // last sign
    f.now += 100ms;
    auto a = f.ev(EvPeerLost{Path::Direct});  // carrier lost
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    f.now += 4900ms;  // 7 s after the last LAN reply, 5 s after the last direct one
    a = f.ev(EvPeerLost{Path::Lan});
    EXPECT_FALSE(has<AcProbeClusterIp>(a)) << "only 5 s of silence";
    EXPECT_EQ(f.m.state(), State::Standby);
    ASSERT_TRUE(f.m.next_deadline());
    EXPECT_EQ(*f.m.next_deadline() - TimePoint{}, 9s) << "the last sign + the timeout";
    a = f.advance(1999ms);
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    a = f.advance(1ms);
    ASSERT_TRUE(has<AcProbeClusterIp>(a)) << "7 s after the last sign on any path";
    a = f.ev(EvArpProbeDone{false, {}});
    EXPECT_EQ(f.m.state(), State::Active);
    ASSERT_TRUE(has<AcLog>(a));
    EXPECT_EQ(find<AcLog>(a)->detection, 7s);
}

TEST(Machine, FlappingHeartbeatRaisesOneAlertAndOneRestoreAfterItSettles) {
    // Guide Figure 11: "HEARTBEAT ... loose connection" then "... has recovered from failure",
    // with hysteresis: a flapping link gives one of each, not one per flap.
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    int raised = 0, cleared = 0;
    auto count = [&](const Actions& acts) {
        for (auto& x : acts)
            if (auto* al = std::get_if<AcAlert>(&x); al && al->kind == AlertKind::Heartbeat)
                (al->raised ? raised : cleared)++;
    };
    for (int i = 0; i < 5; ++i) {  // a flapping link: back for 2 s each time, less than the hold
        count(f.ev(EvPeerLost{Path::Direct}));
        count(f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)}));
        count(f.advance(2s));
    }
    EXPECT_EQ(raised, 1);
    EXPECT_EQ(cleared, 0);
    count(f.advance(5s));  // stable for the 7 s hold
    EXPECT_EQ(cleared, 1);
    EXPECT_EQ(f.m.state(), State::Active);  // the active never demotes for a lost standby
}

TEST(Machine, TwoActivesMeetHigherTermWinsLoserQuarantines) {
    Fixture f(cfg(StationType::Primary), 2);
    f.make_active();  // term 3
    auto a = f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Active, 5)});
    EXPECT_EQ(f.m.state(), State::Standby);
    EXPECT_EQ(index_of<AcReleaseClusterIp>(a), 0);  // the address goes first
    EXPECT_TRUE(has<AcQuarantineData>(a));
    EXPECT_TRUE(has<AcRequestFullSync>(a));
}

TEST(Machine, TwoActivesWithEqualTermsThePrimaryWins) {
    Fixture p(cfg(StationType::Primary));
    p.make_active();
    auto a = p.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Active, 1)});
    EXPECT_EQ(p.m.state(), State::Active);
    Fixture s(cfg(StationType::Secondary));
    s.make_active();
    a = s.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    EXPECT_EQ(s.m.state(), State::Standby);
}

TEST(Machine, SoftwareFaultWithSwitchOnHandsOverAtOnce) {
    // Guide "Active FCM: Self-Failure Detection": notify the standby, no timeout wait.
    MachineConfig c = cfg(StationType::Primary);
    c.software_fault_switch = true;
    Fixture f(c);
    f.make_active();
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    auto a = f.ev(EvFault{FaultKind::Software, true, "pbx core dumped"});
    EXPECT_EQ(f.m.state(), State::HandingOff);
    EXPECT_EQ(index_of<AcReleaseClusterIp>(a), index_of<AcAlert>(a) + 1);
    ASSERT_TRUE(has<AcSendPeer>(a));
    EXPECT_EQ(find<AcSendPeer>(a)->msg, PeerMsg::TakeoverNow);
    a = f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Active, 2)});
    EXPECT_EQ(f.m.state(), State::Standby);  // rejoins as standby
    EXPECT_TRUE(has<AcLog>(a));
}

TEST(Machine, SoftwareFaultWithSwitchOffAlertsAndKeepsServing) {
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    auto a = f.ev(EvFault{FaultKind::Software, true, "pbx deadlock"});
    EXPECT_EQ(f.m.state(), State::Active);
    EXPECT_FALSE(has<AcReleaseClusterIp>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::SoftwareFault);
    EXPECT_TRUE(has<AcStartService>(a));  // local recovery of the PBX
}

TEST(Machine, HardwareFaultFollowsTheHardwareSwitch) {
    MachineConfig c = cfg(StationType::Primary);
    c.hardware_fault_switch = true;
    Fixture on(c);
    on.make_active();
    on.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    on.ev(EvFault{FaultKind::Hardware, true, "lan0 carrier down"});
    EXPECT_EQ(on.m.state(), State::HandingOff);
    Fixture off(cfg(StationType::Primary));
    off.make_active();
    off.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    auto a = off.ev(EvFault{FaultKind::Hardware, true, "lan0 carrier down"});
    EXPECT_EQ(off.m.state(), State::Active);
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::HardwareFault);
}

TEST(Machine, HeartbeatNicLossAloneIsAnAlertNeverAPromotion) {
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    auto a = f.ev(EvFault{FaultKind::HeartbeatLink, true, "hb0 carrier down"});
    EXPECT_EQ(f.m.state(), State::Standby);
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::HeartbeatLink);
}

TEST(Machine, FaultyStandbyNeverTakesOver) {
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    f.ev(EvFault{FaultKind::Hardware, true, "lan0 carrier down"});
    f.now += 7s;  // the loss is reported a timeout after the last reply
    auto a = f.ev(EvPeerLost{Path::Direct});
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    a = f.ev(EvFault{FaultKind::Hardware, false, "lan0 carrier up"});
    EXPECT_TRUE(has<AcProbeClusterIp>(a));  // healthy again and the peer still gone
}

TEST(Machine, ForceSwitchRefusedOnStandbyWithReason) {
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    auto a = f.ev(EvCommand{Command::Switch});
    ASSERT_TRUE(has<AcCommandResult>(a));
    EXPECT_FALSE(find<AcCommandResult>(a)->ok);
    EXPECT_NE(find<AcCommandResult>(a)->message.find("only available on the active"),
              std::string::npos);
}

TEST(Machine, ForceSwitchRefusedWhileSingle) {
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    auto a = f.ev(EvCommand{Command::Switch});
    EXPECT_FALSE(find<AcCommandResult>(a)->ok);
    EXPECT_NE(find<AcCommandResult>(a)->message.find("Single"), std::string::npos);
}

TEST(Machine, ForceSwitchStopsServiceDrainsSyncThenHandsOver) {
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    f.ev(EvSync{4096, 3ms, true, false});
    auto a = f.ev(EvCommand{Command::Switch});
    EXPECT_EQ(f.m.state(), State::SwitchingOut);
    EXPECT_TRUE(has<AcStopService>(a));
    EXPECT_FALSE(has<AcReleaseClusterIp>(a));  // not before the stream drained
    a = f.ev(EvSync{1024, 1ms, true, false});
    EXPECT_FALSE(has<AcReleaseClusterIp>(a));
    a = f.ev(EvSync{0, 0ms, true, false});
    EXPECT_TRUE(has<AcReleaseClusterIp>(a));
    EXPECT_EQ(find<AcSendPeer>(a)->msg, PeerMsg::TakeoverNow);
    a = f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Active, 2)});
    EXPECT_EQ(f.m.state(), State::Standby);
    ASSERT_TRUE(has<AcCommandResult>(a));
    EXPECT_TRUE(find<AcCommandResult>(a)->ok);
}

TEST(Machine, ForceSwitchAbortsWhenSyncDoesNotDrain) {
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    f.ev(EvSync{4096, 3ms, true, false});
    f.ev(EvCommand{Command::Switch});
    auto a = f.advance(10s);
    EXPECT_EQ(f.m.state(), State::Active);
    EXPECT_TRUE(has<AcStartService>(a));
    EXPECT_FALSE(find<AcCommandResult>(a)->ok);
}

TEST(Machine, StandbyTakesOverOnHandoffBehindTheProbe) {
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    auto a = f.ev(EvPeerMessage{PeerMsg::TakeoverNow, 1});
    EXPECT_TRUE(has<AcProbeClusterIp>(a));
    a = f.ev(EvArpProbeDone{false, {}});
    EXPECT_EQ(f.m.state(), State::Active);
    EXPECT_EQ(find<AcPersistTerm>(a)->term, 2u);
}

TEST(Machine, AHandoverIsNotUndoneByTheHandingPeersOwnOldReports) {
    // The peer hands over; a reply it gave just before still says Active at its old term. Only a
    // peer that promoted (a newer term) got there first.
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 3)});
    f.ev(EvPeerMessage{PeerMsg::TakeoverNow, 3, 0});
    ASSERT_EQ(f.m.state(), State::Probing);
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 3)});
    EXPECT_EQ(f.m.state(), State::Probing) << "an old report of the handing-over peer";
    f.ev(EvArpProbeDone{false, {}});
    EXPECT_EQ(f.m.state(), State::Active);

    Fixture g(cfg(StationType::Secondary));
    g.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 3)});
    g.ev(EvPeerMessage{PeerMsg::TakeoverNow, 3, 0});
    g.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 4)});
    EXPECT_EQ(g.m.state(), State::Standby) << "the peer took the role back: yield";
}

TEST(Machine, HungPeerAgentIsTakenOverAfterStaleRepliesSpanTwoIntervals) {
    // The peer's kernel marks replies stale once its agent missed its tick for a timeout; the
    // verdict then needs stale replies spanning two intervals (never less than the stall floor).
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    PeerStatus hung = peer(StationType::Primary, State::Active, 1);
    hung.agent_stale = true;
    auto a = f.ev(EvPeerSeen{Path::Direct, hung});
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::PeerHung);
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    f.now += 1s;
    a = f.ev(EvPeerSeen{Path::Direct, hung});  // 1 s of stale replies: under two intervals
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    a = f.advance(5s);  // our timer alone is no evidence (it may have fired late)
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    a = f.ev(EvPeerSeen{Path::Direct, hung});  // stale replies spanning more than 1.4 s
    ASSERT_TRUE(has<AcSendPeer>(a));
    EXPECT_EQ(find<AcSendPeer>(a)->msg, PeerMsg::Fence);
    EXPECT_TRUE(has<AcProbeClusterIp>(a));
}

TEST(Machine, StaleConfirmationNeverShorterThanTheStallFloor) {
    MachineConfig c = cfg(StationType::Secondary);
    c.timeout = 1ms;
    c.interval = 100us;
    Fixture f(c);
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    PeerStatus hung = peer(StationType::Primary, State::Active, 1);
    hung.agent_stale = true;
    f.ev(EvPeerSeen{Path::Direct, hung});
    f.now += 10ms;  // a loaded box's loop may miss this much: not a hung agent yet
    EXPECT_FALSE(has<AcProbeClusterIp>(f.ev(EvPeerSeen{Path::Direct, hung})));
    f.now += kAgentStallFloor;
    EXPECT_TRUE(has<AcProbeClusterIp>(f.ev(EvPeerSeen{Path::Direct, hung})));
}

TEST(Machine, PeerAgentExitedIsTakenOverAtOnceBehindTheProbe) {
    // kill -9 of the active's agent: its kernel closes the agent's socket and says so in the
    // next reply; nothing to wait for (its LAN program already fences the cluster IP).
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    PeerStatus gone = peer(StationType::Primary, State::Active, 1);
    gone.agent_stale = true;
    gone.agent_gone = true;
    auto a = f.ev(EvPeerSeen{Path::Direct, gone});
    ASSERT_TRUE(has<AcSendPeer>(a));
    EXPECT_EQ(find<AcSendPeer>(a)->msg, PeerMsg::Fence);
    ASSERT_TRUE(has<AcProbeClusterIp>(a));
    EXPECT_FALSE(find<AcProbeClusterIp>(a)->careful);
    EXPECT_EQ(find<AcAlert>(a)->content, "peer agent exited (kernel alive)");
    EXPECT_FALSE(has<AcAcquireClusterIp>(a));
    a = f.ev(EvArpProbeDone{false, {}});
    EXPECT_EQ(f.m.state(), State::Active);
    EXPECT_EQ(find<AcPersistTerm>(a)->term, 2u);
}

TEST(Machine, FaultWithNoReadyStandbyHandsOverOnceOneIsReady) {
    // Guide "Active FCM: Self-Failure Detection": the handover waits for a standby, not for
    // the fault to happen again.
    MachineConfig c = cfg(StationType::Primary);
    c.hardware_fault_switch = true;
    Fixture f(c);
    f.make_active();
    PeerStatus syncing = peer(StationType::Secondary, State::Booting, 1);
    f.ev(EvPeerSeen{Path::Direct, syncing});
    auto a = f.ev(EvFault{FaultKind::Hardware, true, "lan0 carrier down"});
    EXPECT_EQ(f.m.state(), State::Active) << "nobody to hand over to yet";
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::HardwareFault);
    a = f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    EXPECT_EQ(f.m.state(), State::HandingOff);
    EXPECT_EQ(index_of<AcReleaseClusterIp>(a), 0);
    ASSERT_TRUE(has<AcSendPeer>(a));
    EXPECT_EQ(find<AcSendPeer>(a)->msg, PeerMsg::TakeoverNow);
}

TEST(Machine, ClearedFaultIsNotHandedOverLater) {
    MachineConfig c = cfg(StationType::Primary);
    c.hardware_fault_switch = true;
    Fixture f(c);
    f.make_active();
    f.ev(EvFault{FaultKind::Hardware, true, "lan0 carrier down"});
    f.ev(EvFault{FaultKind::Hardware, false, "lan0 carrier up"});
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Secondary, State::Standby, 1)});
    EXPECT_EQ(f.m.state(), State::Active);
}

TEST(Machine, FencedActiveStepsDownAtOnce) {
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    auto a = f.ev(EvPeerMessage{PeerMsg::Fence, 1, 1});
    EXPECT_EQ(f.m.state(), State::Standby);
    EXPECT_EQ(index_of<AcFenceSelf>(a), 0);
    EXPECT_EQ(index_of<AcReleaseClusterIp>(a), 1);
}

TEST(Machine, MessagesAimedAtATermWeLeftAreIgnored) {
    // A TakeoverNow or Fence sent before our last promotion, delivered late (a neighbour queue
    // flushed when a LAN link came back), must not start a takeover or fence a healthy active.
    Fixture f(cfg(StationType::Secondary), 4);
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 5)});
    auto a = f.ev(EvPeerMessage{PeerMsg::TakeoverNow, 3, 2});
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(f.m.state(), State::Standby);
    a = f.ev(EvPeerMessage{PeerMsg::TakeoverNow, 5, 4});
    EXPECT_TRUE(has<AcProbeClusterIp>(a)) << "current: aimed at our term";

    Fixture act(cfg(StationType::Primary), 6);
    act.make_active();  // term 7
    a = act.ev(EvPeerMessage{PeerMsg::Fence, 5, 6});
    EXPECT_EQ(act.m.state(), State::Active) << "a fence for the term we had before";
    a = act.ev(EvPeerMessage{PeerMsg::Fence, 5, 7});
    EXPECT_EQ(act.m.state(), State::Standby);
}

TEST(Machine, StandbyRestrictsConfiguration) {
    // Guide "Web UI Access": configuration is restricted on the standby.
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    EXPECT_EQ(f.m.config_restriction(), "configuration is restricted on the standby");
    Fixture a(cfg(StationType::Primary));
    a.make_active();
    EXPECT_TRUE(a.m.config_restriction().empty());
}

TEST(Machine, DisableHaOnActiveReplicatesAndKeepsServing) {
    // Guide "Disabling HA Setup".
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    auto a = f.ev(EvCommand{Command::DisableHa});
    EXPECT_EQ(f.m.ha_status(), HaStatus::Off);
    EXPECT_TRUE(f.m.snapshot().serving);
    EXPECT_FALSE(has<AcReleaseClusterIp>(a));
    EXPECT_EQ(find<AcSendPeer>(a)->msg, PeerMsg::DisableHa);
    Fixture s(cfg(StationType::Secondary));
    s.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    s.ev(EvPeerMessage{PeerMsg::DisableHa, 1, 0});
    EXPECT_EQ(s.m.ha_status(), HaStatus::Off);
    EXPECT_FALSE(s.m.snapshot().serving);
}

TEST(Machine, HeartbeatFromOtherMacIsIgnoredAndAlerted) {
    // Guide "Replacing FCM in HA": a box with a new MAC is ignored until the peer MAC changes.
    MachineConfig c = cfg(StationType::Primary);
    c.peer_mac = mac(2);
    Fixture f(c);
    f.make_active();
    PeerStatus p = peer(StationType::Secondary, State::Standby);
    p.mac = mac(7);
    auto a = f.ev(EvPeerSeen{Path::Direct, p});
    EXPECT_EQ(f.m.ha_status(), HaStatus::Single);
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::PeerMacMismatch);
    c.peer_mac = mac(7);
    f.m.reconfigure(c);
    f.ev(EvPeerSeen{Path::Direct, p});
    EXPECT_EQ(f.m.ha_status(), HaStatus::Dual);
}

TEST(Machine, ClusterIpRemovedBehindOurBackIsRestored) {
    Fixture f(cfg(StationType::Primary));
    f.make_active();
    auto a = f.ev(EvClusterIpRemoved{});
    EXPECT_TRUE(has<AcAcquireClusterIp>(a));
    EXPECT_EQ(find<AcAlert>(a)->kind, AlertKind::ClusterIpRemoved);
}

TEST(Machine, StaleEmptyReplyFromAPeerWhoseAgentNeverPublishedIsIgnored) {
    // A starting peer's kernel answers before its agent wrote a state: no pairing verdict yet.
    Fixture f(cfg(StationType::Primary));
    PeerStatus empty;
    empty.agent_stale = true;
    empty.station = StationType::Secondary;
    auto a = f.ev(EvPeerSeen{Path::Direct, empty});
    EXPECT_TRUE(a.empty());
    EXPECT_EQ(f.m.ha_status(), HaStatus::Single);
}

TEST(Machine, AFreshReplyAfterAPauseClearsTheHungSuspicion) {
    // A whole-VM pause makes the first replies after it stale; the peer's loop catches up.
    Fixture f(cfg(StationType::Secondary));
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    PeerStatus hung = peer(StationType::Primary, State::Active, 1);
    hung.agent_stale = true;
    f.ev(EvPeerSeen{Path::Direct, hung});
    f.now += 1ms;
    f.ev(EvPeerSeen{Path::Direct, peer(StationType::Primary, State::Active, 1)});
    f.now += 7s;
    auto a = f.ev(EvPeerSeen{Path::Direct, hung});
    EXPECT_FALSE(has<AcProbeClusterIp>(a));
    EXPECT_EQ(f.m.state(), State::Standby);
}

namespace {
// A path whose first request (seq 1, sent at time zero) was answered `rtt` later.
Liveness answered_once(Duration timeout, Duration max_gap, Duration rtt) {
    Liveness l(timeout, max_gap);
    l.sent(1, TimePoint{});
    l.replied(1, TimePoint{} + rtt);
    (void)l.update(TimePoint{} + rtt);
    return l;
}
}  // namespace

TEST(Liveness, NoCheckIsDueOnceThePeerIsLost) {
    // A check time left in the past would wake the loop again and again while the peer is gone.
    Liveness l = answered_once(7s, Duration::max(), 1ms);
    ASSERT_TRUE(l.alive());
    TimePoint t{};
    std::uint64_t seq = 1;
    for (auto at = t + 1s; at <= t + 9s; at += 700ms) l.sent(++seq, at);
    EXPECT_EQ(l.next_check(t + 2s), t + 1ms + 7s) << "a timeout after the last sign of life";
    ASSERT_FALSE(l.update(t + 9s).value_or(true));  // lost: 7 s of unanswered requests
    EXPECT_FALSE(l.next_check(t + 9s).has_value());
    l.replied(seq, t + 10s);
    EXPECT_TRUE(l.update(t + 10s).value_or(false));  // back
}

TEST(Liveness, APauseInOurOwnSendingIsNoEvidence) {
    // The whole machine stopped for 30 ms (host steal): the replies to what we sent just before
    // may not have been read yet. A 1 ms watch starts again after the pause.
    Liveness l = answered_once(1ms, 500us, 20us);
    ASSERT_TRUE(l.alive());
    TimePoint t{};
    l.sent(2, t + 100us);
    l.sent(3, t + 200us);
    // ... the machine stalls here ...
    l.sent(4, t + 30ms);
    EXPECT_FALSE(l.lost(t + 30ms)) << "requests from before the pause prove nothing";
    EXPECT_EQ(l.next_check(t + 30ms), std::nullopt) << "only one request since the pause";
    l.sent(5, t + 30ms + 100us);
    EXPECT_EQ(l.next_check(t + 30ms + 100us), t + 31ms);
    l.replied(3, t + 30ms + 150us);  // the late reply, read after the pause
    EXPECT_FALSE(l.lost(t + 31ms + 100us));
    EXPECT_FALSE(l.update(t + 31ms + 100us).has_value());
}

TEST(Liveness, APeerGoneIsLostEvenWhenATimeoutHoldsMoreRequestsThanAreKept) {
    // 1 s timeout, a request every 100 us: 10 000 requests per timeout, more than the record
    // keeps. Trimming the oldest must not move the start of the silence being judged.
    Liveness l = answered_once(1s, 500ms, 20us);
    ASSERT_TRUE(l.alive());
    TimePoint t{};
    std::uint64_t seq = 1;
    TimePoint at = t;
    while (at < t + 1s) {
        at += 100us;
        l.sent(++seq, at);
        ASSERT_FALSE(l.lost(at)) << "lost before the timeout, at " << (at - t).count() << " ns";
    }
    for (int i = 0; i < 200; ++i) {
        at += 100us;
        l.sent(++seq, at);
    }
    EXPECT_TRUE(l.lost(at)) << "1.02 s of unanswered requests";
    EXPECT_FALSE(l.update(at).value_or(true));
}

TEST(Liveness, ThePeerGoneWhileWeKeepSendingIsLost) {
    Liveness l = answered_once(1ms, 500us, 20us);
    ASSERT_TRUE(l.alive());
    TimePoint t{};
    std::uint64_t seq = 1;
    for (auto at = t + 100us; at <= t + 1100us; at += 100us) l.sent(++seq, at);
    EXPECT_TRUE(l.lost(t + 1100us));
    EXPECT_FALSE(l.lost(t + 3ms)) << "and a prober that stopped sending has no evidence";
}

TEST(Liveness, ThePeersOwnRequestsAreLife) {
    Liveness l(1ms, 500us);
    TimePoint t{};
    for (std::uint64_t s = 1; s <= 20; ++s) {
        l.sent(s, t + s * 100us);
        l.heard(t + s * 100us + 50us);  // its requests reach us; our requests or its replies do not
    }
    EXPECT_FALSE(l.lost(t + 2ms + 100us));
}

TEST(Liveness, ThousandsOfUnansweredRequestsKeepTheWatchBounded) {
    // With the peer gone the prober keeps sending: the oldest requests are dropped, the verdict
    // stays "lost", and the watch still starts at the oldest request kept.
    Liveness l = answered_once(1ms, 500us, 20us);
    ASSERT_TRUE(l.alive());
    TimePoint t{};
    std::uint64_t seq = 1;
    TimePoint at = t;
    for (int i = 0; i < 10000; ++i) l.sent(++seq, at += 100us);
    EXPECT_TRUE(l.lost(at));
    EXPECT_FALSE(l.update(at).value_or(true));
    l.replied(seq, at + 10us);
    EXPECT_TRUE(l.update(at + 10us).value_or(false));
}
