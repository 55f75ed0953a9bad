#include "agent/heartbeat.hpp"

#include <arpa/inet.h>
#include <linux/magic.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/duration.hpp"
#include "common/log.hpp"
#include "common/sockaddr.hpp"

namespace ha {

namespace {
constexpr int kDirect = 0;
constexpr int kLan = 1;

// The longest pause in our own sending that still counts as watching the path: half the
// timeout, or two send intervals where those are longer (a slow LAN path).
Duration watch_gap(const core::Config& cfg, std::chrono::nanoseconds interval) {
    return std::max<Duration>(std::chrono::duration_cast<Duration>(cfg.heartbeat_timeout) / 2,
                              2 * std::chrono::duration_cast<Duration>(interval));
}

std::string trimmed(const std::string& s, std::size_t max) {
    return s.substr(0, max);
}
}  // namespace

// One outstanding recvmsg on one heartbeat socket, re-armed after every completion.
class Heartbeat::RecvOp final : public io::Completion {
  public:
    RecvOp(Heartbeat& hb, int sock) : sock_(sock), hb_(hb) {}
    void arm() {
        iov_.iov_base = buf_.data();
        iov_.iov_len = buf_.size();
        std::memset(&msg_, 0, sizeof msg_);
        msg_.msg_name = &from_;
        msg_.msg_namelen = sizeof from_;
        msg_.msg_iov = &iov_;
        msg_.msg_iovlen = 1;
        io_uring_sqe* s = hb_.ring_.sqe();
        io_uring_prep_recvmsg(s, hb_.socks_[static_cast<std::size_t>(sock_)].get(), &msg_, 0);
        io_uring_sqe_set_data(s, this);
        armed_ = true;
    }
    void completed(int res, unsigned) override {
        armed_ = false;
        if (closing_) return;
        if (res > 0)
            hb_.on_datagram(sock_, static_cast<std::size_t>(res));
        else if (res == -ECONNREFUSED)
            ++hb_.counters_.refused;  // ICMP port unreachable: the peer's port is closed
        else if (res < 0 && res != -EAGAIN && res != -EINTR)
            log::warn("hb", "recvmsg failed: {}", std::strerror(-res));
        arm();
    }
    std::array<std::uint8_t, 512> buf_{};
    sockaddr_storage from_{};
    bool armed_ = false;
    bool closing_ = false;
    const int sock_;

