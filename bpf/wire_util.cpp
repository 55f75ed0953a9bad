#include "wire_util.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace ha::bpf {

// The wire is little-endian and ha_hb_msg is copied as-is (see ha_wire.h).
static_assert(std::endian::native == std::endian::little, "heartbeat wire assumes a LE host");

namespace {

MsgBytes to_bytes(const ha_hb_msg& msg) {
    MsgBytes out{};
    std::memcpy(out.data(), &msg, sizeof(msg));
    return out;
}

ha_hb_msg header(std::uint8_t type, std::uint8_t control, const ha_node_state& self,
                 std::uint64_t seq, std::uint64_t sent_ns) {
    ha_hb_msg msg{};
    msg.magic = HA_WIRE_MAGIC;
    msg.wire_version = HA_WIRE_VERSION;
    msg.msg_type = type;
    msg.control = control;
    msg.seq = seq;
    msg.sent_ns = sent_ns;
    msg.state = self;
    return msg;
}

std::string field_string(const char* p, std::size_t n) {
    return std::string(p, static_cast<std::size_t>(std::find(p, p + n, '\0') - p));
}

}  // namespace

std::string_view to_string(MsgType t) {
    switch (t) {
        case MsgType::Request:
            return "request";
        case MsgType::Reply:
            return "reply";
        case MsgType::Control:
            return "control";
    }
    return "?";
}

Result<ha_node_state> to_wire(const NodeState& s) {
    if (s.model.size() > HA_MODEL_LEN)
        return fail(fmt::format("model '{}' longer than {} bytes", s.model, HA_MODEL_LEN));
    if (s.version.size() > HA_VERSION_LEN)
        return fail(fmt::format("version '{}' longer than {} bytes", s.version, HA_VERSION_LEN));
    ha_node_state w{};
    w.term = s.term;
    w.station = s.station;
    w.state = s.state;
    w.flags = static_cast<std::uint8_t>(
        (s.ha_enabled ? HA_FLAG_HA_ENABLED : 0) | (s.healthy ? HA_FLAG_HEALTHY : 0) |
        (s.agent_stale ? HA_FLAG_AGENT_STALE : 0) | (s.synced ? HA_FLAG_SYNCED : 0) |
        (s.agent_gone ? HA_FLAG_AGENT_GONE : 0));
    w.proto_version = s.proto_version;
    std::memcpy(w.model, s.model.data(), s.model.size());
    std::memcpy(w.version, s.version.data(), s.version.size());
    return w;
}

NodeState from_wire(const ha_node_state& s) {
    NodeState n;
    n.term = s.term;
    n.station = s.station;
    n.state = s.state;
    n.ha_enabled = (s.flags & HA_FLAG_HA_ENABLED) != 0;
    n.healthy = (s.flags & HA_FLAG_HEALTHY) != 0;
    n.agent_stale = (s.flags & HA_FLAG_AGENT_STALE) != 0;
    n.synced = (s.flags & HA_FLAG_SYNCED) != 0;
    n.agent_gone = (s.flags & HA_FLAG_AGENT_GONE) != 0;
    n.proto_version = s.proto_version;
    n.model = field_string(s.model, HA_MODEL_LEN);
    n.version = field_string(s.version, HA_VERSION_LEN);
    return n;
}

std::uint64_t compute_mac(const Key& key, const ha_hb_msg& msg) {
    return siphash(key, &msg, HA_MSG_MAC_OFF);
}

MsgBytes build_request(const ha_node_state& self, const Key& key, std::uint64_t seq,
                       std::uint64_t sent_ns) {
    ha_hb_msg msg = header(HA_MSG_REQUEST, 0, self, seq, sent_ns);
    msg.mac = compute_mac(key, msg);
    return to_bytes(msg);
}

MsgBytes build_control(std::uint8_t control, const ha_node_state& self, const Key& key,
                       std::uint64_t seq, std::uint64_t sent_ns, std::uint64_t target_term) {
    ha_hb_msg msg = header(HA_MSG_CONTROL, control, self, seq, sent_ns);
    msg.target_term = target_term;
    msg.mac = compute_mac(key, msg);
    return to_bytes(msg);
}

Result<Message> parse_message(std::span<const std::uint8_t> payload, const Key& key) {
    if (payload.size() != kMsgSize)
        return fail(fmt::format("heartbeat length {} (expected {})", payload.size(), kMsgSize));
    ha_hb_msg msg{};
    std::memcpy(&msg, payload.data(), sizeof(msg));
    if (msg.magic != HA_WIRE_MAGIC) return fail(fmt::format("heartbeat magic {:#x}", msg.magic));
    if (msg.wire_version != HA_WIRE_VERSION)
        return fail(fmt::format("heartbeat wire version {} (expected {})", msg.wire_version,
                                HA_WIRE_VERSION));
    if (msg.msg_type != HA_MSG_REQUEST && msg.msg_type != HA_MSG_REPLY &&
        msg.msg_type != HA_MSG_CONTROL)
        return fail(fmt::format("heartbeat message type {}", msg.msg_type));
    if (compute_mac(key, msg) != msg.mac)
        return fail(fmt::format("heartbeat MAC mismatch (seq {:#x})", msg.seq),
                    std::errc::permission_denied);
    Message out;
    out.type = static_cast<MsgType>(msg.msg_type);
    out.control = msg.control;
    out.seq = msg.seq;
    out.sent_ns = msg.sent_ns;
    if (msg.msg_type == HA_MSG_REPLY) out.reply_ns = msg.reply_ns;
    if (msg.msg_type == HA_MSG_CONTROL) out.target_term = msg.target_term;
    out.state = from_wire(msg.state);
    return out;
}

MsgBytes make_reply(std::span<const std::uint8_t> request, const ha_node_state& responder,
                    const Key& key, std::uint64_t now_ns, std::uint64_t alive_until_ns) {
    ha_hb_msg req{};
    std::memcpy(&req, request.data(), std::min(request.size(), sizeof(req)));
    ha_hb_msg rep = header(HA_MSG_REPLY, 0, responder, req.seq, req.sent_ns);
    rep.reply_ns = now_ns;
    if (now_ns > alive_until_ns)
        rep.state.flags =
            static_cast<std::uint8_t>((rep.state.flags & ~HA_FLAG_HEALTHY) | HA_FLAG_AGENT_STALE);
    rep.mac = compute_mac(key, rep);
    return to_bytes(rep);
}

Result<MsgBytes> answer_request(std::span<const std::uint8_t> payload, const Key& key,
                                const ha_agent_state& self, std::uint64_t now_ns,
                                std::uint64_t& last_seq) {
    auto msg = parse_message(payload, key);
    if (!msg) return unexpected(msg.error());
    if (msg->type != MsgType::Request)
        return fail(fmt::format("heartbeat {} is not a request", to_string(msg->type)));
    if (msg->seq <= last_seq)
        return fail(fmt::format("heartbeat seq {:#x} replayed (last {:#x})", msg->seq, last_seq),
                    std::errc::operation_not_permitted);
    last_seq = msg->seq;
    return make_reply(payload, self.self, key, now_ns, self.alive_until_ns);
}

}  // namespace ha::bpf
