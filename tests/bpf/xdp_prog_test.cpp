// The XDP heartbeat program under BPF_PROG_TEST_RUN: replies, drops by reason, stale tick, fencing.
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bpf_test_env.hpp"
#include "common/clock.hpp"
#include "common/unique_fd.hpp"
#include "loader.hpp"
#include "packet_builder.hpp"
#include "wire_util.hpp"

namespace ha::bpf {
namespace {

using test::Bytes;
using test::FrameBuilder;
using test::ip4;
using test::Mac;

const Key kKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
const Mac kPeerMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02};
const Mac kOurMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01};
const std::uint32_t kPeerIp = ip4("198.18.0.2");
const std::uint32_t kOurIp = ip4("198.18.0.1");
const std::uint32_t kClusterIp = ip4("198.18.0.100");

ha_node_state node(std::uint8_t station, std::uint8_t state, std::uint64_t term) {
    NodeState s;
    s.term = term;
    s.station = station;
    s.state = state;
    s.ha_enabled = true;
    s.healthy = true;
    s.proto_version = 1;
    s.model = "FCM630A";
    s.version = "1.2.3";
    return *to_wire(s);
}

class XdpProg : public ::testing::Test {
  protected:
    void SetUp() override {
        HA_REQUIRE_ROOT();
        ResponderOptions o;
        o.ifname = "test";
        o.key = kKey;
        MacAddr peer;
        std::memcpy(peer.bytes.data(), kPeerMac.data(), 6);
        o.peer_mac = peer;
        o.cluster_ip = *IpAddr::parse("198.18.0.100");
        o.is_lan = lan_;
        o.lifeline_port = lifeline_port_;
        auto r = Responder::create(o);
        ASSERT_TRUE(r) << r.error().message();
        resp_.emplace(std::move(*r));
        self_.self = node(HA_STATION_PRIMARY, 2, 7);
        self_.alive_until_ns = mono_ns() + 60'000'000'000ULL;
        ASSERT_TRUE(resp_->set_state(self_));
    }

    MsgBytes request(std::uint64_t seq) const {
        return build_request(node(HA_STATION_SECONDARY, 3, 6), kKey, seq, 123456789);
    }
    static Bytes frame(std::span<const std::uint8_t> payload, const Mac& src = kPeerMac) {
        return FrameBuilder()
            .eth(src, kOurMac)
            .ipv4(kPeerIp, kOurIp)
            .udp(40000, 9527)
            .payload(payload)
            .build();
    }
    TestRunResult run(const Bytes& f) {
        auto r = resp_->run_once(f);
        EXPECT_TRUE(r) << r.error().message();
        return r ? *r : TestRunResult{};
    }
    ha_counters counters() {
        auto c = resp_->counters();
        EXPECT_TRUE(c) << c.error().message();
        return c ? *c : ha_counters{};
    }

    bool lan_ = false;
    std::uint16_t lifeline_port_ = 0;
    std::optional<Responder> resp_;
    ha_agent_state self_{};
};

class XdpLanProg : public XdpProg {
  protected:
    XdpLanProg() { lan_ = true; }
};

