// Unit tests for the ARP/ND frame builders (exact bytes) and the claim classifier. No socket.
#include "netlink/frames.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace ha::nl {
namespace {

const MacAddr kOurs = *MacAddr::parse("02:00:5e:10:00:01");
const MacAddr kTheirs = *MacAddr::parse("02:00:5e:10:00:02");
const IpAddr kIp4 = *IpAddr::parse("198.18.0.100");
const IpAddr kIp6 = *IpAddr::parse("fd00:4a::100");

using Frame = std::vector<std::uint8_t>;

Frame take(Result<std::size_t> len, const std::array<std::uint8_t, kMaxFrameLen>& buf) {
    EXPECT_TRUE(len.has_value()) << (len ? "" : len.error().message());
    if (!len) return {};
    return {buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*len)};
}

Frame cat(std::initializer_list<std::initializer_list<std::uint8_t>> parts) {
    Frame f;
    for (auto p : parts) f.insert(f.end(), p);
    return f;
}

constexpr std::initializer_list<std::uint8_t> kBcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr std::initializer_list<std::uint8_t> kOurMac{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01};
constexpr std::initializer_list<std::uint8_t> kArpHead{0x00, 0x01, 0x08, 0x00, 6, 4};
constexpr std::initializer_list<std::uint8_t> kIp6Bytes{0xfd, 0, 0, 0x4a, 0, 0, 0, 0,
                                                        0,    0, 0, 0,    0, 0, 1, 0};

TEST(Frames, GratuitousArpIsRfc5227Announcement) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto f = take(build_garp(buf, kOurs, kIp4), buf);
    EXPECT_EQ(f, cat({kBcast,
                      kOurMac,
                      {0x08, 0x06},
                      kArpHead,
                      {0x00, 0x01},
                      kOurMac,
                      {198, 18, 0, 100},
                      {0, 0, 0, 0, 0, 0},
                      {198, 18, 0, 100}}));
}

TEST(Frames, ArpProbeHasZeroSender) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto f = take(build_arp_probe(buf, kOurs, kIp4), buf);
    EXPECT_EQ(f, cat({kBcast,
                      kOurMac,
                      {0x08, 0x06},
                      kArpHead,
                      {0x00, 0x01},
                      kOurMac,
                      {0, 0, 0, 0},
                      {0, 0, 0, 0, 0, 0},
                      {198, 18, 0, 100}}));
}

TEST(Frames, ArpRequestCarriesSender) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto f = take(build_arp_request(buf, kOurs, *IpAddr::parse("198.18.0.7"), kIp4), buf);
    EXPECT_EQ(f, cat({kBcast,
                      kOurMac,
                      {0x08, 0x06},
                      kArpHead,
                      {0x00, 0x01},
                      kOurMac,
                      {198, 18, 0, 7},
                      {0, 0, 0, 0, 0, 0},
                      {198, 18, 0, 100}}));
}

TEST(Frames, UnsolicitedNeighborAdvertisement) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto f = take(build_unsolicited_na(buf, kOurs, kIp6), buf);
    // Checksum 0xf9f8 computed independently (Python, RFC 8200 §8.1 pseudo-header).
    EXPECT_EQ(f, cat({{0x33, 0x33, 0, 0, 0, 1},
                      kOurMac,
                      {0x86, 0xdd},
                      {0x60, 0, 0, 0, 0, 32, 58, 255},
                      kIp6Bytes,
                      {0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
                      {136, 0, 0xf9, 0xf8, 0x20, 0, 0, 0},
                      kIp6Bytes,
                      {2, 1},
                      kOurMac}));
}

TEST(Frames, DadNeighborSolicitation) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    auto f = take(build_dad_ns(buf, kOurs, kIp6), buf);
    EXPECT_EQ(f, cat({{0x33, 0x33, 0xff, 0, 1, 0},
                      kOurMac,
                      {0x86, 0xdd},
                      {0x60, 0, 0, 0, 0, 24, 58, 255},
                      {0, 0, 0, 0, 0, 0, 0, 0},
                      {0, 0, 0, 0, 0, 0, 0, 0},
                      {0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 1, 0},
                      {135, 0, 0x7b, 0x5d, 0, 0, 0, 0},
                      kIp6Bytes}));
}

TEST(Frames, BuildersRejectWrongFamilyAndShortBuffer) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    std::array<std::uint8_t, 41> small{};
    auto e = build_garp(buf, kOurs, kIp6);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message().find("fd00:4a::100"), std::string::npos);
    EXPECT_FALSE(build_arp_probe(small, kOurs, kIp4));
    EXPECT_FALSE(build_unsolicited_na(buf, kOurs, kIp4));
    EXPECT_FALSE(build_dad_ns(std::span<std::uint8_t>(buf.data(), 77), kOurs, kIp6));
    EXPECT_FALSE(build_arp_request(buf, kOurs, kIp6, kIp4));
}

TEST(Frames, SolicitedNodeMulticast) {
    EXPECT_EQ(solicited_node_multicast(*IpAddr::parse("fd00:4a::12:3456")).to_string(),
              "ff02::1:ff12:3456");
}