  private:
    Heartbeat& hb_;
    iovec iov_{};
    msghdr msg_{};
};

Heartbeat::Heartbeat(const core::Config& cfg, const Key& key, std::uint32_t epoch, io::Ring& ring,
                     Sink sink)
    : cfg_(cfg),
      key_(key),
      ring_(ring),
      sink_(std::move(sink)),
      epoch_(epoch),
      live_{core::Liveness(std::chrono::duration_cast<Duration>(cfg.heartbeat_timeout),
                           watch_gap(cfg, cfg.effective_interval())),
            core::Liveness(std::chrono::duration_cast<Duration>(cfg.heartbeat_timeout),
                           watch_gap(cfg, cfg.effective_lan_interval()))},
      timeout_(std::chrono::duration_cast<Duration>(cfg.heartbeat_timeout)),
      stale_after_(core::agent_stale_after(timeout_)) {
    peer_addr_[kDirect] = cfg.peer_ip;
    peer_addr_[kLan] = cfg.peer_lan_ip;
    interval_[kDirect] = std::chrono::duration_cast<Duration>(cfg.effective_interval());
    interval_[kLan] = std::chrono::duration_cast<Duration>(cfg.effective_lan_interval());
}

Result<std::unique_ptr<Heartbeat>> Heartbeat::create(const core::Config& cfg, const Key& key,
                                                     std::uint32_t epoch, io::Ring& ring,
                                                     Sink sink) {
    std::unique_ptr<Heartbeat> hb(new Heartbeat(cfg, key, epoch, ring, std::move(sink)));
    if (auto s = hb->open_sockets(); !s) return unexpected(s.error());
    if (auto s = hb->attach_responders(); !s) return unexpected(s.error());
    for (int i : {kDirect, kLan, kMain}) {
        if (!hb->socks_[static_cast<std::size_t>(i)]) continue;
        auto& op = hb->recv_[static_cast<std::size_t>(i)];
        op = std::make_unique<RecvOp>(*hb, i);
        op->arm();
    }
    const TimePoint now = Clock::now();
    hb->next_send_ = {now, now};
    return hb;
}

Heartbeat::~Heartbeat() {
    for (auto& op : recv_) {
        if (!op || !op->armed_) continue;
        // The kernel may still write into the receive buffer: cancel and wait for the final CQE.
        op->closing_ = true;
        io_uring_sqe* s = ring_.sqe();
        io_uring_prep_cancel(s, op.get(), 0);
        io_uring_sqe_set_data(s, nullptr);
        for (int i = 0; i < 100 && op->armed_; ++i)
            (void)ring_.run_once(Clock::now() + std::chrono::milliseconds(10));
    }
}

// Three sockets on the heartbeat port (SO_REUSEADDR): one per path, connected to the peer's
// address on it, and the unconnected one (kMain). The kernel delivers what the peer sends from
// an address to the socket connected to it, the rest to kMain. Each path socket has its own small
// send buffer: datagrams to a peer whose address cannot be resolved (a pulled LAN cable) wait in
// the neighbour queue charged to their socket, and with one shared socket they had filled its
// buffer within milliseconds and stopped the heartbeat on the direct link too. The small buffer
// also keeps the burst short that such a queue delivers, stale, once the link comes back.
Status Heartbeat::open_sockets() {
    auto open = [&](bool v6) -> Result<UniqueFd> {
        UniqueFd fd(
            ::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) return last_errno("heartbeat socket");
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        // Heartbeats must not queue behind bulk traffic on a shared NIC.
        int prio = 6;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio);
        IpAddr any;
        any.family = v6 ? 6 : 4;
        sockaddr_storage ss{};
        const socklen_t len = to_sockaddr(any, cfg_.heartbeat_port, ss);
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
            return last_errno(fmt::format("bind heartbeat port {}", cfg_.heartbeat_port));
        return fd;
    };
    auto main = open(cfg_.peer_ip && cfg_.peer_ip->is_v6());
    if (!main) return unexpected(main.error());
    socks_[kMain] = std::move(*main);
    // The lifeline: a socket on 127.0.0.1 that nothing reads or writes, so that no I/O in flight
    // holds it open once the process is gone. The XDP program looks it up to tell whether this
    // agent still exists (see ha_xdp.bpf.c, agent_gone()).
    lifeline_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!lifeline_) return last_errno("lifeline socket");
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t lo_len = sizeof lo;
    if (::bind(lifeline_.get(), reinterpret_cast<sockaddr*>(&lo), sizeof lo) != 0 ||
        ::getsockname(lifeline_.get(), reinterpret_cast<sockaddr*>(&lo), &lo_len) != 0)
        return last_errno("lifeline socket on 127.0.0.1");
    lifeline_port_ = ntohs(lo.sin_port);
    for (int path : {kDirect, kLan}) {
        const auto& peer = peer_addr_[static_cast<std::size_t>(path)];
        if (!peer) continue;
        auto fd = open(peer->is_v6());
        if (!fd) return unexpected(fd.error());
        int sndbuf = 4096;  // the kernel's minimum (about five datagrams in flight)
        ::setsockopt(fd->get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        sockaddr_storage to{};
        const socklen_t len = to_sockaddr(*peer, cfg_.heartbeat_port, to);
        if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&to), len) != 0)
            return last_errno(fmt::format("heartbeat to {} ({} path): no route", peer->to_string(),
                                          path == kDirect ? "direct" : "LAN"));
        socks_[static_cast<std::size_t>(path)] = std::move(*fd);
    }
    return {};
}

