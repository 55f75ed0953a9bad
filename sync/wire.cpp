#include "sync/wire.hpp"

#include <sys/random.h>

#include <cstring>

#include "common/log.hpp"

namespace ha::sync {

namespace {

void put_u16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8);
}
void put_u32(std::uint8_t* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(std::uint8_t* p, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint16_t get_u16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
std::uint32_t get_u32(const std::uint8_t* p) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
std::uint64_t get_u64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
constexpr std::size_t kMacOffset = kHeaderSize - 8;

bool known_type(std::uint8_t t) {
    return t >= 1 && t <= 12;
}

std::uint64_t handshake_mac(const Key& key, std::string_view label, const Nonce& nc,
                            const Nonce& ns, std::uint64_t digest) {
    std::array<std::uint8_t, 3 + 16 + 16 + 8> buf{};
    std::memcpy(buf.data(), label.data(), 3);
    std::memcpy(buf.data() + 3, nc.bytes.data(), 16);
    std::memcpy(buf.data() + 19, ns.bytes.data(), 16);
    put_u64(buf.data() + 35, digest);
    return siphash(key, buf.data(), buf.size());
}

}  // namespace

std::string_view to_string(FrameType t) {
    switch (t) {
        case FrameType::File:
            return "file";
        case FrameType::Append:
            return "append";
        case FrameType::Delete:
            return "delete";
        case FrameType::Rename:
            return "rename";
        case FrameType::Ack:
            return "ack";
        case FrameType::ManifestEntry:
            return "manifest-entry";
        case FrameType::ManifestEnd:
            return "manifest-end";
        case FrameType::ManifestRequest:
            return "manifest-request";
        case FrameType::SyncDone:
            return "sync-done";
        case FrameType::FullRequest:
            return "full-request";
        case FrameType::Ping:
            return "ping";
        case FrameType::Checksum:
            return "checksum";
    }
    return "?";
}

std::string_view to_string(AckStatus s) {
    switch (s) {
        case AckStatus::Ok:
            return "ok";
        case AckStatus::NeedFull:
            return "need-full";
        case AckStatus::ChecksumMismatch:
            return "checksum-mismatch";
        case AckStatus::NoSpace:
            return "no-space";
        case AckStatus::IoError:
            return "io-error";
        case AckStatus::Refused:
            return "refused";
    }
    return "?";
}

void encode_frame(const Key& session, const FrameHeader& h, std::string_view path,
                  std::vector<std::uint8_t>& out) {
    const std::size_t base = out.size();
    out.resize(base + kHeaderSize + path.size());
    std::uint8_t* p = out.data() + base;
    put_u32(p, kMagic);
    p[4] = static_cast<std::uint8_t>(h.type);
    p[5] = h.root;
    put_u16(p + 6, static_cast<std::uint16_t>(path.size()));
    put_u32(p + 8, h.file_mode);
    put_u64(p + 12, h.seq);
    put_u64(p + 20, h.offset);
    put_u64(p + 28, h.length);
    put_u64(p + 36, static_cast<std::uint64_t>(h.mtime_ns));
    put_u64(p + 44, h.checksum);
    put_u64(p + 52, h.aux);
    std::memcpy(p + kHeaderSize, path.data(), path.size());
    SipHashStream mac(session);
    mac.update(p, kMacOffset);
    mac.update(path.data(), path.size());
    put_u64(p + kMacOffset, mac.finish());
}

Result<FrameHeader> decode_header(std::span<const std::uint8_t> b, std::uint8_t nroots) {
    if (b.size() != kHeaderSize) return fail(fmt::format("frame header: {} bytes", b.size()));
    const std::uint32_t magic = get_u32(b.data());
    if (magic != kMagic) return fail(fmt::format("frame header: bad magic {:#010x}", magic));
    if (!known_type(b[4])) return fail(fmt::format("frame header: unknown type {}", b[4]));
    FrameHeader h;
    h.type = static_cast<FrameType>(b[4]);
    h.root = b[5];
    h.path_len = get_u16(b.data() + 6);
    h.file_mode = get_u32(b.data() + 8);
    h.seq = get_u64(b.data() + 12);
    h.offset = get_u64(b.data() + 20);
    h.length = get_u64(b.data() + 28);
    h.mtime_ns = static_cast<std::int64_t>(get_u64(b.data() + 36));
    h.checksum = get_u64(b.data() + 44);
    h.aux = get_u64(b.data() + 52);
    const auto name = to_string(h.type);
    if (h.root >= nroots)
        return fail(fmt::format("{} frame: root index {} >= {}", name, h.root, nroots));
    if (h.path_len > kMaxPath)
        return fail(fmt::format("{} frame: path length {}", name, h.path_len));
    if ((h.file_mode & ~07777u) != 0)
        return fail(fmt::format("{} frame: file mode {:#o}", name, h.file_mode));
    bool needs_path = false;
    std::uint64_t max_len = 0;
    switch (h.type) {
        case FrameType::File:
            needs_path = true;
            max_len = kMaxFileSize;
            if ((h.aux & ~kFileTrailer) != 0)
                return fail(fmt::format("file frame: flags {:#x}", h.aux));
            break;
        case FrameType::Append:
            needs_path = true;
            max_len = kMaxFileSize;
            if (h.offset > kMaxFileSize || h.offset + h.length > kMaxFileSize)
                return fail(fmt::format("append frame: offset {} + length {}", h.offset, h.length));
            break;
        case FrameType::Rename:
            needs_path = true;
            max_len = kMaxPath;
            if (h.length == 0) return fail("rename frame: empty target");
            break;
        case FrameType::Delete:
        case FrameType::ManifestEntry:
            needs_path = true;
            break;
        case FrameType::Ack:
            if (h.aux > static_cast<std::uint64_t>(AckStatus::Refused))
                return fail(fmt::format("ack frame: status {}", h.aux));
            break;
        case FrameType::Checksum:
            if ((h.aux & ~kChecksumAbandon) != 0)
                return fail(fmt::format("checksum frame: flags {:#x}", h.aux));
            if (h.path_len != 0) return fail("checksum frame: has a path");
            break;
        case FrameType::ManifestEnd:
        case FrameType::ManifestRequest:
        case FrameType::SyncDone:
        case FrameType::FullRequest:
        case FrameType::Ping:
            break;
    }
    if (needs_path && h.path_len == 0) return fail(fmt::format("{} frame: empty path", name));
    if (h.length > max_len) return fail(fmt::format("{} frame: payload length {}", name, h.length));
    return h;
}

Status verify_frame_mac(const Key& session, std::span<const std::uint8_t> header,
                        std::string_view path) {
    SipHashStream mac(session);
    mac.update(header.data(), kMacOffset);
    mac.update(path.data(), path.size());
    if (mac.finish() != get_u64(header.data() + kMacOffset)) return fail("frame header: bad MAC");
    return {};
}

Status check_rel_path(std::string_view path) {
    if (path.empty()) return fail("path: empty");
    if (path.size() > kMaxPath) return fail(fmt::format("path: {} bytes is too long", path.size()));
    if (path.front() == '/') return fail(fmt::format("path '{}': absolute", path));
    if (path.find('\0') != std::string_view::npos) return fail("path: contains NUL");
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        const auto comp = path.substr(start, end - start);
        if (comp.empty()) return fail(fmt::format("path '{}': empty component", path));
        if (comp == "." || comp == "..")
            return fail(fmt::format("path '{}': '{}' component", path, comp));
        if (comp.size() > kMaxComponent)
            return fail(fmt::format("path '{}': component too long", path));
        if (comp.starts_with(kTempPrefix))
            return fail(fmt::format("path '{}': reserved name", path));
        start = end + 1;
    }
    return {};
}

