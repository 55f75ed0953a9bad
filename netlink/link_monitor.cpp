#include "netlink/link_monitor.hpp"

#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <vector>

#include "common/log.hpp"

namespace ha::nl {
namespace {

bool same_link_state(const LinkInfo& a, const LinkInfo& b) {
    return a.admin_up == b.admin_up && a.carrier == b.carrier && a.operstate == b.operstate &&
           a.name == b.name && a.removed == b.removed;
}

bool same_addr(const AddrInfo& a, int ifindex, const IpPrefix& p) {
    return a.ifindex == ifindex && a.prefix == p;
}

}  // namespace

Result<LinkMonitor> LinkMonitor::create() {
    HA_TRY_CTX(sock, MnlSocket::open(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR),
               "link monitor subscribe");
    HA_TRY_CTX(dump_sock, MnlSocket::open(0), "link monitor dump socket");
    LinkMonitor m(std::move(sock), std::move(dump_sock));
    HA_TRY_CTX(snap, m.take_snapshot(), "link monitor initial dump");
    m.links_ = std::move(snap.links);
    m.addrs_ = std::move(snap.addrs);
    return m;
}

Result<LinkMonitor::Snapshot> LinkMonitor::take_snapshot() {
    // NLM_F_DUMP_INTR (tables changed mid-dump) is retried a few times: the result must be
    // consistent, and a fresh dump is cheap.
    for (int attempt = 0;; ++attempt) {
        Snapshot snap;
        std::array<std::uint8_t, kRequestBufSize> buf{};
        std::uint32_t seq = dump_sock_.next_seq();
        HA_TRY_CTX(llen, build_link_dump(buf, seq), "link dump");
        Status st = dump_sock_.dump({buf.data(), llen}, seq, [&](const nlmsghdr* nlh) {
            if (auto l = parse_link(nlh); l && !l->removed) snap.links[l->ifindex] = *l;
        });
        if (st) {
            seq = dump_sock_.next_seq();
            HA_TRY_CTX(alen, build_addr_dump(buf, seq, 0), "address dump");
            st = dump_sock_.dump({buf.data(), alen}, seq, [&](const nlmsghdr* nlh) {
                if (auto a = parse_addr(nlh); a && !a->removed) snap.addrs.push_back(*a);
            });
        }
        if (st) return snap;
        if (st.error().code.value() != EAGAIN || attempt >= 3) return unexpected(st.error());
    }
}

void LinkMonitor::apply_link(const LinkInfo& l, const MonitorCallback* cb) {
    auto it = links_.find(l.ifindex);
    if (l.removed) {
        if (it == links_.end()) return;
        links_.erase(it);
    } else if (it != links_.end()) {
        if (same_link_state(it->second, l)) {
            it->second = l;
            return;
        }
        it->second = l;
    } else {
        links_.emplace(l.ifindex, l);
    }
    if (cb != nullptr) (*cb)(LinkEvent{l});
}

void LinkMonitor::apply_addr(const AddrInfo& a, const MonitorCallback* cb) {
    auto it = std::find_if(addrs_.begin(), addrs_.end(),
                           [&](const AddrInfo& x) { return same_addr(x, a.ifindex, a.prefix); });
    if (a.removed) {
        if (it == addrs_.end()) return;
        addrs_.erase(it);
    } else if (it != addrs_.end()) {
        it->flags = a.flags;
        return;
    } else {
        addrs_.push_back(a);
    }
    if (cb != nullptr) (*cb)(AddrEvent{a});
}

void LinkMonitor::feed(std::span<const std::uint8_t> datagram, const MonitorCallback& cb) {
    int len = static_cast<int>(datagram.size());
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
        if (auto l = parse_link(nlh)) {
            apply_link(*l, &cb);
        } else if (auto a = parse_addr(nlh)) {
            apply_addr(*a, &cb);
        }
    }
}

Status LinkMonitor::on_readable(const MonitorCallback& cb) {
    std::vector<std::uint8_t> buf(kRecvBufSize);
    for (;;) {
        auto got = sock_.recv_nonblocking(buf);
        if (!got) {
            if (got.error().code.value() == ENOBUFS) {
                if (auto st = resync(cb); !st) return st;
                continue;
            }
            return unexpected(got.error().wrap("link monitor"));
        }
        if (*got == 0) return {};
        feed({buf.data(), *got}, cb);
    }
}

Status LinkMonitor::resync(const MonitorCallback& cb) {
    ++resyncs_;
    log::warn("nl", "netlink notifications overrun, resyncing by dump resyncs={}", resyncs_);
    // Everything still queued predates the dump below, which supersedes it.
    std::vector<std::uint8_t> buf(kRecvBufSize);
    for (;;) {
        auto got = sock_.recv_nonblocking(buf);
        if (got && *got == 0) break;
        if (!got && got.error().code.value() != ENOBUFS) return unexpected(got.error());
    }
    HA_TRY_CTX(snap, take_snapshot(), "link monitor resync");
    // Report what vanished, then what appeared or changed.
    std::vector<LinkInfo> gone_links;
    for (const auto& [ifindex, l] : links_)
        if (snap.links.find(ifindex) == snap.links.end()) {
            LinkInfo r = l;
            r.removed = true;
            gone_links.push_back(r);
        }
    for (const auto& l : gone_links) apply_link(l, &cb);
    std::vector<AddrInfo> gone_addrs;
    for (const auto& a : addrs_) {
        const bool present =
            std::any_of(snap.addrs.begin(), snap.addrs.end(),
                        [&](const AddrInfo& x) { return same_addr(x, a.ifindex, a.prefix); });
        if (!present) {
            AddrInfo r = a;
            r.removed = true;
            gone_addrs.push_back(r);
        }
    }
    for (const auto& a : gone_addrs) apply_addr(a, &cb);
    for (const auto& [ifindex, l] : snap.links) apply_link(l, &cb);
    for (const auto& a : snap.addrs) apply_addr(a, &cb);
    return {};
}

const LinkInfo* LinkMonitor::link(int ifindex) const {
    auto it = links_.find(ifindex);
    return it == links_.end() ? nullptr : &it->second;
}

bool LinkMonitor::has_address(int ifindex, const IpPrefix& prefix) const {
    return std::any_of(addrs_.begin(), addrs_.end(),
                       [&](const AddrInfo& a) { return same_addr(a, ifindex, prefix); });
}

}  // namespace ha::nl