// The agent's lifeline: a UDP socket bound to 127.0.0.1 on a free port of this netns.
class XdpAgentSock : public XdpProg {
  protected:
    XdpAgentSock() {
        sock_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sa;
        if (sock_ && ::bind(sock_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
            ::getsockname(sock_.get(), reinterpret_cast<sockaddr*>(&sa), &len) == 0)
            lifeline_port_ = ntohs(sa.sin_port);
    }
    void SetUp() override {
        ASSERT_NE(lifeline_port_, 0) << "no agent socket: " << std::strerror(errno);
        XdpProg::SetUp();
    }
    UniqueFd sock_;
};

class XdpLanAgentSock : public XdpAgentSock {
  protected:
    XdpLanAgentSock() { lan_ = true; }
};

std::span<const std::uint8_t> payload_of(const Bytes& f) {
    return std::span(f).subspan(42, kMsgSize);
}

TEST_F(XdpProg, ValidRequestGetsSignedReplyInPlace) {
    const MsgBytes req = request(make_seq(1, 1));
    const Bytes in = frame(req);
    const TestRunResult out = run(in);
    ASSERT_EQ(out.verdict, XDP_TX);
    ASSERT_EQ(out.frame.size(), in.size());
    EXPECT_TRUE(std::equal(out.frame.begin(), out.frame.begin() + 6, kPeerMac.begin()));
    EXPECT_TRUE(std::equal(out.frame.begin() + 6, out.frame.begin() + 12, kOurMac.begin()));
    std::uint32_t saddr = 0, daddr = 0;
    std::memcpy(&saddr, &out.frame[26], 4);
    std::memcpy(&daddr, &out.frame[30], 4);
    EXPECT_EQ(saddr, kOurIp);
    EXPECT_EQ(daddr, kPeerIp);
    EXPECT_EQ(out.frame[34] << 8 | out.frame[35], 9527);  // source port
    EXPECT_EQ(out.frame[36] << 8 | out.frame[37], 40000);
    EXPECT_TRUE(test::ipv4_checksum_ok(out.frame));
    EXPECT_NE(out.frame[40] | out.frame[41], 0) << "UDP checksum computed";
    EXPECT_TRUE(test::udp_checksum_ok(out.frame));

    auto rep = parse_message(payload_of(out.frame), kKey);
    ASSERT_TRUE(rep) << rep.error().message();
    EXPECT_EQ(rep->type, MsgType::Reply);
    EXPECT_EQ(rep->seq, make_seq(1, 1));
    EXPECT_EQ(rep->sent_ns, 123456789u);
    EXPECT_EQ(rep->state, from_wire(self_.self));
    EXPECT_FALSE(rep->state.agent_stale);
    // One truth: the kernel's reply is byte for byte the user-space responder's.
    const MsgBytes expect = make_reply(req, self_.self, kKey, rep->reply_ns, self_.alive_until_ns);
    EXPECT_TRUE(std::equal(expect.begin(), expect.end(), payload_of(out.frame).begin()));

    const ha_counters c = counters();
    EXPECT_EQ(c.rx_request, 1u);
    EXPECT_EQ(c.tx_stale, 0u);
    auto seen = resp_->last_request();
    ASSERT_TRUE(seen && seen->has_value());
    EXPECT_EQ((*seen)->last_seq, make_seq(1, 1));
    EXPECT_EQ((*seen)->peer_sent_ns, 123456789u);
    EXPECT_EQ((*seen)->state.state, 3);
    EXPECT_EQ((*seen)->state.term, 6u);
    EXPECT_EQ((*seen)->state.model, "FCM630A");
    EXPECT_EQ((*seen)->src_ip4_be, kPeerIp);
}

TEST_F(XdpProg, OtherPortPassesUntouched) {
    const Bytes in = FrameBuilder()
                         .eth(kPeerMac, kOurMac)
                         .ipv4(kPeerIp, kOurIp)
                         .udp(40000, 5060)
                         .payload(request(make_seq(1, 1)))
                         .build();
    const TestRunResult out = run(in);
    EXPECT_EQ(out.verdict, XDP_PASS);
    EXPECT_EQ(out.frame, in);
    EXPECT_EQ(counters().rx_request, 0u);
}

TEST_F(XdpProg, NonIpv4Passes) {
    Bytes in = frame(request(make_seq(1, 1)));
    in[12] = 0x86;  // ethertype IPv6
    in[13] = 0xdd;
    EXPECT_EQ(run(in).verdict, XDP_PASS);
}

TEST_F(XdpProg, WrongSourceMacDropped) {
    const Mac other{0x02, 0x00, 0x5e, 0x00, 0x00, 0x09};
    EXPECT_EQ(run(frame(request(make_seq(1, 1)), other)).verdict, XDP_DROP);
    EXPECT_EQ(counters().drop_peer_mac, 1u);
    EXPECT_EQ(counters().rx_request, 0u);
}

TEST_F(XdpProg, AnySourceMacAcceptedWhenPeerMacUnset) {
    ASSERT_TRUE(resp_->set_peer_mac(std::nullopt));
    const Mac other{0x02, 0x00, 0x5e, 0x00, 0x00, 0x09};
    EXPECT_EQ(run(frame(request(make_seq(1, 1)), other)).verdict, XDP_TX);
}

TEST_F(XdpProg, BadMacDropped) {
    MsgBytes req = request(make_seq(1, 1));
    req[HA_MSG_MAC_OFF] ^= 0x01;
    EXPECT_EQ(run(frame(req)).verdict, XDP_DROP);
    const MsgBytes other_key = build_request(node(2, 3, 6), Key{1, 2}, make_seq(1, 2), 1);
    EXPECT_EQ(run(frame(other_key)).verdict, XDP_DROP);
    EXPECT_EQ(counters().drop_bad_mac, 2u);
}

TEST_F(XdpProg, TruncatedDropped) {
    const MsgBytes req = request(make_seq(1, 1));
    Bytes cut = frame(req);
    cut.resize(cut.size() - 10);  // headers claim the full length
    EXPECT_EQ(run(cut).verdict, XDP_DROP);
    const Bytes short_payload = frame(std::span(req).first(kMsgSize - 8));
    EXPECT_EQ(run(short_payload).verdict, XDP_DROP);
    EXPECT_EQ(counters().drop_short, 2u);
}

TEST_F(XdpProg, IpOptionsDropped) {
    const Bytes in = FrameBuilder()
                         .eth(kPeerMac, kOurMac)
                         .ipv4(kPeerIp, kOurIp)
                         .ip_options(1)
                         .udp(40000, 9527)
                         .payload(request(make_seq(1, 1)))
                         .build();
    EXPECT_EQ(run(in).verdict, XDP_DROP);
    EXPECT_EQ(counters().drop_ip_opts, 1u);
}

TEST_F(XdpProg, FragmentDropped) {
    const Bytes first = FrameBuilder()
                            .eth(kPeerMac, kOurMac)
                            .ipv4(kPeerIp, kOurIp)
                            .frag(0x2000)
                            .udp(40000, 9527)
                            .payload(request(make_seq(1, 1)))
                            .build();
    EXPECT_EQ(run(first).verdict, XDP_DROP);
    EXPECT_EQ(counters().drop_frag, 1u);
    // A later fragment carries no UDP header: the stack reassembles (and drops) it, not us.
    const Bytes later = FrameBuilder()
                            .eth(kPeerMac, kOurMac)
                            .ipv4(kPeerIp, kOurIp)
                            .frag(0x0010)
                            .udp(40000, 9527)
                            .payload(request(make_seq(1, 1)))
                            .build();
    EXPECT_EQ(run(later).verdict, XDP_PASS);
}

TEST_F(XdpProg, WrongWireVersionDropped) {
    ha_hb_msg msg{};
    const MsgBytes good = request(make_seq(1, 1));
    std::memcpy(&msg, good.data(), sizeof(msg));
    msg.wire_version = HA_WIRE_VERSION + 1;
    msg.mac = compute_mac(kKey, msg);  // correctly signed, still refused
    MsgBytes bad{};
    std::memcpy(bad.data(), &msg, sizeof(msg));
    EXPECT_EQ(run(frame(bad)).verdict, XDP_DROP);
    EXPECT_EQ(counters().drop_version, 1u);
}

TEST_F(XdpProg, ReplayedSequenceDropped) {
    EXPECT_EQ(run(frame(request(make_seq(2, 5)))).verdict, XDP_TX);
    EXPECT_EQ(run(frame(request(make_seq(2, 5)))).verdict, XDP_DROP);
    EXPECT_EQ(run(frame(request(make_seq(2, 4)))).verdict, XDP_DROP);
    EXPECT_EQ(run(frame(request(make_seq(1, 99)))).verdict, XDP_DROP);  // older epoch
    EXPECT_EQ(run(frame(request(make_seq(2, 6)))).verdict, XDP_TX);
    EXPECT_EQ(run(frame(request(make_seq(3, 0)))).verdict, XDP_TX);  // agent restarted
    const ha_counters c = counters();
    EXPECT_EQ(c.drop_replay, 3u);
    EXPECT_EQ(c.rx_request, 3u);
}

TEST_F(XdpProg, NoKeyDropsEverything) {
    ResponderOptions o;
    o.ifname = "nokey";
    o.key_set = false;
    auto r = Responder::create(o);
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_TRUE(r->set_state(self_));
    auto out = r->run_once(frame(request(make_seq(1, 1))));
    ASSERT_TRUE(out);
    EXPECT_EQ(out->verdict, XDP_DROP);
    EXPECT_EQ(r->counters()->drop_no_key, 1u);
}

TEST_F(XdpProg, StaleTickMarksReplyStale) {
    self_.alive_until_ns = mono_ns() - 1;
    ASSERT_TRUE(resp_->set_state(self_));
    const MsgBytes req = request(make_seq(1, 1));
    const TestRunResult out = run(frame(req));
    ASSERT_EQ(out.verdict, XDP_TX);
    auto rep = parse_message(payload_of(out.frame), kKey);
    ASSERT_TRUE(rep) << rep.error().message();
    EXPECT_TRUE(rep->state.agent_stale);
    EXPECT_FALSE(rep->state.healthy) << "the kernel must not claim health for a stale agent";
    EXPECT_EQ(rep->state.term, 7u);
    const MsgBytes expect = make_reply(req, self_.self, kKey, rep->reply_ns, self_.alive_until_ns);
    EXPECT_TRUE(std::equal(expect.begin(), expect.end(), payload_of(out.frame).begin()));
    EXPECT_EQ(counters().tx_stale, 1u);
}

TEST_F(XdpProg, RepliesPassToTheAgent) {
    const MsgBytes rep = make_reply(request(make_seq(1, 1)), node(2, 3, 6), kKey, 5, 10);
    const Bytes in = frame(rep);
    const TestRunResult out = run(in);
    EXPECT_EQ(out.verdict, XDP_PASS);
    EXPECT_EQ(out.frame, in);
    EXPECT_EQ(counters().pass_reply, 1u);
}

TEST_F(XdpProg, HeartbeatNicDoesNotFence) {
    self_.alive_until_ns = 0;
    ASSERT_TRUE(resp_->set_state(self_));
    const Bytes arp = FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp);
    EXPECT_EQ(run(arp).verdict, XDP_PASS);
}