Nonce random_nonce() {
    Nonce n;
    std::size_t got = 0;
    while (got < n.bytes.size()) {
        const ssize_t r = getrandom(n.bytes.data() + got, n.bytes.size() - got, 0);
        HA_ASSERT(r > 0 || errno == EINTR);
        if (r > 0) got += static_cast<std::size_t>(r);
    }
    return n;
}

std::array<std::uint8_t, kHelloSize> encode_client_hello(const Nonce& nc, std::uint64_t digest) {
    std::array<std::uint8_t, kHelloSize> b{};
    put_u32(b.data(), kMagic);
    put_u32(b.data() + 4, kProtoVersion);
    std::memcpy(b.data() + 8, nc.bytes.data(), 16);
    put_u64(b.data() + 24, digest);
    return b;
}

Result<ClientHello> decode_client_hello(std::span<const std::uint8_t> b) {
    if (b.size() != kHelloSize) return fail("client hello: short");
    if (get_u32(b.data()) != kMagic) return fail("client hello: bad magic");
    if (get_u32(b.data() + 4) != kProtoVersion)
        return fail(fmt::format("client hello: protocol version {} (ours {})",
                                get_u32(b.data() + 4), kProtoVersion));
    ClientHello h;
    std::memcpy(h.nonce.bytes.data(), b.data() + 8, 16);
    h.roots_digest = get_u64(b.data() + 24);
    return h;
}

