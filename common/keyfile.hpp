// The shared key both boxes hold (`key_file` in the config): 32 hex digits = a 128-bit SipHash key.
// Used for the heartbeat MAC and the sync connection's handshake. Generate with `fcm-hactl keygen`.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "result.hpp"

namespace ha {

struct Key {
    std::uint64_t k0 = 0, k1 = 0;
    friend bool operator==(const Key&, const Key&) = default;
};

// Parses the file's text: 32 hex digits, surrounding whitespace and '#' comment lines ignored.
Result<Key> parse_key(std::string_view text);
// Reads and parses; refuses a file readable by group or others (it authenticates takeovers).
Result<Key> load_key_file(const std::string& path);
// Writes a new random key atomically (temp file, fsync, rename) with mode 0600.
Status write_new_key_file(const std::string& path);
std::uint64_t siphash(const Key& key, const void* data, std::size_t len);

}  // namespace ha
