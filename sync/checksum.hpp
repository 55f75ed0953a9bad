// The payload checksum: a keyed 64-bit tag over every byte a transfer moves, computed by the
// sender before the payload leaves and by the receiver over what it wrote, before anything is
// renamed into place. Pure code, no I/O.
//
// Construction (protocol version 2; UMAC-style "NH, then a PRF"):
// - The payload is cut into 1 KiB blocks; the last one is zero-padded to a multiple of 32 bytes.
// - Each block is compressed to two 64-bit sums by NH with a Toeplitz shift between the two lanes:
//     lane l = sum over 8-word groups g, j = 0..3 of
//              (m[g+j] + K[g+j+4l] mod 2^32) * (m[g+j+4] + K[g+j+4+4l] mod 2^32)   mod 2^64
//   with m the block's little-endian 32-bit words and K 264 key words derived from the shared key.
//   For two different blocks of the same length both lanes collide with probability <= 2^-64
//   (NH is 2^-32-almost-universal per lane; Krovetz/Rogaway, UMAC, 2000).
// - The lane sums of every block, then the total length, are fed to SipHash-2-4 under a second
//   derived key. The tag is that SipHash.
// Why not SipHash over every byte (version 1): it ran at ~0.6 GB/s on the lab VM and was 65-90 %
// of a full sync's CPU, on both boxes. NH runs at ~6 GB/s there (~12 GB/s with AVX2, chosen at
// startup) and still needs the key: a corrupted or forged payload passes with probability ~2^-64.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/keyfile.hpp"
#include "sync/siphash_stream.hpp"

namespace ha::sync {

// The expanded key. Built once per engine (a few hundred SipHash calls), then shared read-only.
struct ChecksumKey {
    static constexpr std::size_t kBlockBytes = 1024;
    static constexpr std::size_t kBlockWords = kBlockBytes / 4;
    static constexpr std::size_t kLanes = 2;
    explicit ChecksumKey(const Key& key);
    std::array<std::uint32_t, kBlockWords + 4 * kLanes> nh{};
    Key outer;
};

// Incremental: any split of the input gives the same tag as payload_checksum() over the whole.
class PayloadChecksum {
  public:
    explicit PayloadChecksum(const ChecksumKey& key);
    void update(const void* data, std::size_t len);
    [[nodiscard]] std::uint64_t finish() const;

  private:
    void absorb_block(const std::uint8_t* block, std::size_t bytes);
    const ChecksumKey* key_;
    SipHashStream outer_;
    std::array<std::uint8_t, ChecksumKey::kBlockBytes> buf_{};
    std::size_t have_ = 0;
    std::uint64_t total_ = 0;
};

std::uint64_t payload_checksum(const ChecksumKey& key, const void* data, std::size_t len);

namespace detail {  // the NH kernels, for tests: both give the same sums
using NhRun = void (*)(const std::uint32_t* key, const std::uint8_t* p, std::size_t bytes,
                       std::uint64_t* out);
void nh_run_portable(const std::uint32_t* key, const std::uint8_t* p, std::size_t bytes,
                     std::uint64_t* out);
#if defined(__x86_64__)
void nh_run_avx2(const std::uint32_t* key, const std::uint8_t* p, std::size_t bytes,
                 std::uint64_t* out);  // only on a CPU with AVX2
#endif
NhRun nh_best();
}  // namespace detail

}  // namespace ha::sync
