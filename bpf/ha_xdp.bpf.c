/* XDP heartbeat responder and in-kernel self-fence.
 *
 * Heartbeat NIC and LAN NIC run the same program (rodata is_lan differs). Valid requests to the
 * heartbeat port are answered in place with XDP_TX; replies and controls go up to the agent's
 * socket; bad heartbeats are dropped and counted; everything else passes untouched. On the LAN NIC,
 * traffic for the cluster IP is dropped while the agent is stale or gone, or after a Fence from the
 * peer.
 * IPv4 only (see bpf/README.md). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ha_siphash.h"
#include "ha_wire.h"

/* Set through skel->rodata before load. */
const volatile __u16 hb_port = HA_HB_DEFAULT_PORT;
const volatile __u8 is_lan = 0;

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ha_cfg);
} ha_config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ha_agent_state);
} ha_state SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ha_fence_val);
} ha_fence SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ha_peer_val);
} ha_peer SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ha_counters);
} ha_stats_v2 SEC(".maps");

#define HB_UDP_LEN (sizeof(struct udphdr) + sizeof(struct ha_hb_msg))
#define HB_IP_LEN (sizeof(struct iphdr) + HB_UDP_LEN)
#define HB_FRAME_LEN (sizeof(struct ethhdr) + HB_IP_LEN)
#define HB_MSG_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define CONTINUE (-1)

/* <linux/if_arp.h> drags in libc headers, so the ARP header (RFC 826) is spelled out here. */
#define ARPHRD_ETHER 1
struct arphdr {
    __be16 ar_hrd;
    __be16 ar_pro;
    __u8 ar_hln;
    __u8 ar_pln;
    __be16 ar_op;
};
/* ARP body for Ethernet/IPv4, after struct arphdr. */
struct arp_eth_ip4 {
    __u8 sha[ETH_ALEN];
    __be32 spa;
    __u8 tha[ETH_ALEN];
    __be32 tpa;
} __attribute__((packed));

/* UDP checksum input (RFC 768): pseudo-header, UDP header, payload. 108 bytes, a multiple of 4 as
 * bpf_csum_diff requires. */
struct udp_csum_buf {
    __be32 saddr;
    __be32 daddr;
    __u8 zero;
    __u8 proto;
    __be16 udp_len;
    struct udphdr udp;
    struct ha_hb_msg msg;
};

static __always_inline void count(__u32 idx) {
    __u32 key = 0;
    struct ha_counters* c = bpf_map_lookup_elem(&ha_stats_v2, &key);
    if (c && idx < HA_CNT_MAX) ((__u64*)c)[idx]++;
}

static __always_inline __u16 csum_fold(__u64 sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

static __always_inline __u64 msg_mac(const struct ha_cfg* cfg, const struct ha_hb_msg* msg) {
    return ha_siphash24(cfg->key_k0, cfg->key_k1, (const __u8*)msg, HA_MSG_MAC_OFF);
}

static __always_inline int mac_is_zero(const __u8* m) {
    return (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]) == 0;
}

static __always_inline int mac_equal(const __u8* a, const __u8* b) {
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
           a[5] == b[5];
}

/* Is the agent's judgement past its expiry? alive_until_ns == 0 (never written) counts as stale. */
static __always_inline int agent_stale(const struct ha_agent_state* st, __u64 now) {
    return now > st->alive_until_ns;
}

/* Has the agent exited (crash, kill -9)? Its lifeline socket is gone: the kernel closes a dead
 * process's files as it exits, so this is known at the next packet, long before a stale tick
 * would say so. The lifeline is a socket nothing else uses (no I/O in flight keeps it open after
 * the process died). A hung (stopped) agent still holds it; the tick covers that case. */
static __always_inline int agent_gone(void* ctx, const struct ha_cfg* cfg) {
    if (cfg->lifeline_port == 0) return 0;
    struct bpf_sock_tuple t = {};
    t.ipv4.daddr = bpf_htonl(0x7f000001); /* 127.0.0.1 */
    t.ipv4.dport = cfg->lifeline_port;
    struct bpf_sock* sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
    if (!sk) return 1;
    bpf_sk_release(sk);
    return 0;
}

/* Is this box fenced: an authenticated Fence from the peer, a stale tick, or the agent gone? */
static __always_inline int fenced_now(void* ctx, const struct ha_cfg* cfg) {
    __u32 key = 0;
    struct ha_agent_state* st = bpf_map_lookup_elem(&ha_state, &key);
    struct ha_fence_val* fence = bpf_map_lookup_elem(&ha_fence, &key);
    if (!st || !fence) return 0;
    return fence->fenced || agent_stale(st, bpf_ktime_get_ns()) || agent_gone(ctx, cfg);
}

