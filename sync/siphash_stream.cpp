#include "sync/siphash_stream.hpp"

#include <cstring>

namespace ha::sync {

namespace {
std::uint64_t rotl(std::uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}
std::uint64_t get_u64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
}  // namespace

SipHashStream::SipHashStream(const Key& key)
    : v0_(0x736f6d6570736575ULL ^ key.k0),
      v1_(0x646f72616e646f6dULL ^ key.k1),
      v2_(0x6c7967656e657261ULL ^ key.k0),
      v3_(0x7465646279746573ULL ^ key.k1) {}

void SipHashStream::compress(std::uint64_t m) {
    v3_ ^= m;
    for (int i = 0; i < 2; ++i) {
        v0_ += v1_;
        v1_ = rotl(v1_, 13);
        v1_ ^= v0_;
        v0_ = rotl(v0_, 32);
        v2_ += v3_;
        v3_ = rotl(v3_, 16);
        v3_ ^= v2_;
        v0_ += v3_;
        v3_ = rotl(v3_, 21);
        v3_ ^= v0_;
        v2_ += v1_;
        v1_ = rotl(v1_, 17);
        v1_ ^= v2_;
        v2_ = rotl(v2_, 32);
    }
    v0_ ^= m;
}

void SipHashStream::update(const void* data, std::size_t len) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    total_ += len;
    if (tail_len_ > 0) {
        while (len > 0 && tail_len_ < 8) {
            tail_[tail_len_++] = *p++;
            --len;
        }
        if (tail_len_ < 8) return;
        compress(get_u64(tail_.data()));
        tail_len_ = 0;
    }
    while (len >= 8) {
        compress(get_u64(p));
        p += 8;
        len -= 8;
    }
    std::memcpy(tail_.data(), p, len);
    tail_len_ = len;
}

void SipHashStream::update_u64(std::uint64_t w) {
    if (tail_len_ != 0) {
        std::array<std::uint8_t, 8> b{};
        for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(w >> (8 * i));
        update(b.data(), b.size());
        return;
    }
    total_ += 8;
    compress(w);
}

std::uint64_t SipHashStream::finish() const {
    SipHashStream s = *this;
    std::uint64_t b = total_ << 56;
    for (std::size_t i = 0; i < s.tail_len_; ++i)
        b |= static_cast<std::uint64_t>(s.tail_[i]) << (8 * i);
    s.compress(b);
    s.v2_ ^= 0xff;
    // Four finalisation rounds = two double-round compress() calls with a zero message.
    for (int r = 0; r < 2; ++r) s.compress(0);
    return s.v0_ ^ s.v1_ ^ s.v2_ ^ s.v3_;
}

}  // namespace ha::sync
