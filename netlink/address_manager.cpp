#include "netlink/address_manager.hpp"

#include <array>
#include <cerrno>

#include <fmt/format.h>

#include "common/log.hpp"
#include "netlink/rtnl_msg.hpp"

namespace ha::nl {

Result<AddressManager> AddressManager::create() {
    HA_TRY_CTX(sock, MnlSocket::open(0), "address manager");
    return AddressManager(std::move(sock));
}

Status AddressManager::add(int ifindex, const IpPrefix& prefix, std::string_view label,
                           std::uint32_t lifetime_s) {
    std::array<std::uint8_t, kRequestBufSize> buf{};
    const std::uint32_t seq = sock_.next_seq();
    const std::string what = fmt::format("add {} ifindex={}", prefix.to_string(), ifindex);
    HA_TRY_CTX(len, build_addr_request(buf, AddrOp::Add, ifindex, prefix, seq, label, lifetime_s),
               what);
    auto st = sock_.request_ack({buf.data(), len}, seq);
    if (!st && st.error().code.value() == EEXIST) {
        log::debug("nl", "address already present addr={} ifindex={}", prefix.to_string(), ifindex);
        return {};
    }
    if (!st) return unexpected(st.error().wrap(what));
    return {};
}

Status AddressManager::renew(int ifindex, const IpPrefix& prefix, std::string_view label,
                             std::uint32_t lifetime_s) {
    std::array<std::uint8_t, kRequestBufSize> buf{};
    const std::uint32_t seq = sock_.next_seq();
    const std::string what = fmt::format("renew {} ifindex={}", prefix.to_string(), ifindex);
    HA_TRY_CTX(len, build_addr_request(buf, AddrOp::Renew, ifindex, prefix, seq, label, lifetime_s),
               what);
    if (auto st = sock_.request_ack({buf.data(), len}, seq); !st)
        return unexpected(st.error().wrap(what));
    return {};
}

Status AddressManager::remove(int ifindex, const IpPrefix& prefix) {
    std::array<std::uint8_t, kRequestBufSize> buf{};
    const std::uint32_t seq = sock_.next_seq();
    const std::string what = fmt::format("remove {} ifindex={}", prefix.to_string(), ifindex);
    HA_TRY_CTX(len, build_addr_request(buf, AddrOp::Remove, ifindex, prefix, seq), what);
    auto st = sock_.request_ack({buf.data(), len}, seq);
    if (!st && st.error().code.value() == EADDRNOTAVAIL) {
        log::debug("nl", "address already absent addr={} ifindex={}", prefix.to_string(), ifindex);
        return {};
    }
    if (!st) return unexpected(st.error().wrap(what));
    return {};
}

Result<bool> AddressManager::has(int ifindex, const IpPrefix& prefix) {
    std::array<std::uint8_t, kRequestBufSize> buf{};
    const std::uint32_t seq = sock_.next_seq();
    const std::string what = fmt::format("look up {} ifindex={}", prefix.to_string(), ifindex);
    HA_TRY_CTX(len, build_addr_dump(buf, seq, prefix.addr.family), what);
    bool found = false;
    auto st = sock_.dump({buf.data(), len}, seq, [&](const nlmsghdr* nlh) {
        auto a = parse_addr(nlh);
        if (a && !a->removed && a->ifindex == ifindex && a->prefix == prefix) found = true;
    });
    if (!st) return unexpected(st.error().wrap(what));
    return found;
}

}  // namespace ha::nl
