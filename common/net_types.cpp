#include "net_types.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace ha {

Result<IpAddr> IpAddr::parse(std::string_view text) {
    std::string s(text);
    IpAddr a;
    if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
        a.family = 4;
        return a;
    }
    if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
        a.family = 6;
        return a;
    }
    return fail(fmt::format("'{}' is not an IPv4 or IPv6 address", text));
}

std::string IpAddr::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family == 4)
        inet_ntop(AF_INET, bytes.data(), buf, sizeof buf);
    else if (family == 6)
        inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
    return buf;
}

std::uint32_t IpAddr::v4_be() const {
    std::uint32_t v = 0;
    std::memcpy(&v, bytes.data(), 4);
    return v;
}

Result<IpPrefix> IpPrefix::parse(std::string_view text) {
    IpPrefix p;
    auto slash = text.find('/');
    auto addr = IpAddr::parse(text.substr(0, slash));
    if (!addr) return unexpected(addr.error());
    p.addr = *addr;
    const unsigned max = p.addr.is_v4() ? 32 : 128;
    if (slash == std::string_view::npos) {
        p.len = static_cast<std::uint8_t>(max);
        return p;
    }
    std::string_view len_text = text.substr(slash + 1);
    unsigned len = 0;
    auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc() || ptr != len_text.data() + len_text.size() || len_text.empty() ||
        len > max || len == 0)
        return fail(fmt::format("'{}' has a bad prefix length (1-{})", text, max));
    p.len = static_cast<std::uint8_t>(len);
    return p;
}

std::string IpPrefix::to_string() const {
    return fmt::format("{}/{}", addr.to_string(), len);
}

Result<MacAddr> MacAddr::parse(std::string_view text) {
    MacAddr m;
    if (text.size() != 17)
        return fail(fmt::format("'{}' is not a MAC address (aa:bb:cc:dd:ee:ff)", text));
    for (std::size_t i = 0; i < 6; ++i) {
        if (i > 0 && text[i * 3 - 1] != ':' && text[i * 3 - 1] != '-')
            return fail(fmt::format("'{}' is not a MAC address (aa:bb:cc:dd:ee:ff)", text));
        unsigned v = 0;
        auto [ptr, ec] = std::from_chars(text.data() + i * 3, text.data() + i * 3 + 2, v, 16);
        if (ec != std::errc() || ptr != text.data() + i * 3 + 2)
            return fail(fmt::format("'{}' is not a MAC address (aa:bb:cc:dd:ee:ff)", text));
        m.bytes[i] = static_cast<std::uint8_t>(v);
    }
    return m;
}

std::string MacAddr::to_string() const {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", bytes[0], bytes[1], bytes[2],
                       bytes[3], bytes[4], bytes[5]);
}

bool MacAddr::is_zero() const {
    for (auto b : bytes)
        if (b != 0) return false;
    return true;
}

}  // namespace ha
