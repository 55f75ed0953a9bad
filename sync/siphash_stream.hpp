// Incremental SipHash-2-4: the same tag as ha::siphash over the concatenated input (tested). Used
// for the frame header MAC and to absorb the payload checksum's block sums. Pure code.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/keyfile.hpp"

namespace ha::sync {

class SipHashStream {
  public:
    explicit SipHashStream(const Key& key);
    void update(const void* data, std::size_t len);
    // Absorbs one little-endian 64-bit word; the same as update() of its 8 bytes.
    void update_u64(std::uint64_t w);
    [[nodiscard]] std::uint64_t finish() const;

  private:
    void compress(std::uint64_t m);
    std::uint64_t v0_, v1_, v2_, v3_;
    std::array<std::uint8_t, 8> tail_{};
    std::size_t tail_len_ = 0;
    std::uint64_t total_ = 0;
};

}  // namespace ha::sync