TEST_F(XdpLanProg, FenceMessageDropsClusterIpTraffic) {
    const Bytes arp_vip = FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp);
    const Bytes arp_other = FrameBuilder::arp(kPeerMac, kPeerIp, kOurIp);
    const Bytes ip_vip = FrameBuilder()
                             .eth(kPeerMac, kOurMac)
                             .ipv4(kPeerIp, kClusterIp)
                             .udp(40000, 5060)
                             .payload(std::vector<std::uint8_t>(20, 0))
                             .build();
    EXPECT_EQ(run(arp_vip).verdict, XDP_PASS) << "agent fresh, not fenced";
    EXPECT_EQ(run(ip_vip).verdict, XDP_PASS);

    const MsgBytes fence = build_control(HA_CTRL_FENCE, node(2, 2, 8), kKey, make_seq(1, 1), 9, 7);
    EXPECT_EQ(run(frame(fence)).verdict, XDP_PASS) << "the agent's socket must see it too";
    ASSERT_TRUE(resp_->fenced().value_or(false));
    EXPECT_EQ(run(arp_vip).verdict, XDP_DROP);
    EXPECT_EQ(run(FrameBuilder::arp(kOurMac, kClusterIp, kPeerIp, 2)).verdict, XDP_DROP)
        << "our own stale ARP about the VIP";
    EXPECT_EQ(run(ip_vip).verdict, XDP_DROP);
    EXPECT_EQ(run(arp_other).verdict, XDP_PASS);
    ha_counters c = counters();
    EXPECT_EQ(c.rx_fence, 1u);
    EXPECT_EQ(c.fence_arp, 2u);
    EXPECT_EQ(c.fence_ip4, 1u);
    auto seen = resp_->last_request();
    ASSERT_TRUE(seen && seen->has_value());
    EXPECT_EQ((*seen)->last_control, HA_CTRL_FENCE);

    ASSERT_TRUE(resp_->set_fence(false));
    EXPECT_EQ(run(arp_vip).verdict, XDP_PASS);
}

