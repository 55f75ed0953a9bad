// IP addresses, prefixes and MAC addresses as plain values, parsed and printed without sockets.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "result.hpp"

namespace ha {

struct IpAddr {
    std::uint8_t family = 0;               // 4 or 6; 0 = unset
    std::array<std::uint8_t, 16> bytes{};  // IPv4 uses the first 4, network order

    static Result<IpAddr> parse(std::string_view text);
    [[nodiscard]] std::string to_string() const;
    [[nodiscard]] bool is_v4() const { return family == 4; }
    [[nodiscard]] bool is_v6() const { return family == 6; }
    [[nodiscard]] std::uint32_t v4_be() const;  // network-order u32 for IPv4
    friend bool operator==(const IpAddr&, const IpAddr&) = default;
};

struct IpPrefix {
    IpAddr addr;
    std::uint8_t len = 0;
    // "198.18.0.10/24", "fd00:4a::10/64"; a bare address gets /32 or /128.
    static Result<IpPrefix> parse(std::string_view text);
    [[nodiscard]] std::string to_string() const;
    friend bool operator==(const IpPrefix&, const IpPrefix&) = default;
};

struct MacAddr {
    std::array<std::uint8_t, 6> bytes{};
    // "02:00:5e:10:00:01" or with '-' separators, any case.
    static Result<MacAddr> parse(std::string_view text);
    [[nodiscard]] std::string to_string() const;
    [[nodiscard]] bool is_zero() const;
    friend bool operator==(const MacAddr&, const MacAddr&) = default;
};

}  // namespace ha