// An ARP frame from `mac` with the given fields, as another host would send it.
Frame arp(std::uint16_t op, const MacAddr& mac, std::initializer_list<std::uint8_t> spa,
          std::initializer_list<std::uint8_t> tpa) {
    Frame f = cat({kBcast});
    f.insert(f.end(), mac.bytes.begin(), mac.bytes.end());
    f.insert(f.end(), {0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0, static_cast<std::uint8_t>(op)});
    f.insert(f.end(), mac.bytes.begin(), mac.bytes.end());
    f.insert(f.end(), spa);
    f.insert(f.end(), {0, 0, 0, 0, 0, 0});
    f.insert(f.end(), tpa);
    return f;
}

TEST(ArpClassifier, ReplyFromAnotherMacIsConflict) {
    auto c = classify_frame(arp(2, kTheirs, {198, 18, 0, 100}, {198, 18, 0, 1}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->kind, ClaimKind::ArpReply);
    EXPECT_EQ(c->ip, kIp4);
    EXPECT_EQ(c->mac, kTheirs);
    EXPECT_TRUE(is_conflict(*c, kIp4, kOurs));
    EXPECT_FALSE(is_conflict(*c, *IpAddr::parse("198.18.0.101"), kOurs));
}

TEST(ArpClassifier, SimultaneousProbeIsConflict) {
    // RFC 5227 §2.1.1: another host probing the same address at the same time.
    auto c = classify_frame(arp(1, kTheirs, {0, 0, 0, 0}, {198, 18, 0, 100}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->kind, ClaimKind::ArpProbe);
    EXPECT_TRUE(is_conflict(*c, kIp4, kOurs));
}

TEST(ArpClassifier, AnnouncementFromAnotherMacIsConflict) {
    auto c = classify_frame(arp(1, kTheirs, {198, 18, 0, 100}, {198, 18, 0, 100}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->kind, ClaimKind::ArpRequest);
    EXPECT_TRUE(is_conflict(*c, kIp4, kOurs));
}

TEST(ArpClassifier, OurOwnFramesAndOthersQuestionsAreNot) {
    auto own = classify_frame(arp(2, kOurs, {198, 18, 0, 100}, {198, 18, 0, 1}));
    ASSERT_TRUE(own);
    EXPECT_FALSE(is_conflict(*own, kIp4, kOurs));
    // A client asking for the cluster IP claims its own address, not ours.
    auto ask = classify_frame(arp(1, kTheirs, {198, 18, 0, 7}, {198, 18, 0, 100}));
    ASSERT_TRUE(ask);
    EXPECT_EQ(ask->ip, *IpAddr::parse("198.18.0.7"));
    EXPECT_FALSE(is_conflict(*ask, kIp4, kOurs));
}

TEST(ArpClassifier, RejectsMalformed) {
    Frame f = arp(2, kTheirs, {198, 18, 0, 100}, {198, 18, 0, 1});
    EXPECT_FALSE(classify_frame(Frame(f.begin(), f.end() - 1)));  // truncated
    Frame bad_hlen = f;
    bad_hlen[18] = 8;
    EXPECT_FALSE(classify_frame(bad_hlen));
    Frame bad_op = f;
    bad_op[21] = 3;  // RARP request
    EXPECT_FALSE(classify_frame(bad_op));
    Frame ipv4 = f;
    ipv4[13] = 0x00;  // ethertype 0x0800
    EXPECT_FALSE(classify_frame(ipv4));
    EXPECT_FALSE(classify_frame(arp(2, kTheirs, {0, 0, 0, 0}, {198, 18, 0, 1})));
    EXPECT_FALSE(classify_frame(Frame{}));
}

Frame from_other(Result<std::size_t> len, std::array<std::uint8_t, kMaxFrameLen>& buf) {
    return take(std::move(len), buf);
}

TEST(NdClassifier, NeighborAdvertisementUsesTargetLinkLayerOption) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    Frame f = from_other(build_unsolicited_na(buf, kTheirs, kIp6), buf);
    auto c = classify_frame(f);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->kind, ClaimKind::NeighborAdvert);
    EXPECT_EQ(c->ip, kIp6);
    EXPECT_EQ(c->mac, kTheirs);
    EXPECT_TRUE(is_conflict(*c, kIp6, kOurs));
    EXPECT_FALSE(is_conflict(*c, kIp6, kTheirs));
}

TEST(NdClassifier, DadProbeFromAnotherMacIsConflict) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    Frame f = from_other(build_dad_ns(buf, kTheirs, kIp6), buf);
    auto c = classify_frame(f);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->kind, ClaimKind::DadProbe);
    EXPECT_TRUE(is_conflict(*c, kIp6, kOurs));
}

TEST(NdClassifier, RejectsBadChecksumHopLimitAndTruncation) {
    std::array<std::uint8_t, kMaxFrameLen> buf{};
    const Frame good = from_other(build_unsolicited_na(buf, kTheirs, kIp6), buf);
    Frame bad_sum = good;
    bad_sum[14 + 40 + 2] ^= 0x01;
    EXPECT_FALSE(classify_frame(bad_sum));
    Frame routed = good;
    routed[14 + 7] = 64;  // hop limit: a routed ND message is forged (RFC 4861 §7.1.2)
    EXPECT_FALSE(classify_frame(routed));
    EXPECT_FALSE(classify_frame(Frame(good.begin(), good.end() - 9)));
    Frame long_plen = good;
    long_plen[14 + 5] = 200;  // payload length beyond the frame
    EXPECT_FALSE(classify_frame(long_plen));
}

}  // namespace
}  // namespace ha::nl