TEST_F(XdpLanProg, NothingLeavesFromTheClusterIpWhileFenced) {
    // tc egress: a fenced box's kernel and PBX must not speak for the cluster IP any more.
    const Bytes garp = FrameBuilder::arp(kOurMac, kClusterIp, kClusterIp);
    const Bytes sip_from_vip = FrameBuilder()
                                   .eth(kOurMac, kPeerMac)
                                   .ipv4(kClusterIp, kPeerIp)
                                   .udp(5060, 5060)
                                   .payload(std::vector<std::uint8_t>(20, 0))
                                   .build();
    const Bytes arp_from_own_ip = FrameBuilder::arp(kOurMac, kOurIp, kPeerIp);
    auto verdict = [&](const Bytes& f) {
        auto r = resp_->run_tc_once(f);
        EXPECT_TRUE(r) << r.error().message();
        return r.value_or(0xffffffffu);
    };
    EXPECT_EQ(verdict(garp), static_cast<std::uint32_t>(TC_ACT_OK)) << "serving: announce away";
    EXPECT_EQ(verdict(sip_from_vip), static_cast<std::uint32_t>(TC_ACT_OK));
    const MsgBytes fence = build_control(HA_CTRL_FENCE, node(2, 2, 8), kKey, make_seq(1, 1), 9, 7);
    ASSERT_EQ(run(frame(fence)).verdict, XDP_PASS);
    EXPECT_EQ(verdict(garp), static_cast<std::uint32_t>(TC_ACT_SHOT));
    EXPECT_EQ(verdict(sip_from_vip), static_cast<std::uint32_t>(TC_ACT_SHOT));
    EXPECT_EQ(verdict(arp_from_own_ip), static_cast<std::uint32_t>(TC_ACT_OK))
        << "the box's own address still works";
    EXPECT_EQ(counters().fence_tx, 2u);
}

