// Wire helpers (no root): sign/verify round trips, refusal reasons, reply construction.
#include <gtest/gtest.h>

#include <cstring>

#include "wire_util.hpp"

namespace ha::bpf {
namespace {

const Key kKey{0x1111, 0x2222};

NodeState sample() {
    NodeState s;
    s.term = 42;
    s.station = HA_STATION_PRIMARY;
    s.state = 2;
    s.ha_enabled = true;
    s.healthy = true;
    s.synced = true;
    s.proto_version = 1;
    s.model = "FCM630A";
    s.version = "16-bytes-exactly";
    return s;
}

TEST(WireUtil, RequestRoundTrips) {
    const ha_node_state w = *to_wire(sample());
    const MsgBytes req = build_request(w, kKey, make_seq(7, 3), 99);
    auto m = parse_message(req, kKey);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->type, MsgType::Request);
    EXPECT_EQ(m->seq, (std::uint64_t{7} << 32) | 3);
    EXPECT_EQ(m->sent_ns, 99u);
    EXPECT_EQ(m->state, sample());
}

TEST(WireUtil, RefusesOverlongStrings) {
    NodeState s = sample();
    s.model = "a-model-name-longer-than-16";
    auto w = to_wire(s);
    ASSERT_FALSE(w);
    EXPECT_NE(w.error().message().find("a-model-name-longer-than-16"), std::string::npos);
}

TEST(WireUtil, RefusesBadInputWithReason) {
    const MsgBytes req = build_request(*to_wire(sample()), kKey, 1, 1);
    EXPECT_NE(parse_message(std::span(req).first(80), kKey).error().message().find("length 80"),
              std::string::npos);
    EXPECT_NE(parse_message(req, Key{1, 1}).error().message().find("MAC"), std::string::npos);
    MsgBytes bad = req;
    bad[4] = HA_WIRE_VERSION + 1;
    EXPECT_NE(parse_message(bad, kKey).error().message().find("wire version"), std::string::npos);
    bad = req;
    bad[0] ^= 0xff;
    EXPECT_NE(parse_message(bad, kKey).error().message().find("magic"), std::string::npos);
}

TEST(WireUtil, ControlCarriesCommand) {
    const MsgBytes c = build_control(HA_CTRL_TAKEOVER_NOW, *to_wire(sample()), kKey, 5, 6, 7);
    auto m = parse_message(c, kKey);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->type, MsgType::Control);
    EXPECT_EQ(m->control, HA_CTRL_TAKEOVER_NOW);
    EXPECT_EQ(m->target_term, 7u);
    EXPECT_EQ(m->reply_ns, 0u) << "a control has no reply time";
}

TEST(WireUtil, ReplyEchoesAndMarksStale) {
    const MsgBytes req = build_request(*to_wire(sample()), kKey, 77, 1000);
    NodeState me = sample();
    me.station = HA_STATION_SECONDARY;
    const ha_node_state w = *to_wire(me);
    auto fresh = parse_message(make_reply(req, w, kKey, 2000, 5000), kKey);
    ASSERT_TRUE(fresh);
    EXPECT_EQ(fresh->type, MsgType::Reply);
    EXPECT_EQ(fresh->seq, 77u);
    EXPECT_EQ(fresh->sent_ns, 1000u);
    EXPECT_EQ(fresh->reply_ns, 2000u);
    EXPECT_EQ(fresh->state, me);
    auto stale = parse_message(make_reply(req, w, kKey, 5001, 5000), kKey);
    ASSERT_TRUE(stale);
    EXPECT_TRUE(stale->state.agent_stale);
    EXPECT_FALSE(stale->state.healthy);
}

TEST(WireUtil, UserSpaceResponderChecksLikeTheKernel) {
    ha_agent_state me{};
    me.self = *to_wire(sample());
    me.alive_until_ns = 10'000;
    std::uint64_t window = 0;
    const MsgBytes req = build_request(*to_wire(sample()), kKey, make_seq(1, 2), 50);
    auto rep = answer_request(req, kKey, me, 9'000, window);
    ASSERT_TRUE(rep) << rep.error().message();
    EXPECT_EQ(*rep, make_reply(req, me.self, kKey, 9'000, 10'000));
    EXPECT_EQ(window, make_seq(1, 2));
    auto again = answer_request(req, kKey, me, 9'500, window);
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().message().find("replayed"), std::string::npos);
    EXPECT_FALSE(answer_request(req, Key{3, 3}, me, 9'500, window));
    const MsgBytes reply = make_reply(req, me.self, kKey, 1, 2);
    EXPECT_FALSE(answer_request(reply, kKey, me, 9'500, window));
    auto stale =
        answer_request(build_request(me.self, kKey, make_seq(1, 3), 1), kKey, me, 20'000, window);
    ASSERT_TRUE(stale);
    EXPECT_TRUE(parse_message(*stale, kKey)->state.agent_stale);
}

}  // namespace
}  // namespace ha::bpf