/* The cluster IP in an Ethernet frame: as ARP target or sender (want_sender: sender only), or as
 * IPv4 destination (want_sender: source). Returns the counter to bump when it is dropped, or -1. */
static __always_inline int cluster_ip_frame(struct ethhdr* eth, void* data_end, __be32 vip,
                                            int want_sender) {
    if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
        struct arphdr* arp = (void*)(eth + 1);
        struct arp_eth_ip4* body = (void*)(arp + 1);
        if ((void*)(body + 1) > data_end) return -1;
        if (arp->ar_hrd != bpf_htons(ARPHRD_ETHER) || arp->ar_pro != bpf_htons(ETH_P_IP) ||
            arp->ar_hln != ETH_ALEN || arp->ar_pln != 4)
            return -1;
        if (body->spa == vip || (!want_sender && body->tpa == vip))
            return want_sender ? HA_CNT_FENCE_TX : HA_CNT_FENCE_ARP;
        return -1;
    }
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr* ip = (void*)(eth + 1);
        if ((void*)(ip + 1) > data_end) return -1;
        if ((want_sender ? ip->saddr : ip->daddr) == vip)
            return want_sender ? HA_CNT_FENCE_TX : HA_CNT_FENCE_IP4;
    }
    return -1;
}

/* Should this frame be dropped by the fence: it carries the cluster IP (to it on the way in,
 * from it on the way out) and the box is fenced? Counts it when so. */
static __always_inline int fence_drops(void* ctx, struct ethhdr* eth, void* data_end,
                                       int outgoing) {
    __u32 key = 0;
    struct ha_cfg* cfg = bpf_map_lookup_elem(&ha_config, &key);
    if (!cfg || cfg->cluster_ip4 == 0) return 0;
    /* Only frames with the cluster IP pay for the checks below. */
    const int counter = cluster_ip_frame(eth, data_end, cfg->cluster_ip4, outgoing);
    if (counter < 0 || !fenced_now(ctx, cfg)) return 0;
    count((__u32)counter);
    return 1;
}

/* Authenticate a request/control and advance the replay window. Returns a verdict or CONTINUE. */
static __always_inline int accept_from_peer(const struct ha_cfg* cfg, struct ha_peer_val* peer,
                                            const struct ethhdr* eth, const struct ha_hb_msg* msg) {
    if (!cfg->key_set) {
        count(HA_CNT_DROP_NO_KEY);
        return XDP_DROP;
    }
    if (!mac_is_zero(cfg->peer_mac) && !mac_equal(cfg->peer_mac, eth->h_source)) {
        count(HA_CNT_DROP_PEER_MAC);
        return XDP_DROP;
    }
    if (msg_mac(cfg, msg) != msg->mac) {
        count(HA_CNT_DROP_BAD_MAC);
        return XDP_DROP;
    }
    /* Two CPUs may race on the same map; the compare-and-swap lets exactly one of them take a
     * given seq, so a duplicated frame cannot be accepted twice. */
    __u64 last = peer->last_seq;
    if (msg->seq <= last || __sync_val_compare_and_swap(&peer->last_seq, last, msg->seq) != last) {
        count(HA_CNT_DROP_REPLAY);
        return XDP_DROP;
    }
    return CONTINUE;
}

static __always_inline void record_peer(struct ha_peer_val* peer, const struct ethhdr* eth,
                                        const struct iphdr* ip, const struct ha_hb_msg* msg,
                                        __u64 now) {
    /* seqlock-style: end first, begin last, so a front-to-back copy with begin == end is whole. */
    peer->seq_end = msg->seq;
    asm volatile("" ::: "memory");
    __builtin_memcpy(&peer->state, &msg->state, sizeof(peer->state));
    __builtin_memcpy(peer->src_mac, eth->h_source, ETH_ALEN);
    peer->src_ip4 = ip->saddr;
    if (msg->msg_type == HA_MSG_REQUEST) {
        peer->last_request_ns = now;
        peer->peer_sent_ns = msg->sent_ns;
    } else {
        peer->last_control_ns = now;
        peer->last_control = msg->control;
    }
    asm volatile("" ::: "memory");
    peer->seq_begin = msg->seq;
}