TEST_F(XdpLanAgentSock, NothingLeavesFromTheClusterIpOnceTheAgentIsGone) {
    const Bytes garp = FrameBuilder::arp(kOurMac, kClusterIp, kClusterIp);
    EXPECT_EQ(resp_->run_tc_once(garp).value_or(0xff), static_cast<std::uint32_t>(TC_ACT_OK));
    sock_.reset();
    EXPECT_EQ(resp_->run_tc_once(garp).value_or(0xff), static_cast<std::uint32_t>(TC_ACT_SHOT));
}

TEST_F(XdpLanProg, FenceAimedAtAnOlderTermIgnored) {
    // Our published term is 7: a Fence for term 6 was sent before we were promoted again.
    const MsgBytes stale = build_control(HA_CTRL_FENCE, node(2, 3, 6), kKey, make_seq(1, 1), 9, 6);
    EXPECT_EQ(run(frame(stale)).verdict, XDP_PASS) << "the agent still sees it (and ignores it)";
    EXPECT_FALSE(resp_->fenced().value_or(true));
    EXPECT_EQ(run(FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp)).verdict, XDP_PASS);
}

TEST_F(XdpLanProg, ForgedFenceIgnored) {
    MsgBytes fence = build_control(HA_CTRL_FENCE, node(2, 2, 8), Key{9, 9}, make_seq(1, 1), 9, 7);
    EXPECT_EQ(run(frame(fence)).verdict, XDP_DROP);
    EXPECT_FALSE(resp_->fenced().value_or(true));
    EXPECT_EQ(run(FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp)).verdict, XDP_PASS);
}