Status Heartbeat::attach_responders() {
    if (cfg_.xdp_mode == core::XdpMode::Userspace) {
        userspace_ = true;
        log::warn("hb", "heartbeat responder in user space (xdp_mode = userspace)");
        return {};
    }
    // systemd mounts bpffs at /sys/fs/bpf; a minimal init may not. Pins need it.
    struct statfs sfs {};
    if (::statfs("/sys/fs/bpf", &sfs) != 0 || sfs.f_type != BPF_FS_MAGIC) {
        if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0)
            log::warn("hb", "cannot mount bpffs at /sys/fs/bpf: {}", std::strerror(errno));
        else
            log::info("hb", "mounted bpffs at /sys/fs/bpf");
    }
    auto make = [&](const std::string& ifname, bool is_lan) -> Result<bpf::Responder> {
        bpf::ResponderOptions o;
        o.ifname = ifname;
        o.ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
        if (o.ifindex == 0) return last_errno("interface " + ifname);
        o.attach_mode = cfg_.xdp_mode == core::XdpMode::Native    ? bpf::AttachMode::Native
                        : cfg_.xdp_mode == core::XdpMode::Generic ? bpf::AttachMode::Generic
                                                                  : bpf::AttachMode::Auto;
        o.port = cfg_.heartbeat_port;
        o.is_lan = is_lan;
        o.pin_root = cfg_.bpf_pin_root;
        o.key = key_;
        o.lifeline_port = lifeline_port_;  // open_sockets() ran first
        // The configured peer MAC is the peer's heartbeat NIC; its LAN requests come from another.
        if (!is_lan) o.peer_mac = cfg_.peer_mac;
        if (is_lan && cfg_.cluster_ip && cfg_.cluster_ip->addr.is_v4())
            o.cluster_ip = cfg_.cluster_ip->addr;
        return bpf::Responder::create(o);
    };
    auto hb = make(cfg_.heartbeat_interface, false);
    if (!hb) {
        if (cfg_.xdp_mode != core::XdpMode::Auto) return unexpected(hb.error());
        // Fallback chain: native, generic (inside create), then user space with a warning.
        log::warn("hb", "XDP responder unavailable ({}); answering heartbeats in user space",
                  hb.error().message());
        userspace_ = true;
        return {};
    }
    hb_resp_.emplace(std::move(*hb));
    if (!cfg_.lan_interface.empty() && cfg_.lan_interface != cfg_.heartbeat_interface) {
        auto lan = make(cfg_.lan_interface, true);
        if (!lan) {
            log::warn("hb", "XDP on LAN NIC {} failed ({}); no in-kernel fence there",
                      cfg_.lan_interface, lan.error().message());
        } else {
            lan_resp_.emplace(std::move(*lan));
        }
    }
    log::info("hb", "XDP responder on {} mode={}{}; LAN {}", cfg_.heartbeat_interface,
              hb_resp_->mode(), hb_resp_->adopted() ? " (re-adopted pinned link)" : "",
              lan_resp_ ? std::string(lan_resp_->mode()) : std::string("none"));
    return {};
}

std::string Heartbeat::mode() const {
    if (userspace_) return "user space";
    if (hb_resp_ && hb_resp_->mode() == "native") return "native XDP";
    return "generic XDP";
}

void Heartbeat::publish(const core::PeerStatus& self, TimePoint now) {
    bpf::NodeState ns;
    ns.term = self.term;
    ns.station = static_cast<std::uint8_t>(self.station);
    ns.state = static_cast<std::uint8_t>(self.state);
    ns.ha_enabled = self.ha_enabled;
    ns.healthy = self.healthy;
    ns.synced = self.synced;
    ns.proto_version = self.proto;
    ns.model = trimmed(self.model, HA_MODEL_LEN);
    ns.version = trimmed(self.version, HA_VERSION_LEN);
    auto w = bpf::to_wire(ns);
    if (!w) return;
    // A map write per loop iteration costs a syscall per NIC; at a 100 us interval that is most
    // of the agent's CPU. Write when the state changed or a tenth of the stale limit went by, so
    // the kernel's alive-until stamp always has at least 9/10 of it left.
    const bool changed = std::memcmp(&self_wire_, &*w, sizeof self_wire_) != 0;
    if (!changed && now - last_publish_ < stale_after_ / 10) return;
    // A new state goes to the peer at once (a request on each path now), not at the next send:
    // with the guide's 7 s timeout that can be 700 ms away, and the peer acts on our state (a
    // fault handover waits for the standby to say it is ready, for one).
    if (changed && last_publish_ != TimePoint{}) next_send_ = {now, now};
    last_publish_ = now;
    self_wire_ = *w;
    ha_agent_state st{};
    st.self = self_wire_;
    st.alive_until_ns = to_mono_ns(now + stale_after_);
    for (auto* r : {hb_resp_ ? &*hb_resp_ : nullptr, lan_resp_ ? &*lan_resp_ : nullptr}) {
        if (r == nullptr) continue;
        if (auto s = r->set_state(st); !s) log::warn("hb", "set_state: {}", s.error().message());
    }
}