static __always_inline int send_reply(struct xdp_md* ctx, const struct ha_cfg* cfg,
                                      const struct ha_hb_msg* req, __u64 now) {
    const int gone = agent_gone(ctx, cfg);
    __u32 key = 0;
    struct ha_agent_state* st = bpf_map_lookup_elem(&ha_state, &key);
    if (!st) return XDP_ABORTED;

    struct udp_csum_buf buf = {};
    struct ha_hb_msg* rep = &buf.msg;
    rep->magic = HA_WIRE_MAGIC;
    rep->wire_version = HA_WIRE_VERSION;
    rep->msg_type = HA_MSG_REPLY;
    rep->seq = req->seq;
    rep->sent_ns = req->sent_ns;
    rep->reply_ns = now;
    __builtin_memcpy(&rep->state, &st->self, sizeof(rep->state));
    if (gone || agent_stale(st, now)) {
        rep->state.flags = (__u8)((rep->state.flags & ~HA_FLAG_HEALTHY) | HA_FLAG_AGENT_STALE);
        count(HA_CNT_TX_STALE);
    }
    if (gone) {
        rep->state.flags |= HA_FLAG_AGENT_GONE;
        count(HA_CNT_TX_GONE);
    }
    rep->mac = msg_mac(cfg, rep);

    void* data = (void*)(long)ctx->data;
    void* data_end = (void*)(long)ctx->data_end;
    if (data + HB_FRAME_LEN > data_end) return XDP_ABORTED;
    struct ethhdr* eth = data;
    struct iphdr* ip = (void*)(eth + 1);
    struct udphdr* udp = (void*)(ip + 1);

    __u8 tmp_mac[ETH_ALEN];
    __builtin_memcpy(tmp_mac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, tmp_mac, ETH_ALEN);

    __be32 tmp_ip = ip->saddr;
    ip->saddr = ip->daddr;
    ip->daddr = tmp_ip;
    ip->ttl = 64;
    ip->check = 0;
    __u64 sum = bpf_csum_diff(0, 0, (__be32*)ip, sizeof(*ip), 0);
    ip->check = csum_fold(sum);

    __be16 tmp_port = udp->source;
    udp->source = udp->dest;
    udp->dest = tmp_port;
    udp->check = 0;

    /* Full UDP checksum over the datagram. An incremental (RFC 1624) patch of the request's
     * checksum is wrong for frames a local veth peer sent with CHECKSUM_PARTIAL: their check field
     * holds only the pseudo-header sum. */
    buf.saddr = ip->saddr;
    buf.daddr = ip->daddr;
    buf.proto = IPPROTO_UDP;
    buf.udp_len = bpf_htons(HB_UDP_LEN);
    __builtin_memcpy(&buf.udp, udp, sizeof(buf.udp));
    sum = bpf_csum_diff(0, 0, (__be32*)&buf, sizeof(buf), 0);
    __u16 check = csum_fold(sum);
    udp->check = check ? check : 0xffff; /* RFC 768: a computed 0 is sent as all ones */

    if (bpf_xdp_store_bytes(ctx, HB_MSG_OFF, rep, sizeof(*rep)) < 0) return XDP_ABORTED;
    count(HA_CNT_RX_REQUEST);
    return XDP_TX;
}

