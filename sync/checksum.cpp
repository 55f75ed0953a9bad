#include "sync/checksum.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ha::sync {

namespace {

using K = ChecksumKey;

}  // namespace

namespace detail {

// NH over `bytes` (a multiple of 32) in blocks of kBlockBytes, two sums per block into `out`.
void nh_run_portable(const std::uint32_t* key, const std::uint8_t* p, std::size_t bytes,
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

#if defined(__x86_64__)
// The same, 8 words per step: A = m + K[i..], B = m + K[i+4..]; lane 0 multiplies A[j] by
// A[j+4], lane 1 B[j] by B[j+4] (j = 0..3). The two 128-bit halves are regrouped so that one
// _mm256_mul_epu32 on the even and one on the odd 32-bit elements form all eight products.
__attribute__((target("avx2"))) void nh_run_avx2(const std::uint32_t* key, const std::uint8_t* p,
                                                 std::size_t bytes, std::uint64_t* out) {
    while (bytes > 0) {
        const std::size_t n = std::min(bytes, K::kBlockBytes) / 4;
        __m256i sum = _mm256_setzero_si256();
        for (std::size_t i = 0; i < n; i += 8) {
            const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i * 4));
            const __m256i ka = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(key + i));
            const __m256i kb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(key + i + 4));
            const __m256i a = _mm256_add_epi32(m, ka);
            const __m256i b = _mm256_add_epi32(m, kb);
            const __m256i left = _mm256_permute2x128_si256(a, b, 0x20);   // A0..3 | B0..3
            const __m256i right = _mm256_permute2x128_si256(a, b, 0x31);  // A4..7 | B4..7
            const __m256i even = _mm256_mul_epu32(left, right);
            const __m256i odd =
                _mm256_mul_epu32(_mm256_srli_epi64(left, 32), _mm256_srli_epi64(right, 32));
            sum = _mm256_add_epi64(sum, _mm256_add_epi64(even, odd));
        }
        alignas(32) std::uint64_t s[4];
        _mm256_store_si256(reinterpret_cast<__m256i*>(s), sum);
        out[0] = s[0] + s[1];
        out[1] = s[2] + s[3];
        out += 2;
        p += n * 4;
        bytes -= n * 4;
    }
}
#endif

NhRun nh_best() {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) return nh_run_avx2;
#endif
    return nh_run_portable;
}

}  // namespace detail

namespace {

// Chosen once, at startup.
const detail::NhRun nh_run = detail::nh_best();

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
