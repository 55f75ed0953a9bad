// IpAddr + port as a socket address, for the adapters that talk to sockets. Kept apart from
// net_types.hpp so the pure core never includes <sys/socket.h>.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>

#include "net_types.hpp"

namespace ha {

// Fills `out` and returns the length to pass to bind/connect/sendto.
inline socklen_t to_sockaddr(const IpAddr& ip, std::uint16_t port, sockaddr_storage& out) {
    out = sockaddr_storage{};
    if (ip.is_v6()) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&out);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        std::memcpy(&a->sin6_addr, ip.bytes.data(), 16);
        return sizeof(sockaddr_in6);
    }
    auto* a = reinterpret_cast<sockaddr_in*>(&out);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    std::memcpy(&a->sin_addr, ip.bytes.data(), 4);
    return sizeof(sockaddr_in);
}

}  // namespace ha