static __always_inline int handle_ipv4(struct xdp_md* ctx, struct ethhdr* eth, void* data_end) {
    struct iphdr* ip = (void*)(eth + 1);
    if ((void*)(ip + 1) > data_end) return XDP_PASS;
    if (ip->version != 4 || ip->protocol != IPPROTO_UDP) return XDP_PASS;
    /* A non-first fragment has no UDP header: it cannot be ours, leave it to the stack. */
    if (ip->frag_off & bpf_htons(0x1fff)) return XDP_PASS;
    __u32 ihl = (__u32)ip->ihl * 4;
    if (ihl < sizeof(*ip)) return XDP_PASS;
    struct udphdr* udp = (void*)ip + ihl;
    if ((void*)(udp + 1) > data_end) return XDP_PASS;
    if (udp->dest != bpf_htons(hb_port)) return XDP_PASS;

    /* From here on it is addressed to the heartbeat port: malformed means dropped and counted.
     * Our own senders never fragment or add options, so neither is worth parsing. */
    if (ip->frag_off & bpf_htons(0x2000)) {
        count(HA_CNT_DROP_FRAG);
        return XDP_DROP;
    }
    if (ihl != sizeof(*ip)) {
        count(HA_CNT_DROP_IP_OPTS);
        return XDP_DROP;
    }
    if (bpf_ntohs(ip->tot_len) != HB_IP_LEN || bpf_ntohs(udp->len) != HB_UDP_LEN ||
        data_end - (void*)eth < (long)HB_FRAME_LEN) {
        count(HA_CNT_DROP_SHORT);
        return XDP_DROP;
    }

    struct ha_hb_msg msg;
    if (bpf_xdp_load_bytes(ctx, HB_MSG_OFF, &msg, sizeof(msg)) < 0) {
        count(HA_CNT_DROP_SHORT);
        return XDP_DROP;
    }
    if (msg.magic != HA_WIRE_MAGIC) {
        count(HA_CNT_DROP_MAGIC);
        return XDP_DROP;
    }
    if (msg.wire_version != HA_WIRE_VERSION) {
        count(HA_CNT_DROP_VERSION);
        return XDP_DROP;
    }
    __u32 key = 0;
    struct ha_cfg* cfg = bpf_map_lookup_elem(&ha_config, &key);
    if (!cfg) return XDP_ABORTED;
    if (msg.msg_type == HA_MSG_REPLY) {
        /* The agent's socket cannot see a reply's source MAC: a box other than the configured peer
         * (the guide's "Replacing FCM in HA") must not pass for it by answering our requests. */
        if (!mac_is_zero(cfg->peer_mac) && !mac_equal(cfg->peer_mac, eth->h_source)) {
            count(HA_CNT_DROP_PEER_MAC);
            return XDP_DROP;
        }
        count(HA_CNT_PASS_REPLY);
        return XDP_PASS;
    }
    if (msg.msg_type != HA_MSG_REQUEST && msg.msg_type != HA_MSG_CONTROL) {
        count(HA_CNT_DROP_MAGIC);
        return XDP_DROP;
    }

    struct ha_peer_val* peer = bpf_map_lookup_elem(&ha_peer, &key);
    if (!peer) return XDP_ABORTED;
    int verdict = accept_from_peer(cfg, peer, eth, &msg);
    if (verdict != CONTINUE) return verdict;

    __u64 now = bpf_ktime_get_ns();
    record_peer(peer, eth, ip, &msg, now);
    if (msg.msg_type == HA_MSG_CONTROL) {
        struct ha_agent_state* st = bpf_map_lookup_elem(&ha_state, &key);
        /* A Fence aimed at a term this box has since left (promoted again) is stale. */
        if (msg.control == HA_CTRL_FENCE && st && msg.target_term >= st->self.term) {
            struct ha_fence_val* fence = bpf_map_lookup_elem(&ha_fence, &key);
            if (fence) {
                fence->fenced_at_ns = now;
                fence->fence_seq = msg.seq;
                fence->fenced = 1;
            }
            count(HA_CNT_RX_FENCE);
        }
        count(HA_CNT_RX_CONTROL);
        return XDP_PASS;
    }
    return send_reply(ctx, cfg, &msg, now);
}

SEC("xdp")
int ha_xdp_hb(struct xdp_md* ctx) {
    void* data = (void*)(long)ctx->data;
    void* data_end = (void*)(long)ctx->data_end;
    struct ethhdr* eth = data;
    if ((void*)(eth + 1) > data_end) return XDP_PASS;

    /* LAN NIC: nothing reaches a fenced box for the cluster IP (ha_tc_fence covers what it
     * sends). */
    if (is_lan && fence_drops(ctx, eth, data_end, 0)) return XDP_DROP;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) return handle_ipv4(ctx, eth, data_end);
    return XDP_PASS;
}

/* LAN egress (tc clsact): while fenced, stale or gone, nothing leaves this box with the cluster IP
 * as its sender, no ARP and no IPv4. A box whose agent died keeps the address in its kernel and
 * may keep its PBX running: without this, a retransmitted SIP answer or the kernel's own ARP
 * request (which phones learn the sender's MAC from) would still speak for the cluster IP after
 * the peer took it over. Attached with a filter, not a link: it stays when the agent dies. */
SEC("tc")
int ha_tc_fence(struct __sk_buff* skb) {
    void* data = (void*)(long)skb->data;
    void* data_end = (void*)(long)skb->data_end;
    struct ethhdr* eth = data;
    if ((void*)(eth + 1) > data_end) return TC_ACT_OK;
    return fence_drops(skb, eth, data_end, 1) ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
