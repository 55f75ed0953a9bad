// A small fluent builder for Ethernet / IPv4 / UDP / ARP test frames, and checksum checkers.
#pragma once

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace ha::test {

using Bytes = std::vector<std::uint8_t>;
using Mac = std::array<std::uint8_t, 6>;

// RFC 1071 ones' complement sum, folded but not inverted.
inline std::uint16_t ones_sum(std::span<const std::uint8_t> b, std::uint32_t seed = 0) {
    std::uint32_t sum = seed;
    for (std::size_t i = 0; i + 1 < b.size(); i += 2)
        sum += static_cast<std::uint32_t>(b[i] << 8 | b[i + 1]);
    if (b.size() % 2 != 0) sum += static_cast<std::uint32_t>(b.back() << 8);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(sum);
}

inline std::uint32_t ip4(const char* text) {
    in_addr a{};
    ::inet_pton(AF_INET, text, &a);
    return a.s_addr;  // network order
}

class FrameBuilder {
  public:
    FrameBuilder& eth(const Mac& src, const Mac& dst) {
        src_mac_ = src;
        dst_mac_ = dst;
        return *this;
    }
    FrameBuilder& ipv4(std::uint32_t saddr_be, std::uint32_t daddr_be) {
        saddr_ = saddr_be;
        daddr_ = daddr_be;
        return *this;
    }
    FrameBuilder& ip_options(std::size_t words) {
        opt_words_ = words;
        return *this;
    }
    // frag_off field value in host order: 0x2000 = MF, low 13 bits = offset in 8-byte units.
    FrameBuilder& frag(std::uint16_t frag_off) {
        frag_off_ = frag_off;
        return *this;
    }
    FrameBuilder& udp(std::uint16_t sport, std::uint16_t dport) {
        sport_ = sport;
        dport_ = dport;
        return *this;
    }
    FrameBuilder& payload(std::span<const std::uint8_t> p) {
        payload_.assign(p.begin(), p.end());
        return *this;
    }

    [[nodiscard]] Bytes build() const {
        Bytes f;
        put(f, dst_mac_);
        put(f, src_mac_);
        put16(f, 0x0800);
        const std::size_t ip_off = f.size();
        const std::size_t ihl = 5 + opt_words_;
        const std::size_t udp_len = 8 + payload_.size();
        f.push_back(static_cast<std::uint8_t>(0x40 | ihl));
        f.push_back(0);
        put16(f, static_cast<std::uint16_t>(ihl * 4 + udp_len));
        put16(f, 0x1234);
        put16(f, frag_off_);
        f.push_back(64);
        f.push_back(17);
        put16(f, 0);
        put_be32(f, saddr_);
        put_be32(f, daddr_);
        for (std::size_t i = 0; i < opt_words_; ++i)
            put(f, std::array<std::uint8_t, 4>{1, 1, 1, 0});
        const std::uint16_t ipsum =
            static_cast<std::uint16_t>(~ones_sum(std::span(f).subspan(ip_off, ihl * 4)));
        f[ip_off + 10] = static_cast<std::uint8_t>(ipsum >> 8);
        f[ip_off + 11] = static_cast<std::uint8_t>(ipsum);
        put16(f, sport_);
        put16(f, dport_);
        put16(f, static_cast<std::uint16_t>(udp_len));
        put16(f, 0);  // no UDP checksum: allowed for IPv4, and what the program must not rely on
        f.insert(f.end(), payload_.begin(), payload_.end());
        return f;
    }

    // ARP (RFC 826) for Ethernet/IPv4; op 1 = request, 2 = reply.
    static Bytes arp(const Mac& sha, std::uint32_t spa_be, std::uint32_t tpa_be,
                     std::uint16_t op = 1) {
        Bytes f;
        put(f, Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
        put(f, sha);
        put16(f, 0x0806);
        put16(f, 1);
        put16(f, 0x0800);
        f.push_back(6);
        f.push_back(4);
        put16(f, op);
        put(f, sha);
        put_be32(f, spa_be);
        put(f, Mac{});
        put_be32(f, tpa_be);
        f.resize(60, 0);  // Ethernet minimum without FCS
        return f;
    }

  private:
    template <std::size_t N>
    static void put(Bytes& f, const std::array<std::uint8_t, N>& a) {
        f.insert(f.end(), a.begin(), a.end());
    }
    static void put16(Bytes& f, std::uint16_t v) {
        f.push_back(static_cast<std::uint8_t>(v >> 8));
        f.push_back(static_cast<std::uint8_t>(v));
    }
    static void put_be32(Bytes& f, std::uint32_t be) {
        std::array<std::uint8_t, 4> b{};
        std::memcpy(b.data(), &be, 4);
        put(f, b);
    }

    Mac src_mac_{}, dst_mac_{};
    std::uint32_t saddr_ = 0, daddr_ = 0;
    std::size_t opt_words_ = 0;
    std::uint16_t frag_off_ = 0x4000;  // DF
    std::uint16_t sport_ = 40000, dport_ = 9527;
    Bytes payload_;
};

// True when the IPv4 header at `ip_off` has a valid checksum.
inline bool ipv4_checksum_ok(const Bytes& f, std::size_t ip_off = 14) {
    const std::size_t ihl = std::size_t{f[ip_off] & 0x0fu} * 4;
    return ones_sum(std::span(f).subspan(ip_off, ihl)) == 0xffff;
}

// True when the UDP checksum of an option-less IPv4 frame is valid (or zero = not computed).
inline bool udp_checksum_ok(const Bytes& f) {
    constexpr std::size_t ip = 14, udp = 34;
    if (f[udp + 6] == 0 && f[udp + 7] == 0) return true;
    const std::size_t len = static_cast<std::size_t>(f[udp + 4] << 8 | f[udp + 5]);
    Bytes pseudo(f.begin() + ip + 12, f.begin() + ip + 20);
    pseudo.push_back(0);
    pseudo.push_back(17);
    pseudo.push_back(static_cast<std::uint8_t>(len >> 8));
    pseudo.push_back(static_cast<std::uint8_t>(len));
    pseudo.insert(pseudo.end(), f.begin() + udp, f.begin() + static_cast<long>(udp + len));
    return ones_sum(pseudo) == 0xffff;
}

}  // namespace ha::test
