/* SipHash-2-4 (Aumasson & Bernstein, 2012) over a byte buffer with a 128-bit key.
 * Plain C, included by BPF programs and by C++: the heartbeat MAC and the sync handshake are the
 * same function on both sides of the kernel boundary. In BPF, call it with a compile-time length
 * on a stack copy so the loop unrolls and every read is bounded. */
#ifndef HA_SIPHASH_H
#define HA_SIPHASH_H

#include <linux/types.h>

/* C casts are the only casts C has; C++ includers get them without -Wold-style-cast noise. */
#ifdef __cplusplus
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wconversion"
#endif

#define HA_SIP_ROTL(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))
#define HA_SIP_ROUND(v0, v1, v2, v3)  \
    do {                              \
        (v0) += (v1);                 \
        (v1) = HA_SIP_ROTL((v1), 13); \
        (v1) ^= (v0);                 \
        (v0) = HA_SIP_ROTL((v0), 32); \
        (v2) += (v3);                 \
        (v3) = HA_SIP_ROTL((v3), 16); \
        (v3) ^= (v2);                 \
        (v0) += (v3);                 \
        (v3) = HA_SIP_ROTL((v3), 21); \
        (v3) ^= (v0);                 \
        (v2) += (v1);                 \
        (v1) = HA_SIP_ROTL((v1), 17); \
        (v1) ^= (v2);                 \
        (v2) = HA_SIP_ROTL((v2), 32); \
    } while (0)

static inline __u64 ha_sip_load_le64(const __u8* p) {
    return (__u64)p[0] | ((__u64)p[1] << 8) | ((__u64)p[2] << 16) | ((__u64)p[3] << 24) |
           ((__u64)p[4] << 32) | ((__u64)p[5] << 40) | ((__u64)p[6] << 48) | ((__u64)p[7] << 56);
}

/* key: k0 = first 8 key bytes little-endian, k1 = next 8. */
static inline __u64 ha_siphash24(__u64 k0, __u64 k1, const __u8* in, __u32 len) {
    __u64 v0 = 0x736f6d6570736575ULL ^ k0;
    __u64 v1 = 0x646f72616e646f6dULL ^ k1;
    __u64 v2 = 0x6c7967656e657261ULL ^ k0;
    __u64 v3 = 0x7465646279746573ULL ^ k1;
    __u32 full = len & ~7u;
    __u32 i;
    __u64 b = ((__u64)len) << 56;
    __u64 m;

    for (i = 0; i < full; i += 8) {
        m = ha_sip_load_le64(in + i);
        v3 ^= m;
        HA_SIP_ROUND(v0, v1, v2, v3);
        HA_SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    switch (len & 7) {
        case 7:
            b |= ((__u64)in[full + 6]) << 48; /* fall through */
        case 6:
            b |= ((__u64)in[full + 5]) << 40; /* fall through */
        case 5:
            b |= ((__u64)in[full + 4]) << 32; /* fall through */
        case 4:
            b |= ((__u64)in[full + 3]) << 24; /* fall through */
        case 3:
            b |= ((__u64)in[full + 2]) << 16; /* fall through */
        case 2:
            b |= ((__u64)in[full + 1]) << 8; /* fall through */
        case 1:
            b |= ((__u64)in[full + 0]);
            break;
        case 0:
            break;
    }
    v3 ^= b;
    HA_SIP_ROUND(v0, v1, v2, v3);
    HA_SIP_ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    HA_SIP_ROUND(v0, v1, v2, v3);
    HA_SIP_ROUND(v0, v1, v2, v3);
    HA_SIP_ROUND(v0, v1, v2, v3);
    HA_SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#ifdef __cplusplus
#pragma GCC diagnostic pop
#endif

#endif /* HA_SIPHASH_H */
