/* The heartbeat wire format and every BPF map key/value struct, shared by ha_xdp.bpf.c and C++.
 *
 * Plain C, <linux/types.h> only. Fixed-width fields, explicit padding, no bool/enum/bitfields.
 * Multi-byte wire fields are little-endian (__le*): SipHash reads its input little-endian and both
 * supported targets (x86_64, arm64) are little-endian, so neither side converts; wire_util.cpp
 * asserts a little-endian host. Map values are host order (they never leave the box).
 *
 * Heartbeat datagram = UDP payload of exactly sizeof(struct ha_hb_msg) bytes, to the heartbeat
 * port. request (1): "I am alive, here is my state; answer with yours". Sent by BOTH boxes. reply
 * (2): the responder's state, echoing the request's seq and sent_ns (RTT = now - sent_ns). control
 * (3): a one-shot command (HA_CTRL_*), same values as ha::core::PeerMsg. mac = SipHash-2-4(key,
 * bytes [0, HA_MSG_MAC_OFF)), key = the 128-bit shared key file.
 *
 * Sequence numbers (replay protection): seq = ((__u64)epoch << 32) | counter. One counter per
 * sending agent, shared by requests and controls, incremented per message. epoch must grow on every
 * agent start: the agent uses max(persisted_epoch + 1, CLOCK_REALTIME seconds) and persists it
 * before sending, so neither a reset clock nor a lost state file can reuse an old epoch. The
 * receiver accepts a request/control only if seq > the last accepted one (per receiving NIC);
 * replies are accepted by the requester only if seq matches a request it has outstanding.
 */
#ifndef HA_WIRE_H
#define HA_WIRE_H

#include <linux/types.h>

#ifdef __cplusplus
#define HA_WIRE_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define HA_WIRE_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
#define HA_WIRE_OFFSETOF(type, field) __builtin_offsetof(type, field)

#define HA_WIRE_MAGIC 0x42484148u /* "HAHB" read as little-endian bytes */
#define HA_WIRE_VERSION 1
#define HA_HB_DEFAULT_PORT 9527

/* ha_hb_msg.msg_type */
#define HA_MSG_REQUEST 1
#define HA_MSG_REPLY 2
#define HA_MSG_CONTROL 3

/* ha_hb_msg.control (msg_type == HA_MSG_CONTROL); values of ha::core::PeerMsg */
#define HA_CTRL_TAKEOVER_NOW 1
#define HA_CTRL_FENCE 2
#define HA_CTRL_DISABLE_HA 3

/* ha_node_state.station: values of ha::core::StationType */
#define HA_STATION_PRIMARY 1
#define HA_STATION_SECONDARY 2

/* ha_node_state.flags */
#define HA_FLAG_HA_ENABLED 0x01
#define HA_FLAG_HEALTHY 0x02
/* Set by the responder (XDP or user space) when the agent's alive_until_ns has passed; HEALTHY is
 * then cleared too: the kernel never claims health the agent has not vouched for. */
#define HA_FLAG_AGENT_STALE 0x04
#define HA_FLAG_SYNCED 0x08
/* Set by the XDP responder (with AGENT_STALE) when the agent's lifeline socket (on 127.0.0.1, see
 * agent_gone() in ha_xdp.bpf.c) no longer exists: the agent process exited (crash, kill -9). Its
 * kernel closed the socket at once, so the peer learns it within one request instead of after a
 * stale tick. */
#define HA_FLAG_AGENT_GONE 0x10

#define HA_MODEL_LEN 16
#define HA_VERSION_LEN 16

/* One box's state as it travels on the wire (and sits in ha_state / ha_peer). */
struct ha_node_state {
    __le64 term;
    __u8 station; /* HA_STATION_* */
    __u8 state;   /* ha::core::State */
    __u8 flags;   /* HA_FLAG_* */
    __u8 pad0;
    __le16 proto_version;
    __u16 pad1;
    char model[HA_MODEL_LEN];     /* NUL-padded, not necessarily NUL-terminated */
    char version[HA_VERSION_LEN]; /* NUL-padded, not necessarily NUL-terminated */
};
HA_WIRE_ASSERT(sizeof(struct ha_node_state) == 48, "ha_node_state size");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_node_state, flags) == 10, "ha_node_state.flags");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_node_state, model) == 16, "ha_node_state.model");