core::PeerStatus Heartbeat::to_peer_status(const bpf::NodeState& s) const {
    core::PeerStatus p;
    p.station = static_cast<core::StationType>(s.station);
    p.state = static_cast<core::State>(s.state);
    p.term = s.term;
    p.ha_enabled = s.ha_enabled;
    p.healthy = s.healthy;
    p.agent_stale = s.agent_stale;
    p.agent_gone = s.agent_gone;
    p.synced = s.synced;
    p.model = s.model;
    p.proto = s.proto_version;
    p.version = s.version;
    // The kernel drops heartbeats from any other MAC when one is configured.
    if (cfg_.peer_mac)
        p.mac = *cfg_.peer_mac;
    else if (peer_mac_seen_)
        p.mac = *peer_mac_seen_;
    return p;
}

void Heartbeat::send_request(int path, TimePoint now) {
    if (!peer_addr_[static_cast<std::size_t>(path)]) return;
    const std::uint64_t seq = bpf::make_seq(epoch_, ++counter_);
    auto bytes = bpf::build_request(self_wire_, key_, seq, to_mono_ns(now));
    // A plain send: the datagram is 88 bytes and the socket never blocks. The prober ran and
    // tried: that is evidence either way. A send refused because the link is down or the peer
    // unreachable (ENETDOWN, EHOSTUNREACH, ...) is a request the peer cannot answer, so it
    // counts like one that left; only a prober that did not run has no evidence.
    ssize_t n = ::send(socks_[static_cast<std::size_t>(path)].get(), bytes.data(), bytes.size(),
                       MSG_DONTWAIT);
    if (n != static_cast<ssize_t>(bytes.size()))
        ++counters_.send_errors;
    else
        ++counters_.sent;
    live_[static_cast<std::size_t>(path)].sent(seq, now);
}

void Heartbeat::send_control(core::PeerMsg msg, std::uint64_t target_term) {
    const TimePoint now = Clock::now();
    for (int path : {kDirect, kLan}) {
        const auto ps = static_cast<std::size_t>(path);
        if (!socks_[ps]) continue;
        const std::uint64_t seq = bpf::make_seq(epoch_, ++counter_);
        auto bytes = bpf::build_control(static_cast<std::uint8_t>(msg), self_wire_, key_, seq,
                                        to_mono_ns(now), target_term);
        if (::send(socks_[ps].get(), bytes.data(), bytes.size(), MSG_DONTWAIT) < 0)
            ++counters_.send_errors;
    }
}

