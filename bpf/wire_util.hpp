// Pure C++ helpers for the heartbeat wire format (bpf/include/ha_wire.h): build, sign, verify and
// parse messages, and the reply the XDP program would send. No syscalls, no clock reads: callers
// pass times in. The user-space responder fallback and the tests use make_reply(), so the kernel
// and user-space answers are the same bytes (tests assert it).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/keyfile.hpp"
#include "common/result.hpp"
#include "ha_wire.h"

namespace ha::bpf {

inline constexpr std::size_t kMsgSize = sizeof(ha_hb_msg);
using MsgBytes = std::array<std::uint8_t, kMsgSize>;

enum class MsgType : std::uint8_t {
    Request = HA_MSG_REQUEST,
    Reply = HA_MSG_REPLY,
    Control = HA_MSG_CONTROL
};
std::string_view to_string(MsgType t);

// A box's state, decoded. station/state carry the raw values of ha::core::StationType/State
// (bpf/ does not depend on core; the agent converts).
struct NodeState {
    std::uint64_t term = 0;
    std::uint8_t station = 0;
    std::uint8_t state = 0;
    bool ha_enabled = false;
    bool healthy = false;
    bool agent_stale = false;  // only ever set by a responder
    bool agent_gone = false;   // only ever set by the XDP responder: the agent's socket is closed
    bool synced = false;
    std::uint16_t proto_version = 0;
    std::string model;    // at most HA_MODEL_LEN bytes
    std::string version;  // at most HA_VERSION_LEN bytes
    friend bool operator==(const NodeState&, const NodeState&) = default;
};

struct Message {
    MsgType type = MsgType::Request;
    std::uint8_t control = 0;  // HA_CTRL_* (== ha::core::PeerMsg) for controls
    std::uint64_t seq = 0;
    std::uint64_t sent_ns = 0;
    std::uint64_t reply_ns = 0;     // replies
    std::uint64_t target_term = 0;  // controls: the receiver's term as the sender saw it
    NodeState state;
};

// seq = epoch << 32 | counter (see ha_wire.h for how the agent picks the epoch).
constexpr std::uint64_t make_seq(std::uint32_t epoch, std::uint32_t counter) {
    return (std::uint64_t{epoch} << 32) | counter;
}

// Encodes a state; model/version longer than the field are refused (never silently cut).
Result<ha_node_state> to_wire(const NodeState& s);
NodeState from_wire(const ha_node_state& s);

std::uint64_t compute_mac(const Key& key, const ha_hb_msg& msg);

MsgBytes build_request(const ha_node_state& self, const Key& key, std::uint64_t seq,
                       std::uint64_t sent_ns);
// control: HA_CTRL_* value. target_term: the receiver's term as the sender last saw it.
MsgBytes build_control(std::uint8_t control, const ha_node_state& self, const Key& key,
                       std::uint64_t seq, std::uint64_t sent_ns, std::uint64_t target_term);

// Checks length, magic, wire version, type and MAC; errors name what was wrong. Replay checks
// are the caller's (it knows its window / outstanding requests).
Result<Message> parse_message(std::span<const std::uint8_t> payload, const Key& key);

// The reply a responder sends for `request` (which must already be verified): the request's seq and
// sent_ns echoed, reply_ns = now_ns, state = responder's state with AGENT_STALE set and HEALTHY
// cleared when now_ns > alive_until_ns, signed. Byte-identical to the XDP program's reply payload.
MsgBytes make_reply(std::span<const std::uint8_t> request, const ha_node_state& responder,
                    const Key& key, std::uint64_t now_ns, std::uint64_t alive_until_ns);

// The user-space responder (fallback when XDP cannot attach, see bpf/README.md): the checks the XDP
// program makes above L2 (length, magic, version, type, MAC, replay), then make_reply(). The
// peer-MAC check is the caller's: it needs the frame's source MAC, which a UDP socket does not see.
// `last_seq` is the replay window (highest accepted seq), advanced on success.
Result<MsgBytes> answer_request(std::span<const std::uint8_t> payload, const Key& key,
                                const ha_agent_state& self, std::uint64_t now_ns,
                                std::uint64_t& last_seq);

}  // namespace ha::bpf
