#include "keyfile.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "atomic_file.hpp"
#include "ha_siphash.h"
#include "unique_fd.hpp"

namespace ha {

Result<Key> parse_key(std::string_view text) {
    std::string hex;
    bool comment = false;
    for (char c : text) {
        if (c == '#') comment = true;
        if (c == '\n') comment = false;
        if (comment || c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        hex += c;
    }
    if (hex.size() != 32)
        return fail(fmt::format("key must be 32 hex digits, found {}", hex.size()));
    std::array<std::uint8_t, 16> bytes{};
    for (std::size_t i = 0; i < 16; ++i) {
        auto nib = [&](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return fail("key contains a character that is not a hex digit");
        bytes[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    }
    Key k;
    k.k0 = ha_sip_load_le64(bytes.data());
    k.k1 = ha_sip_load_le64(bytes.data() + 8);
    return k;
}

Result<Key> load_key_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return last_errno("open key file " + path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return last_errno("stat key file " + path);
    if ((st.st_mode & 077) != 0)
        return fail(fmt::format("key file {} is readable by others (mode {:o}); chmod 600 it", path,
                                st.st_mode & 0777),
                    std::errc::permission_denied);
    char buf[512];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return last_errno("read key file " + path);
    auto k = parse_key(std::string_view(buf, static_cast<std::size_t>(n)));
    if (!k) return unexpected(k.error().wrap("key file " + path));
    return k;
}

Status write_new_key_file(const std::string& path) {
    std::array<std::uint8_t, 16> bytes{};
    if (::getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
        return last_errno("getrandom");
    std::string text = "# fcm-ha shared key: copy this file to both boxes, mode 0600\n";
    for (auto b : bytes) text += fmt::format("{:02x}", b);
    text += '\n';
    return write_file_atomic(path, text, 0600);
}

std::uint64_t siphash(const Key& key, const void* data, std::size_t len) {
    return ha_siphash24(key.k0, key.k1, static_cast<const __u8*>(data), static_cast<__u32>(len));
}

}  // namespace ha