void Heartbeat::on_datagram(int sock, std::size_t len) {
    const TimePoint now = Clock::now();
    RecvOp& rx = *recv_[static_cast<std::size_t>(sock)];
    auto msg = bpf::parse_message(std::span<const std::uint8_t>(rx.buf_.data(), len), key_);
    if (!msg) {
        ++counters_.bad;
        log::debug("hb", "dropped datagram: {}", msg.error().message());
        return;
    }
    // Which path: by the sender's address.
    IpAddr from;
    if (rx.from_.ss_family == AF_INET) {
        from.family = 4;
        std::memcpy(from.bytes.data(), &reinterpret_cast<sockaddr_in*>(&rx.from_)->sin_addr, 4);
    } else {
        from.family = 6;
        std::memcpy(from.bytes.data(), &reinterpret_cast<sockaddr_in6*>(&rx.from_)->sin6_addr, 16);
    }
    int path = -1;
    for (int p : {kDirect, kLan})
        if (peer_addr_[static_cast<std::size_t>(p)] &&
            *peer_addr_[static_cast<std::size_t>(p)] == from)
            path = p;
    if (path < 0) {
        ++counters_.bad;
        return;
    }
    const auto ps = static_cast<std::size_t>(path);
    switch (msg->type) {
        case bpf::MsgType::Reply: {
            auto rtt = live_[ps].replied(msg->seq, now);
            if (!rtt) {
                ++counters_.unmatched;  // late, duplicated or replayed: not evidence of anything
                return;
            }
            ++counters_.replies;
            rtt_[ps].add(*rtt);
            sink_.seen(static_cast<core::Path>(path), to_peer_status(msg->state));
            return;
        }
        case bpf::MsgType::Control:
            if (msg->seq <= last_control_seq_) {
                ++counters_.unmatched;
                return;
            }
            last_control_seq_ = msg->seq;
            live_[ps].heard(now);
            sink_.control(static_cast<core::PeerMsg>(msg->control), msg->state.term,
                          msg->target_term);
            return;
        case bpf::MsgType::Request: {
            // Only in user-space mode do requests reach us (XDP answers them in the kernel).
            if (msg->seq <= last_request_seq_) {
                ++counters_.unmatched;
                return;
            }
            last_request_seq_ = msg->seq;
            auto reply =
                bpf::make_reply(std::span<const std::uint8_t>(rx.buf_.data(), len), self_wire_,
                                key_, to_mono_ns(now), to_mono_ns(now + stale_after_));
            // From the path's own socket: it is connected to exactly this sender.
            const int out = socks_[ps] ? static_cast<int>(ps) : kMain;
            ::sendto(socks_[static_cast<std::size_t>(out)].get(), reply.data(), reply.size(),
                     MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&rx.from_),
                     rx.from_.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
            live_[ps].heard(now);
            sink_.seen(static_cast<core::Path>(path), to_peer_status(msg->state));
            return;
        }
    }
}

void Heartbeat::on_timer(TimePoint now) {
    for (int path : {kDirect, kLan}) {
        const auto ps = static_cast<std::size_t>(path);
        if (!peer_addr_[ps]) continue;
        if (now >= next_send_[ps]) {
            send_request(path, now);
            // Keep the cadence; after a stall, do not burst to catch up.
            next_send_[ps] += interval_[ps];
            if (next_send_[ps] <= now) next_send_[ps] = now + interval_[ps];
        }
    }
    // The peer's requests, as the kernel recorded them: evidence of life without a wake-up each.
    // Our own replies carry the same news, so the maps are polled every few ms, not every loop;
    // but always before a path is declared lost, so a peer whose requests still arrive is never
    // taken for gone (our requests or its replies may be what is lost).
    bool poll_maps = now >= next_map_poll_;
    for (int path : {kDirect, kLan}) {
        const auto ps = static_cast<std::size_t>(path);
        if (peer_addr_[ps] && live_[ps].alive() && live_[ps].lost(now)) poll_maps = true;
    }
    auto poll_peer = [&](std::optional<bpf::Responder>& r, int path) {
        if (!r) return;
        auto seen = r->last_request();
        if (!seen || !*seen) return;
        const auto ps = static_cast<std::size_t>(path);
        if ((*seen)->last_request_ns == last_req_ns_[ps]) return;
        last_req_ns_[ps] = (*seen)->last_request_ns;
        // The pinned map outlives the agent: a record older than a timeout (one written before a
        // restart, say) tells nothing about the peer now.
        const TimePoint at = from_mono_ns((*seen)->last_request_ns);
        if (now - at >= timeout_) return;
        if (!(*seen)->src_mac.is_zero()) peer_mac_seen_ = (*seen)->src_mac;
        live_[ps].heard(at);
        sink_.seen(static_cast<core::Path>(path), to_peer_status((*seen)->state));
    };
    if (poll_maps) {
        next_map_poll_ = now + std::chrono::milliseconds(5);
        poll_peer(hb_resp_, kDirect);
        poll_peer(lan_resp_, kLan);
        learn_lan_peer_mac();
    }
    if (hb_resp_ && now >= next_counter_poll_) {
        next_counter_poll_ = now + std::chrono::milliseconds(100);
        if (auto c = hb_resp_->counters(); c && c->drop_peer_mac > foreign_drops_) {
            foreign_drops_ = c->drop_peer_mac;
            sink_.foreign_mac();
        }
    }
    for (int path : {kDirect, kLan}) {
        const auto ps = static_cast<std::size_t>(path);
        if (!peer_addr_[ps]) continue;
        if (auto changed = live_[ps].update(now); changed && !*changed) {
            const auto life = live_[ps].last_life();
            log::info("hb", "{} path lost: no sign of the peer {} while asking every {}",
                      path == kDirect ? "direct" : "LAN",
                      life ? "for " + format_duration(now - *life) : std::string("yet"),
                      format_duration(interval_[ps]));
            sink_.lost(static_cast<core::Path>(path));
        }
    }
}

