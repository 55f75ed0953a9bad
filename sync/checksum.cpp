#include "sync/checksum.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace ha::sync {

namespace {

using K = ChecksumKey;

// NH over `bytes` (a multiple of 32) in blocks of kBlockBytes, two sums per block into `out`.
// Written so that GCC vectorises the inner loop (pmuludq); the AVX2 clone doubles its width.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void nh_run(const std::uint32_t* key, const std::uint8_t* p, std::size_t bytes,
            std::uint64_t* out) {
    while (bytes > 0) {
        const std::size_t n = std::min(bytes, K::kBlockBytes) / 4;
        std::uint64_t s0 = 0;
        std::uint64_t s1 = 0;
        for (std::size_t i = 0; i < n; i += 8) {
            std::uint32_t m[8];
            std::memcpy(m, p + i * 4, sizeof m);
            if constexpr (std::endian::native == std::endian::big) {
                for (auto& w : m) w = __builtin_bswap32(w);
            }
            for (std::size_t j = 0; j < 4; ++j) {
                s0 += static_cast<std::uint64_t>(m[j] + key[i + j]) *
                      static_cast<std::uint32_t>(m[j + 4] + key[i + j + 4]);
                s1 += static_cast<std::uint64_t>(m[j] + key[i + j + 4]) *
                      static_cast<std::uint32_t>(m[j + 4] + key[i + j + 8]);
            }
        }
        out[0] = s0;
        out[1] = s1;
        out += 2;
        p += n * 4;
        bytes -= n * 4;
    }
}

}  // namespace

ChecksumKey::ChecksumKey(const Key& key) {
    // Counter-mode SipHash under the shared key: independent-looking words for NH and the outer
    // PRF key, distinct from every other use of the key by the label.
    auto derive = [&](std::uint64_t i) {
        std::uint8_t msg[16] = {'h', 'a', '-', 's', 'y', 'n', 'c', '-', 'n', 'h'};
        for (int b = 0; b < 6; ++b) msg[10 + b] = static_cast<std::uint8_t>(i >> (8 * b));
        return siphash(key, msg, sizeof msg);
    };
    for (std::size_t i = 0; i < nh.size(); i += 2) {
        const std::uint64_t w = derive(i / 2);
        nh[i] = static_cast<std::uint32_t>(w);
        nh[i + 1] = static_cast<std::uint32_t>(w >> 32);
    }
    outer = Key{derive(1ULL << 40), derive((1ULL << 40) + 1)};
}

PayloadChecksum::PayloadChecksum(const ChecksumKey& key) : key_(&key), outer_(key.outer) {}

void PayloadChecksum::absorb_block(const std::uint8_t* block, std::size_t bytes) {
    // Up to 64 blocks per call: the dispatch to the vectorised clone is paid once per run.
    std::array<std::uint64_t, 128> sums{};
    while (bytes > 0) {
        const std::size_t run = std::min(bytes, 64 * K::kBlockBytes);
        nh_run(key_->nh.data(), block, run, sums.data());
        const std::size_t blocks = (run + K::kBlockBytes - 1) / K::kBlockBytes;
        for (std::size_t b = 0; b < 2 * blocks; ++b) outer_.update_u64(sums[b]);
        block += run;
        bytes -= run;
    }
}

void PayloadChecksum::update(const void* data, std::size_t len) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    total_ += len;
    if (have_ > 0) {
        const std::size_t n = std::min(len, buf_.size() - have_);
        std::memcpy(buf_.data() + have_, p, n);
        have_ += n;
        p += n;
        len -= n;
        if (have_ < buf_.size()) return;
        absorb_block(buf_.data(), buf_.size());
        have_ = 0;
    }
    const std::size_t whole = len - len % K::kBlockBytes;
    if (whole > 0) absorb_block(p, whole);
    std::memcpy(buf_.data(), p + whole, len - whole);
    have_ = len - whole;
}

std::uint64_t PayloadChecksum::finish() const {
    PayloadChecksum s = *this;
    if (s.have_ > 0) {
        // Zero-pad the last block to whole 8-word groups; the length below tells the padding
        // from data.
        const std::size_t padded = (s.have_ + 31) / 32 * 32;
        std::memset(s.buf_.data() + s.have_, 0, padded - s.have_);
        s.absorb_block(s.buf_.data(), padded);
    }
    s.outer_.update_u64(s.total_);
    return s.outer_.finish();
}

std::uint64_t payload_checksum(const ChecksumKey& key, const void* data, std::size_t len) {
    PayloadChecksum c(key);
    c.update(data, len);
    return c.finish();
}

}  // namespace ha::sync
