// Unit tests for the pure rtnetlink builders and parsers: exact bytes, no socket.
#include "netlink/rtnl_msg.hpp"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/rtnetlink.h>

#include <array>
#include <cstring>
#include <vector>

namespace ha::nl {
namespace {

// Netlink is host-endian; these append integers the way the kernel reads them on this host.
struct Bytes {
    std::vector<std::uint8_t> v;
    Bytes& u8(std::uint8_t x) {
        v.push_back(x);
        return *this;
    }
    Bytes& u16(std::uint16_t x) { return raw(&x, 2); }
    Bytes& u32(std::uint32_t x) { return raw(&x, 4); }
    Bytes& raw(const void* p, std::size_t n) {
        const auto* b = static_cast<const std::uint8_t*>(p);
        v.insert(v.end(), b, b + n);
        return *this;
    }
    Bytes& bytes(std::initializer_list<std::uint8_t> b) {
        v.insert(v.end(), b);
        return *this;
    }
    Bytes& nlhdr(std::uint32_t len, std::uint16_t type, std::uint16_t flags, std::uint32_t seq) {
        return u32(len).u16(type).u16(flags).u32(seq).u32(0);
    }
    Bytes& attr(std::uint16_t type, std::uint16_t len) { return u16(len).u16(type); }
};

IpPrefix prefix(const char* text) {
    return *IpPrefix::parse(text);
}

std::vector<std::uint8_t> built(Result<std::size_t> len, const std::array<std::uint8_t, 256>& buf) {
    EXPECT_TRUE(len.has_value()) << (len ? "" : len.error().message());
    if (!len) return {};
    return {buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*len)};
}

TEST(RtnlMsg, AddIpv4Address) {
    std::array<std::uint8_t, 256> buf{};
    auto got = built(build_addr_request(buf, AddrOp::Add, 4, prefix("198.18.0.100/24"), 77), buf);
    Bytes want;
    want.nlhdr(48, RTM_NEWADDR, 0x605, 77)  // REQUEST|ACK|EXCL|CREATE
        .bytes({AF_INET, 24, 0, RT_SCOPE_UNIVERSE})
        .u32(4)
        .attr(IFA_LOCAL, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_ADDRESS, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_FLAGS, 8)
        .u32(0);
    EXPECT_EQ(got, want.v);
}

TEST(RtnlMsg, RenewWithALifetimeReplacesAndCarriesCacheinfo) {
    std::array<std::uint8_t, 256> buf{};
    auto got = built(
        build_addr_request(buf, AddrOp::Renew, 4, prefix("198.18.0.100/24"), 78, {}, 21), buf);
    Bytes want;
    want.nlhdr(68, RTM_NEWADDR, 0x505, 78)  // REQUEST|ACK|CREATE|REPLACE, no EXCL
        .bytes({AF_INET, 24, 0, RT_SCOPE_UNIVERSE})
        .u32(4)
        .attr(IFA_LOCAL, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_ADDRESS, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_FLAGS, 8)
        .u32(0)
        .attr(IFA_CACHEINFO, 20)
        .u32(21)  // ifa_prefered
        .u32(21)  // ifa_valid
        .u32(0)
        .u32(0);
    EXPECT_EQ(got, want.v);
}

TEST(RtnlMsg, AddIpv6AddressWithNodad) {
    std::array<std::uint8_t, 256> buf{};
    auto got = built(build_addr_request(buf, AddrOp::Add, 9, prefix("fd00:4a::100/64"), 1), buf);
    const std::initializer_list<std::uint8_t> a{0xfd, 0, 0, 0x4a, 0, 0, 0, 0,
                                                0,    0, 0, 0,    0, 0, 1, 0};
    Bytes want;
    want.nlhdr(72, RTM_NEWADDR, 0x605, 1)
        .bytes({AF_INET6, 64, IFA_F_NODAD, RT_SCOPE_UNIVERSE})
        .u32(9)
        .attr(IFA_LOCAL, 20)
        .bytes(a)
        .attr(IFA_ADDRESS, 20)
        .bytes(a)
        .attr(IFA_FLAGS, 8)
        .u32(IFA_F_NODAD);
    EXPECT_EQ(got, want.v);
}

TEST(RtnlMsg, RemoveIpv4AddressCarriesNoCreateFlags) {
    std::array<std::uint8_t, 256> buf{};
    auto got =
        built(build_addr_request(buf, AddrOp::Remove, 4, prefix("198.18.0.100/24"), 78), buf);
    Bytes want;
    want.nlhdr(40, RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, 78)
        .bytes({AF_INET, 24, 0, RT_SCOPE_UNIVERSE})
        .u32(4)
        .attr(IFA_LOCAL, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_ADDRESS, 8)
        .bytes({198, 18, 0, 100});
    EXPECT_EQ(got, want.v);
}

TEST(RtnlMsg, Ipv4LabelIsNulTerminatedAndPadded) {
    std::array<std::uint8_t, 256> buf{};
    auto got = built(
        build_addr_request(buf, AddrOp::Add, 4, prefix("198.18.0.100/24"), 5, "veth0:ha"), buf);
    Bytes want;
    want.nlhdr(64, RTM_NEWADDR, 0x605, 5)
        .bytes({AF_INET, 24, 0, RT_SCOPE_UNIVERSE})
        .u32(4)
        .attr(IFA_LOCAL, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_ADDRESS, 8)
        .bytes({198, 18, 0, 100})
        .attr(IFA_FLAGS, 8)
        .u32(0)
        .attr(IFA_LABEL, 13)
        .bytes({'v', 'e', 't', 'h', '0', ':', 'h', 'a', 0, 0, 0, 0});
    EXPECT_EQ(got, want.v);
}

TEST(RtnlMsg, LinkDump) {
    std::array<std::uint8_t, 256> buf{};
    auto got = built(build_link_dump(buf, 3), buf);
    Bytes want;
    want.nlhdr(32, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 3);
    want.v.resize(32, 0);  // ifinfomsg, all zero: AF_UNSPEC, every link
    EXPECT_EQ(got, want.v);
}

TEST(RtnlMsg, AddressDumpPerFamily) {
    std::array<std::uint8_t, 256> buf{};
    for (auto [family, af] : {std::pair{0, AF_UNSPEC}, {4, AF_INET}, {6, AF_INET6}}) {
        auto got = built(build_addr_dump(buf, 9, static_cast<std::uint8_t>(family)), buf);
        Bytes want;
        want.nlhdr(24, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 9)
            .bytes({static_cast<std::uint8_t>(af), 0, 0, 0})
            .u32(0);
        EXPECT_EQ(got, want.v) << "family " << family;
    }
}

TEST(RtnlMsg, RejectsBadInputNamingIt) {
    std::array<std::uint8_t, 256> buf{};
    std::array<std::uint8_t, 30> small{};
    auto p = prefix("198.18.0.100/24");
    auto e1 = build_addr_request(small, AddrOp::Add, 4, p, 1);
    ASSERT_FALSE(e1);
    EXPECT_EQ(e1.error().code, std::errc::no_buffer_space);
    auto e2 = build_addr_request(buf, AddrOp::Add, 0, p, 1);
    ASSERT_FALSE(e2);
    EXPECT_NE(e2.error().message().find("ifindex 0"), std::string::npos);
    auto e3 = build_addr_request(buf, AddrOp::Add, 4, prefix("fd00:4a::1/64"), 1, "veth0:ha");
    ASSERT_FALSE(e3);
    EXPECT_NE(e3.error().message().find("veth0:ha"), std::string::npos);
    EXPECT_FALSE(build_addr_request(buf, AddrOp::Add, 4, IpPrefix{}, 1));
    EXPECT_FALSE(build_addr_dump(buf, 1, 5));
    EXPECT_FALSE(build_link_dump(std::span<std::uint8_t>(small.data(), 16), 1));
}

TEST(RtnlMsg, ParsesAddressMessages) {
    std::array<std::uint8_t, 256> buf{};
    for (const char* text : {"198.18.0.100/24", "fd00:4a::100/64"}) {
        ASSERT_TRUE(build_addr_request(buf, AddrOp::Add, 7, prefix(text), 1));
        auto a = parse_addr(reinterpret_cast<const nlmsghdr*>(buf.data()));
        ASSERT_TRUE(a) << text;
        EXPECT_EQ(a->ifindex, 7);
        EXPECT_EQ(a->prefix, prefix(text));
        EXPECT_FALSE(a->removed);
        ASSERT_TRUE(build_addr_request(buf, AddrOp::Remove, 7, prefix(text), 2));
        a = parse_addr(reinterpret_cast<const nlmsghdr*>(buf.data()));
        ASSERT_TRUE(a);
        EXPECT_TRUE(a->removed);
    }
    // A link message is not an address.
    ASSERT_TRUE(build_link_dump(buf, 1));
    EXPECT_FALSE(parse_addr(reinterpret_cast<const nlmsghdr*>(buf.data())));
}

TEST(RtnlMsg, ParsesLinkMessage) {
    std::array<std::uint8_t, 256> buf{};
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = RTM_NEWLINK;
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_index = 12;
    ifi->ifi_type = ARPHRD_ETHER;
    ifi->ifi_flags = IFF_UP;  // admin up, no carrier
    mnl_attr_put_strz(nlh, IFLA_IFNAME, "lan0");
    mnl_attr_put_u8(nlh, IFLA_OPERSTATE, IF_OPER_LOWERLAYERDOWN);
    const std::uint8_t mac[6] = {2, 0, 0x5e, 0x10, 0, 1};
    mnl_attr_put(nlh, IFLA_ADDRESS, 6, mac);
    auto l = parse_link(nlh);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->ifindex, 12);
    EXPECT_EQ(l->name, "lan0");
    EXPECT_TRUE(l->admin_up);
    EXPECT_FALSE(l->carrier);
    EXPECT_FALSE(l->running());
    EXPECT_EQ(l->operstate, IF_OPER_LOWERLAYERDOWN);
    EXPECT_EQ(l->mac.to_string(), "02:00:5e:10:00:01");

    ifi->ifi_flags = IFF_UP | IFF_LOWER_UP;
    nlh->nlmsg_type = RTM_DELLINK;
    l = parse_link(nlh);
    ASSERT_TRUE(l);
    EXPECT_TRUE(l->running());
    EXPECT_TRUE(l->removed);

    // Truncated: the header claims less than an ifinfomsg.
    nlh->nlmsg_len = sizeof(nlmsghdr) + 4;
    EXPECT_FALSE(parse_link(nlh));
}

}  // namespace
}  // namespace ha::nl