struct ha_hb_msg {
    __le32 magic; /* HA_WIRE_MAGIC */
    __u8 wire_version;
    __u8 msg_type; /* HA_MSG_* */
    __u8 control;  /* HA_CTRL_* for controls, 0 otherwise */
    __u8 pad0;
    __le64 seq;     /* request/control: sender's sequence; reply: the request's, echoed */
    __le64 sent_ns; /* request/control: sender's CLOCK_MONOTONIC; reply: the request's, echoed */
    union {
        __le64 reply_ns;        /* reply: responder's CLOCK_MONOTONIC when answering */
        __le64 target_term;     /* control: the receiver's term as the sender last saw it; the
                                   receiver drops a control aimed at a term it has left (a stale one,
                                   e.g. delivered late from a neighbour queue after a link came back) */
    };                          /* request: 0 */
    struct ha_node_state state; /* the sender's state */
    __le64 mac;                 /* SipHash-2-4 over every byte before this field */
};
#define HA_MSG_MAC_OFF 80
HA_WIRE_ASSERT(sizeof(struct ha_hb_msg) == 88, "ha_hb_msg size");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_hb_msg, state) == 32, "ha_hb_msg.state");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_hb_msg, mac) == HA_MSG_MAC_OFF, "ha_hb_msg.mac");

/* ---- map values (host order) ---- */

/* ha_config[0]: written by the agent at start and on reload; read by XDP. */
struct ha_cfg {
    __u64 key_k0; /* SipHash key: first 8 key-file bytes, little-endian */
    __u64 key_k1;
    __be32 cluster_ip4; /* network order; 0 = none (no fencing) */
    __u8 peer_mac[6];   /* all zero = accept requests from any source MAC */
    __u8 key_set;       /* 0 = no key yet: every request is dropped (counted) */
    __u8 pad0;
    __be16 lifeline_port; /* network order; nonzero: the agent's lifeline, a UDP socket bound to
                             127.0.0.1 on this port, must exist, else the agent is gone (replies
                             say AGENT_GONE, the LAN program fences) */
    __u16 pad1;
};
HA_WIRE_ASSERT(sizeof(struct ha_cfg) == 32, "ha_cfg size");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_cfg, lifeline_port) == 28, "ha_cfg.lifeline_port");

/* ha_state[0]: written by the agent every loop iteration (one bpf_map_update_elem). */
struct ha_agent_state {
    struct ha_node_state self; /* the responder's state put into replies */
    __u64 alive_until_ns;      /* CLOCK_MONOTONIC; past it, replies are stale and LAN fences */
};
HA_WIRE_ASSERT(sizeof(struct ha_agent_state) == 56, "ha_agent_state size");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_agent_state, alive_until_ns) == 48, "alive_until_ns");

/* ha_fence[0]: set by XDP on an authenticated Fence control, cleared by the agent. Separate from
 * ha_state so the agent's per-loop state write cannot erase a fence the kernel just set. */
struct ha_fence_val {
    __u64 fenced_at_ns; /* bpf_ktime_get_ns() when set by a Fence message */
    __u64 fence_seq;    /* seq of that message */
    __u32 fenced;       /* nonzero = drop cluster-IP traffic (LAN program only) */
    __u32 pad0;
};
HA_WIRE_ASSERT(sizeof(struct ha_fence_val) == 24, "ha_fence_val size");

/* ha_peer[0]: what the last valid request/control from the peer said. Written by XDP in the order
 * seq_end, body, seq_begin; a user-space copy is consistent iff seq_begin == seq_end. */