std::optional<TimePoint> Heartbeat::next_deadline(TimePoint now) const {
    std::optional<TimePoint> d;
    for (int path : {kDirect, kLan}) {
        const auto ps = static_cast<std::size_t>(path);
        if (!peer_addr_[ps]) continue;
        if (!d || next_send_[ps] < *d) d = next_send_[ps];
        if (auto c = live_[ps].next_check(now); c && (!d || *c < *d)) d = c;
    }
    return d;
}

void Heartbeat::set_fence(bool on) {
    if (lan_resp_) {
        if (auto s = lan_resp_->set_fence(on); !s)
            log::warn("hb", "set_fence: {}", s.error().message());
    }
}

void Heartbeat::set_peer_mac(const std::optional<MacAddr>& mac) {
    cfg_.peer_mac = mac;
    if (hb_resp_) {
        if (auto s = hb_resp_->set_peer_mac(mac); !s)
            log::warn("hb", "set_peer_mac: {}", s.error().message());
    }
    // A new peer: its LAN MAC is learned again once the direct link has verified it.
    lan_peer_mac_.reset();
    if (lan_resp_) (void)lan_resp_->set_peer_mac(std::nullopt);
}

void Heartbeat::learn_lan_peer_mac() {
    if (!cfg_.peer_mac || cfg_.peer_mac->is_zero() || !lan_resp_ || lan_peer_mac_) return;
    // The direct link's kernel filter admits only the configured MAC, so a live direct path is
    // the configured peer; the LAN requests arriving meanwhile come from its LAN NIC.
    if (!live_[kDirect].alive()) return;
    auto seen = lan_resp_->last_request();
    if (!seen || !*seen || (*seen)->src_mac.is_zero()) return;
    const auto age = Clock::now() - from_mono_ns((*seen)->last_request_ns);
    if (age > interval_[kLan] * 2) return;  // not current
    lan_peer_mac_ = (*seen)->src_mac;
    if (auto s = lan_resp_->set_peer_mac(lan_peer_mac_); !s) {
        log::warn("hb", "LAN peer MAC filter: {}", s.error().message());
        lan_peer_mac_.reset();
        return;
    }
    log::info("hb", "LAN path bound to the peer's LAN MAC {} (verified on the direct link)",
              lan_peer_mac_->to_string());
}

void Heartbeat::detach() {
    for (auto* r : {hb_resp_ ? &*hb_resp_ : nullptr, lan_resp_ ? &*lan_resp_ : nullptr}) {
        if (r == nullptr) continue;
        if (auto s = r->detach_and_unpin(); !s) log::warn("hb", "detach: {}", s.error().message());
    }
}

Result<ha_counters> Heartbeat::kernel_counters() const {
    if (!hb_resp_) return ha_counters{};
    return hb_resp_->counters();
}

}  // namespace ha
