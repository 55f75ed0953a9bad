// Loader for the XDP heartbeat responder (ha_xdp.bpf.c): skeleton RAII, attach/adopt/detach and
// typed map access. One Responder per NIC (heartbeat NIC, LAN NIC).
//
// Threading: every method is a plain syscall on the caller's thread; the agent's loop thread owns
// the Responders. Nothing here blocks or needs polling: the program's state is read by polling
// counters()/last_request() from the loop (no per-packet wake-ups, no fds to watch).
//
// Lifetime: the XDP attachment is a bpf_link pinned at <pin_root>/<ifname>/link together with the
// maps (on the LAN NIC also the egress fence, a tc filter that needs no pin), so destroying a
// Responder (or kill -9 of the agent) leaves the program answering (stale once alive_until_ns
// passes) and fencing. The next create() for the same ifname re-adopts the link and maps and swaps
// in the freshly loaded program (bpf_link_update: no gap in answering). Only detach_and_unpin()
// (clean stop) removes the attachment and the pins.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/keyfile.hpp"
#include "common/net_types.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "ha_wire.h"
#include "wire_util.hpp"

struct ha_xdp;  // the generated skeleton

namespace ha::bpf {

inline constexpr std::string_view kDefaultPinRoot = "/sys/fs/bpf/fcm-ha";

enum class AttachMode : std::uint8_t {
    Auto,     // native, else generic with a warning
    Native,   // native (driver) mode or fail
    Generic,  // generic (SKB) mode
};

struct ResponderOptions {
    std::string ifname;  // names the pin folder and log lines
    // 0 = load only: no attach, no pinning (BPF_PROG_TEST_RUN tests and benchmarks).
    int ifindex = 0;
    AttachMode attach_mode = AttachMode::Auto;
    std::uint16_t port = HA_HB_DEFAULT_PORT;
    bool is_lan = false;  // LAN NIC: enables cluster-IP self-fencing
    // bpffs folder; pins go to <pin_root>/<ifname>/. Empty = do not pin (attachment then ends with
    // the Responder). Must be on a mounted bpf filesystem.
    std::string pin_root = std::string(kDefaultPinRoot);
    Key key;
    bool key_set = true;               // false: drop every request until set_key()
    std::optional<MacAddr> peer_mac;   // unset/zero: accept any source MAC
    std::optional<IpAddr> cluster_ip;  // IPv4 only; unset: no fencing
    // The agent's lifeline: a UDP port (host order) it holds bound on 127.0.0.1. Nonzero: while
    // no socket is bound there the agent is taken for gone (replies carry AGENT_GONE, the LAN
    // program fences). 0: no check.
    std::uint16_t lifeline_port = 0;
};

// What the last valid request/control from the peer said (ha_peer map), decoded.
struct PeerSeen {
    std::uint64_t last_seq = 0;
    std::uint64_t last_request_ns = 0;  // CLOCK_MONOTONIC (bpf_ktime_get_ns); 0 = none yet
    std::uint64_t peer_sent_ns = 0;     // the peer's clock
    std::uint64_t last_control_ns = 0;  // 0 = none yet
    std::uint8_t last_control = 0;      // HA_CTRL_*
    NodeState state;
    MacAddr src_mac;
    std::uint32_t src_ip4_be = 0;  // network order
};

struct TestRunResult {
    std::uint32_t verdict = 0;  // XDP_* action
    std::vector<std::uint8_t> frame;
};

class Responder {
  public:
    // Loads the program with rodata (port, is_lan), fills ha_config, then attaches (or re-adopts
    // the pinned link) on opts.ifindex. Holds an flock on the pin folder while doing so. Errors:
    // pin root not on bpffs, load/verifier failure, attach failure (EBUSY: another XDP program is
    // attached without a link), each with the call and the interface in the context.
    static Result<Responder> create(const ResponderOptions& opts);

    // Removes <pin_root>/<ifname> (link and maps), detaching the program: for an interface that
    // left the configuration. Missing folder = success.
    static Status remove_pins(const std::string& pin_root, const std::string& ifname);

    Responder(Responder&& o) noexcept;
    Responder& operator=(Responder&& o) noexcept;
    Responder(const Responder&) = delete;
    Responder& operator=(const Responder&) = delete;
    ~Responder();  // keeps a pinned attachment; an unpinned one ends here

    // "native", "generic" or "none" (load-only).
    [[nodiscard]] std::string_view mode() const;
    // True when create() found and re-used a pinned link from an earlier run.
    [[nodiscard]] bool adopted() const { return adopted_; }
    [[nodiscard]] const std::string& ifname() const { return ifname_; }

    // Every loop iteration: one bpf_map_update_elem. alive_until_ns = mono_ns() + liveness timeout.
    Status set_state(const ha_agent_state& state);
    Status set_key(const Key& key);
    Status set_peer_mac(const std::optional<MacAddr>& mac);
    Status set_cluster_ip(const std::optional<IpAddr>& ip);  // IPv4 only; v6 is refused
    // The agent clears the fence when it demotes/restarts; the program sets it on a Fence message.
    Status set_fence(bool fenced);
    Result<bool> fenced() const;
    Result<ha_counters> counters() const;  // summed over CPUs
    // nullopt until a valid request/control arrived.
    Result<std::optional<PeerSeen>> last_request() const;

    // Clean stop: detaches the program and removes this interface's pins.
    Status detach_and_unpin();

    // Runs the loaded program once on `frame` through BPF_PROG_TEST_RUN (tests, bench/).
    Result<TestRunResult> run_once(std::span<const std::uint8_t> frame) const;
    // The same for the LAN egress fence (ha_tc_fence): the TC_ACT_* verdict for a frame sent.
    Result<std::uint32_t> run_tc_once(std::span<const std::uint8_t> frame) const;

  private:
    Responder() = default;
    void reset();
    Status write_config();
    Status load_and_attach(const ResponderOptions& opts);

    ha_xdp* skel_ = nullptr;
    UniqueFd link_;
    std::string ifname_;
    std::string pin_dir_;  // empty when not pinning
    int ifindex_ = 0;
    std::string_view mode_ = "none";
    bool adopted_ = false;
    bool tc_fence_ = false;  // LAN NIC: ha_tc_fence attached on egress
    ha_cfg cfg_{};           // our copy of ha_config[0]; the agent is its only writer
};

// A minimal XDP_PASS program on an interface. On veth, an XDP_TX frame is delivered into the
// peer's XDP (NAPI) path and dropped if the peer has no XDP program: the lab/test side of a veth
// pair whose other end runs a Responder needs this (a box's own Responder already serves).
class PassProgram {
  public:
    // Attached through a bpf_link owned by the returned object: detached when it is destroyed.
    static Result<PassProgram> attach(int ifindex);
    // Attached through netlink, not owned: stays until detach_persistent() or the interface goes.
    // Used by the fcm-ha-xdp-pass CLI for the lab.
    static Status attach_persistent(int ifindex);
    static Status detach_persistent(int ifindex);

    PassProgram(PassProgram&&) noexcept = default;
    PassProgram& operator=(PassProgram&&) noexcept = default;

  private:
    PassProgram() = default;
    UniqueFd link_;
};

}  // namespace ha::bpf
