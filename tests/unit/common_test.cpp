// Covers common/: durations, IP/prefix/MAC parsing, key file parsing, SipHash-2-4 vectors.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>

#include "common/duration.hpp"
#include "common/keyfile.hpp"
#include "common/net_types.hpp"

namespace ha {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesEveryUnitOperatorsWrite) {
    const std::pair<std::string_view, std::chrono::nanoseconds> cases[] = {
        {"250ns", 250ns}, {"800us", 800us}, {"2ms", 2ms},     {"1.5s", 1500ms},
        {"7s", 7s},       {"1m", 60s},      {"0.5ms", 500us}, {"0s", 0ns}};
    for (const auto& [text, want] : cases) {
        auto d = parse_duration(text);
        ASSERT_TRUE(d) << text << ": " << d.error().message();
        EXPECT_EQ(*d, want) << text;
    }
}

TEST(Duration, RejectsMissingUnitAndGarbageNamingTheText) {
    for (std::string_view bad : {"5", "", "ms", "1.2.3s", "-1s", "5 s", "5h", ".s", "s5"}) {
        auto d = parse_duration(bad);
        ASSERT_FALSE(d) << bad;
        EXPECT_NE(d.error().message().find(std::string(bad)), std::string::npos)
            << d.error().message();
    }
}

TEST(Duration, FormatsShortestExactForm) {
    EXPECT_EQ(format_duration(7s), "7s");
    EXPECT_EQ(format_duration(1500ms), "1.5s");
    EXPECT_EQ(format_duration(800us), "800us");
    EXPECT_EQ(format_duration(2250us), "2.25ms");
    EXPECT_EQ(format_duration(250ns), "250ns");
}

TEST(Duration, FormatRoundTripsThroughParse) {
    const std::chrono::nanoseconds cases[] = {7s,        1500ms, 800us, 2ms,
                                              1234567ns, 50us,   10min, 999ns};
    for (auto ns : cases) {
        auto back = parse_duration(format_duration(ns));
        ASSERT_TRUE(back) << format_duration(ns);
        EXPECT_EQ(*back, ns) << format_duration(ns);
    }
}

TEST(NetIpAddr, ParsesBothFamiliesAndPrintsCanonically) {
    auto v4 = IpAddr::parse("198.18.0.10");
    ASSERT_TRUE(v4);
    EXPECT_TRUE(v4->is_v4());
    EXPECT_EQ(v4->to_string(), "198.18.0.10");
    EXPECT_EQ(v4->bytes[0], 198);
    EXPECT_EQ(v4->bytes[3], 10);
    auto v6 = IpAddr::parse("fd00:4a:0:0::10");
    ASSERT_TRUE(v6);
    EXPECT_TRUE(v6->is_v6());
    EXPECT_EQ(v6->to_string(), "fd00:4a::10");
}

TEST(NetIpAddr, RejectsMalformedAddressesNamingThem) {
    for (std::string_view bad : {"198.18.0.256", "", "fd00::4a::1", "198.18.0", "host"}) {
        auto a = IpAddr::parse(bad);
        ASSERT_FALSE(a) << bad;
        EXPECT_NE(a.error().message().find(std::string(bad)), std::string::npos);
    }
}

TEST(NetIpPrefix, BareAddressIsAHostPrefix) {
    auto v4 = IpPrefix::parse("198.18.1.100");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->len, 32);
    auto v6 = IpPrefix::parse("fd00:4a::100");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->len, 128);
    auto p = IpPrefix::parse("198.18.1.100/24");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->len, 24);
    EXPECT_EQ(p->to_string(), "198.18.1.100/24");
}

TEST(NetIpPrefix, RejectsBadPrefixLengths) {
    for (std::string_view bad : {"198.18.1.100/33", "198.18.1.100/0", "198.18.1.100/",
                                 "198.18.1.100/x", "198.18.1.100/24/1", "fd00:4a::1/129", "/24"}) {
        EXPECT_FALSE(IpPrefix::parse(bad)) << bad;
    }
    EXPECT_TRUE(IpPrefix::parse("fd00:4a::1/128"));
}

TEST(NetMacAddr, ParsesColonAndDashFormsInAnyCase) {
    auto a = MacAddr::parse("02:00:5e:10:00:01");
    auto b = MacAddr::parse("02-00-5E-10-00-01");
    ASSERT_TRUE(a);
    ASSERT_TRUE(b);
    EXPECT_EQ(*a, *b);
    EXPECT_EQ(b->to_string(), "02:00:5e:10:00:01");
    EXPECT_FALSE(a->is_zero());
    EXPECT_TRUE(MacAddr::parse("00:00:00:00:00:00")->is_zero());
}

TEST(NetMacAddr, RejectsMalformedAddresses) {
    for (std::string_view bad : {"02:00:5e:10:00", "02:00:5e:10:00:0g", "02.00.5e.10.00.01",
                                 "02:00:5e:10:00:011", "", "0200:5e:10:00:01"}) {
        auto m = MacAddr::parse(bad);
        ASSERT_FALSE(m) << bad;
        EXPECT_NE(m.error().message().find("not a MAC address"), std::string::npos);
    }
}

TEST(KeyFile, ParseKeyReadsLittleEndianHalvesIgnoringComments) {
    auto k = parse_key("# fcm-ha shared key\n  000102030405060708090a0b0c0d0e0f  \n# end\n");
    ASSERT_TRUE(k) << k.error().message();
    EXPECT_EQ(k->k0, 0x0706050403020100ULL);
    EXPECT_EQ(k->k1, 0x0f0e0d0c0b0a0908ULL);
    auto upper = parse_key("000102030405060708090A0B0C0D0E0F");
    ASSERT_TRUE(upper);
    EXPECT_EQ(*upper, *k);
}

TEST(KeyFile, ParseKeyRejectsWrongLengthAndNonHex) {
    auto short_key = parse_key("000102030405060708090a0b0c0d0e0");
    ASSERT_FALSE(short_key);
    EXPECT_NE(short_key.error().message().find("32 hex digits"), std::string::npos);
    EXPECT_FALSE(parse_key("000102030405060708090a0b0c0d0e0f00"));
    EXPECT_FALSE(parse_key("000102030405060708090a0b0c0d0e0z"));
    EXPECT_FALSE(parse_key(""));
}

// Reference vectors from the SipHash paper (Aumasson, Bernstein), Appendix A / vectors.h.
TEST(SipHash, MatchesReferenceVectors) {
    const Key key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    std::array<std::uint8_t, 15> msg{};
    for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::uint8_t>(i);
    EXPECT_EQ(siphash(key, msg.data(), msg.size()), 0xa129ca6149be45e5ULL);
    EXPECT_EQ(siphash(key, msg.data(), 0), 0x726fdb47dd0e0e31ULL);
    // Length 8 crosses a full block with an empty tail: vectors.h entry 8.
    EXPECT_EQ(siphash(key, msg.data(), 8), 0x93f5f5799a932462ULL);
}

TEST(SipHash, KeyParsedFromFileGivesReferenceResult) {
    auto key = parse_key("000102030405060708090a0b0c0d0e0f");
    ASSERT_TRUE(key);
    std::array<std::uint8_t, 15> msg{};
    for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::uint8_t>(i);
    EXPECT_EQ(siphash(*key, msg.data(), msg.size()), 0xa129ca6149be45e5ULL);
}

}  // namespace
}  // namespace ha