struct ha_peer_val {
    __u64 seq_begin;
    __u64 last_seq;             /* highest accepted seq: the replay window */
    __u64 last_request_ns;      /* bpf_ktime_get_ns() of the last valid request; 0 = none yet */
    __u64 peer_sent_ns;         /* the peer's sent_ns in it (its clock) */
    __u64 last_control_ns;      /* bpf_ktime_get_ns() of the last valid control; 0 = none */
    struct ha_node_state state; /* the peer's state from the last valid request/control */
    __u8 src_mac[6];
    __u8 last_control; /* HA_CTRL_* of the last valid control */
    __u8 pad0;
    __be32 src_ip4;
    __u32 pad1;
    __u64 seq_end;
};
HA_WIRE_ASSERT(sizeof(struct ha_peer_val) == 112, "ha_peer_val size");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_peer_val, seq_end) == 104, "ha_peer_val.seq_end");

/* ha_stats_v2: per-CPU array, one entry; field N is counter index N (user space sums CPUs). */
#define HA_CNT_RX_REQUEST 0     /* valid request answered with XDP_TX */
#define HA_CNT_TX_STALE 1       /* of those, answered with AGENT_STALE */
#define HA_CNT_RX_CONTROL 2     /* valid control passed to the agent */
#define HA_CNT_RX_FENCE 3       /* of those, Fence (fence flag set) */
#define HA_CNT_PASS_REPLY 4     /* replies passed to the agent's socket (it verifies them) */
#define HA_CNT_DROP_SHORT 5     /* truncated frame / UDP length not sizeof(ha_hb_msg) */
#define HA_CNT_DROP_IP_OPTS 6   /* heartbeat with IPv4 options */
#define HA_CNT_DROP_FRAG 7      /* heartbeat in an IPv4 fragment */
#define HA_CNT_DROP_MAGIC 8     /* wrong magic or unknown msg_type */
#define HA_CNT_DROP_VERSION 9   /* wrong wire version */
#define HA_CNT_DROP_PEER_MAC 10 /* source MAC is not the configured peer MAC */
#define HA_CNT_DROP_BAD_MAC 11  /* SipHash MAC mismatch */
#define HA_CNT_DROP_REPLAY 12   /* seq not greater than the last accepted */
#define HA_CNT_DROP_NO_KEY 13   /* no key configured yet */
#define HA_CNT_FENCE_ARP 14     /* cluster-IP ARP dropped while fenced (LAN program) */
#define HA_CNT_FENCE_IP4 15     /* IPv4 to the cluster IP dropped while fenced (LAN program) */
#define HA_CNT_TX_GONE 16       /* of the requests answered, answered with AGENT_GONE */
#define HA_CNT_FENCE_TX 17 /* ARP/IPv4 sent from the cluster IP dropped while fenced (LAN tc) */
#define HA_CNT_MAX 18

struct ha_counters {
    __u64 rx_request;
    __u64 tx_stale;
    __u64 rx_control;
    __u64 rx_fence;
    __u64 pass_reply;
    __u64 drop_short;
    __u64 drop_ip_opts;
    __u64 drop_frag;
    __u64 drop_magic;
    __u64 drop_version;
    __u64 drop_peer_mac;
    __u64 drop_bad_mac;
    __u64 drop_replay;
    __u64 drop_no_key;
    __u64 fence_arp;
    __u64 fence_ip4;
    __u64 tx_gone;
    __u64 fence_tx;
};
HA_WIRE_ASSERT(sizeof(struct ha_counters) == 8UL * HA_CNT_MAX, "ha_counters size");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_counters, drop_replay) == 8UL * HA_CNT_DROP_REPLAY,
               "ha_counters index");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_counters, fence_ip4) == 8UL * HA_CNT_FENCE_IP4,
               "ha_counters index");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_counters, tx_gone) == 8UL * HA_CNT_TX_GONE,
               "ha_counters index");
HA_WIRE_ASSERT(HA_WIRE_OFFSETOF(struct ha_counters, fence_tx) == 8UL * HA_CNT_FENCE_TX,
               "ha_counters index");

#endif /* HA_WIRE_H */