std::array<std::uint8_t, kHelloSize> encode_server_hello(const Key& key, const Nonce& nc,
                                                         const Nonce& ns, std::uint64_t digest) {
    std::array<std::uint8_t, kHelloSize> b{};
    put_u32(b.data(), kMagic);
    put_u32(b.data() + 4, kProtoVersion);
    std::memcpy(b.data() + 8, ns.bytes.data(), 16);
    put_u64(b.data() + 24, handshake_mac(key, "srv", nc, ns, digest));
    return b;
}

Result<Nonce> check_server_hello(const Key& key, std::span<const std::uint8_t> b, const Nonce& nc,
                                 std::uint64_t digest) {
    if (b.size() != kHelloSize) return fail("server hello: short");
    if (get_u32(b.data()) != kMagic) return fail("server hello: bad magic");
    if (get_u32(b.data() + 4) != kProtoVersion)
        return fail(fmt::format("server hello: protocol version {}", get_u32(b.data() + 4)));
    Nonce ns;
    std::memcpy(ns.bytes.data(), b.data() + 8, 16);
    if (get_u64(b.data() + 24) != handshake_mac(key, "srv", nc, ns, digest))
        return fail("server hello: bad MAC (different key or different sync roots)",
                    std::errc::permission_denied);
    return ns;
}

std::array<std::uint8_t, kProofSize> encode_client_proof(const Key& key, const Nonce& nc,
                                                         const Nonce& ns, std::uint64_t digest) {
    std::array<std::uint8_t, kProofSize> b{};
    put_u64(b.data(), handshake_mac(key, "cli", nc, ns, digest));
    return b;
}

Status check_client_proof(const Key& key, std::span<const std::uint8_t> b, const Nonce& nc,
                          const Nonce& ns, std::uint64_t digest) {
    if (b.size() != kProofSize) return fail("client proof: short");
    if (get_u64(b.data()) != handshake_mac(key, "cli", nc, ns, digest))
        return fail("client proof: bad MAC (different key)", std::errc::permission_denied);
    return {};
}

Key session_key(const Key& key, const Nonce& nc, const Nonce& ns) {
    return Key{handshake_mac(key, "se0", nc, ns, 0), handshake_mac(key, "se1", nc, ns, 0)};
}

Status FrameReader::feed(std::span<const std::uint8_t> data, FrameSink& sink) {
    if (failed_) return fail("frame reader: already failed");
    auto bail = [&](Error e) -> Status {
        failed_ = true;
        return unexpected(std::move(e));
    };
    while (!data.empty() || (state_ == State::Payload && remaining_ == 0) ||
           (state_ == State::Path && path_.size() == hdr_.path_len)) {
        switch (state_) {
            case State::Header: {
                const std::size_t n = std::min(kHeaderSize - have_, data.size());
                std::memcpy(hdr_buf_.data() + have_, data.data(), n);
                have_ += n;
                data = data.subspan(n);
                if (have_ < kHeaderSize) break;
                auto h = decode_header(hdr_buf_, nroots_);
                if (!h) return bail(h.error());
                hdr_ = *h;
                path_.clear();
                state_ = State::Path;
                break;
            }
            case State::Path: {
                const std::size_t n =
                    std::min<std::size_t>(hdr_.path_len - path_.size(), data.size());
                path_.append(reinterpret_cast<const char*>(data.data()), n);
                data = data.subspan(n);
                if (path_.size() < hdr_.path_len) break;
                if (auto st = verify_frame_mac(session_, hdr_buf_, path_); !st)
                    return bail(st.error());
                if (hdr_.path_len > 0) {
                    if (auto st = check_rel_path(path_); !st)
                        return bail(st.error().wrap(fmt::format("{} frame", to_string(hdr_.type))));
                }
                if (auto st = sink.on_frame(hdr_, path_); !st) return bail(st.error());
                remaining_ = hdr_.length;
                state_ = State::Payload;
                break;
            }
            case State::Payload: {
                const std::size_t n =
                    static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, data.size()));
                if (n > 0) {
                    if (auto st = sink.on_payload(data.first(n)); !st) return bail(st.error());
                    remaining_ -= n;
                    data = data.subspan(n);
                }
                if (remaining_ > 0) break;
                if (auto st = sink.on_frame_end(); !st) return bail(st.error());
                state_ = State::Header;
                have_ = 0;
                break;
            }
        }
    }
    return {};
}

}  // namespace ha::sync