TEST_F(XdpLanProg, StaleTickDropsClusterIpArp) {
    self_.alive_until_ns = mono_ns() - 1;
    ASSERT_TRUE(resp_->set_state(self_));
    EXPECT_EQ(run(FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp)).verdict, XDP_DROP);
    EXPECT_EQ(run(FrameBuilder::arp(kPeerMac, kPeerIp, kOurIp)).verdict, XDP_PASS);
    EXPECT_EQ(counters().fence_arp, 1u);
    // Heartbeats to the box's own LAN address are still answered (marked stale).
    EXPECT_EQ(run(frame(request(make_seq(1, 1)))).verdict, XDP_TX);
    // The agent vouches again: fencing lifts.
    self_.alive_until_ns = mono_ns() + 60'000'000'000ULL;
    ASSERT_TRUE(resp_->set_state(self_));
    EXPECT_EQ(run(FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp)).verdict, XDP_PASS);
}

TEST_F(XdpAgentSock, RepliesSayGoneOnceTheAgentSocketCloses) {
    TestRunResult out = run(frame(request(make_seq(1, 1))));
    ASSERT_EQ(out.verdict, XDP_TX);
    auto rep = parse_message(payload_of(out.frame), kKey);
    ASSERT_TRUE(rep) << rep.error().message();
    EXPECT_FALSE(rep->state.agent_gone) << "the agent's socket is open";
    EXPECT_FALSE(rep->state.agent_stale);

    sock_.reset();  // what the kernel does when the agent is killed
    out = run(frame(request(make_seq(1, 2))));
    ASSERT_EQ(out.verdict, XDP_TX) << "a box whose agent died still answers: it is not gone";
    rep = parse_message(payload_of(out.frame), kKey);
    ASSERT_TRUE(rep) << rep.error().message();
    EXPECT_TRUE(rep->state.agent_gone);
    EXPECT_TRUE(rep->state.agent_stale) << "gone implies stale for peers that only know stale";
    EXPECT_FALSE(rep->state.healthy);
    EXPECT_TRUE(test::udp_checksum_ok(out.frame));
    const ha_counters c = counters();
    EXPECT_EQ(c.tx_gone, 1u);
    EXPECT_EQ(c.tx_stale, 1u);
}

TEST_F(XdpLanAgentSock, ClusterIpFencedOnceTheAgentSocketCloses) {
    const Bytes arp_vip = FrameBuilder::arp(kPeerMac, kPeerIp, kClusterIp);
    const Bytes arp_other = FrameBuilder::arp(kPeerMac, kPeerIp, kOurIp);
    EXPECT_EQ(run(arp_vip).verdict, XDP_PASS) << "agent alive and fresh";
    sock_.reset();
    EXPECT_EQ(run(arp_vip).verdict, XDP_DROP) << "a dead agent's box must not answer for the VIP";
    EXPECT_EQ(run(arp_other).verdict, XDP_PASS);
    EXPECT_EQ(counters().fence_arp, 1u);
    EXPECT_FALSE(resp_->fenced().value_or(true)) << "no fence flag: the socket check alone";
}

}  // namespace
}  // namespace ha::bpf
