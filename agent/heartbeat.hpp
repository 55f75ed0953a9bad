// The agent's side of the heartbeat: the XDP responders on the heartbeat and LAN NICs (or the
// user-space responder when BPF is not permitted), and the prober that sends signed requests on
// both paths and judges liveness from requests actually sent (core::Liveness).
//
// Loop thread only. One UDP socket bound to the heartbeat port carries everything user space sees:
// replies to our requests and the peer's control messages (the XDP program passes both up), and,
// in user-space mode, the peer's requests too. Receives go through io_uring.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "agent/core/config.hpp"
#include "agent/core/liveness.hpp"
#include "agent/core/machine.hpp"
#include "agent/io/ring.hpp"
#include "agent/metrics.hpp"
#include "bpf/loader.hpp"
#include "bpf/wire_util.hpp"
#include "common/keyfile.hpp"
#include "common/unique_fd.hpp"

namespace ha {

class Heartbeat {
  public:
    struct Sink {
        std::function<void(core::Path, const core::PeerStatus&)> seen;
        std::function<void(core::Path)> lost;
        std::function<void(core::PeerMsg, std::uint64_t term, std::uint64_t target_term)> control;
        std::function<void()> foreign_mac;  // the kernel dropped requests from another MAC
    };

    // epoch: grows on every agent start (persisted by the caller); seeds the sequence numbers.
    static Result<std::unique_ptr<Heartbeat>> create(const core::Config& cfg, const Key& key,
                                                     std::uint32_t epoch, io::Ring& ring,
                                                     Sink sink);
    ~Heartbeat();
    Heartbeat(const Heartbeat&) = delete;
    Heartbeat& operator=(const Heartbeat&) = delete;

    // Every loop iteration: what the kernel answers with, alive for one more timeout.
    void publish(const core::PeerStatus& self, TimePoint now);
    // Sends due requests, polls the kernel's record of the peer's requests, judges liveness.
    void on_timer(TimePoint now);
    [[nodiscard]] std::optional<TimePoint> next_deadline(TimePoint now) const;
    // target_term: the peer's term as we last saw it (it drops controls aimed at a term it left).
    void send_control(core::PeerMsg msg, std::uint64_t target_term);
    void set_fence(bool on);
    // The guide's "Replacing FCM in HA": the new peer MAC applies at once, in the kernel filter
    // too.
    void set_peer_mac(const std::optional<MacAddr>& mac);
    // Clean shutdown: detach and unpin. Without it (crash, kill -9) the programs stay attached,
    // answer stale and fence, and the next start re-adopts them.
    void detach();

    [[nodiscard]] std::string mode() const;  // "native XDP", "generic XDP", "user space"
    [[nodiscard]] const Histogram& rtt(core::Path p) const { return rtt_[static_cast<int>(p)]; }
    [[nodiscard]] bool alive(core::Path p) const { return live_[static_cast<int>(p)].alive(); }
    [[nodiscard]] std::optional<MacAddr> peer_mac_seen() const { return peer_mac_seen_; }
    struct Counters {
        std::uint64_t sent = 0, replies = 0, bad = 0, unmatched = 0, send_errors = 0;
        std::uint64_t refused = 0;  // ICMP port unreachable on a path socket (no agent, no XDP)
    };
    [[nodiscard]] const Counters& counters() const { return counters_; }
    [[nodiscard]] Result<ha_counters> kernel_counters() const;

  private:
    Heartbeat(const core::Config& cfg, const Key& key, std::uint32_t epoch, io::Ring& ring,
              Sink sink);
    Status open_sockets();
    Status attach_responders();
    void on_datagram(int sock, std::size_t len);
    void send_request(int path, TimePoint now);
    void learn_lan_peer_mac();
    core::PeerStatus to_peer_status(const bpf::NodeState& s) const;

    class RecvOp;
    core::Config cfg_;
    Key key_;
    io::Ring& ring_;
    Sink sink_;
    // [0] direct path, [1] LAN path (each connected to the peer there), [2] the unconnected
    // socket for what the peer sends from other addresses (see open_sockets()).
    static constexpr int kMain = 2;
    std::array<UniqueFd, 3> socks_;
    std::array<std::unique_ptr<RecvOp>, 3> recv_;
    UniqueFd lifeline_;  // bound on 127.0.0.1, never used: its existence says "agent alive"
    std::uint16_t lifeline_port_ = 0;
    std::optional<bpf::Responder> hb_resp_, lan_resp_;
    bool userspace_ = false;
    std::uint32_t epoch_;
    std::uint32_t counter_ = 0;
    std::uint64_t last_control_seq_ = 0;
    std::uint64_t last_request_seq_ = 0;  // user-space responder's replay window
    std::array<std::optional<IpAddr>, 2> peer_addr_;
    std::array<Duration, 2> interval_{};
    std::array<TimePoint, 2> next_send_{};
    std::array<core::Liveness, 2> live_;
    std::array<Histogram, 2> rtt_;
    std::array<std::uint64_t, 2> last_req_ns_{};
    std::uint64_t foreign_drops_ = 0;
    ha_node_state self_wire_{};
    TimePoint last_publish_{};
    TimePoint next_map_poll_{};
    TimePoint next_counter_poll_{};
    Duration timeout_;
    Duration stale_after_;  // the kernel's alive-until horizon (core::agent_stale_after)
    std::optional<MacAddr> peer_mac_seen_;
    // With a configured peer MAC (the peer's heartbeat NIC), the LAN path's filter learns the
    // peer's LAN MAC while the direct link proves who the peer is; a replacement box with other
    // MACs is then ignored on both paths.
    std::optional<MacAddr> lan_peer_mac_;
    Counters counters_;
};

}  // namespace ha
