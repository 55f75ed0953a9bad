#include "netlink/address_manager.hpp"

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/log.hpp"
#include "netlink/rtnl_msg.hpp"

namespace ha::nl {

Result<AddressManager> AddressManager::create() {
    HA_TRY_CTX(sock, MnlSocket::open(0), "address manager");
    return AddressManager(std::move(sock));
}

// One address request. `already` is the errno that means the change is already in place
// (EEXIST for an add, EADDRNOTAVAIL for a remove): success, logged at debug.
Status AddressManager::request(AddrOp op, int ifindex, const IpPrefix& prefix,
                               std::string_view label, std::uint32_t lifetime_s, int already) {
    std::array<std::uint8_t, kRequestBufSize> buf{};
    const std::uint32_t seq = sock_.next_seq();
    const char* verb = op == AddrOp::Add ? "add" : op == AddrOp::Renew ? "renew" : "remove";
    const std::string what = fmt::format("{} {} ifindex={}", verb, prefix.to_string(), ifindex);
    HA_TRY_CTX(len, build_addr_request(buf, op, ifindex, prefix, seq, label, lifetime_s), what);
    auto st = sock_.request_ack({buf.data(), len}, seq);
    if (!st && already != 0 && st.error().code.value() == already) {
        log::debug("nl", "{}: nothing to do ({})", what, std::strerror(already));
        return {};
    }
    if (!st) return unexpected(st.error().wrap(what));
    return {};
}

Status AddressManager::add(int ifindex, const IpPrefix& prefix, std::string_view label,
                           std::uint32_t lifetime_s) {
    return request(AddrOp::Add, ifindex, prefix, label, lifetime_s, EEXIST);
}

Status AddressManager::renew(int ifindex, const IpPrefix& prefix, std::string_view label,
                             std::uint32_t lifetime_s) {
    return request(AddrOp::Renew, ifindex, prefix, label, lifetime_s, 0);
}

Status AddressManager::remove(int ifindex, const IpPrefix& prefix) {
    return request(AddrOp::Remove, ifindex, prefix, {}, 0, EADDRNOTAVAIL);
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
