// The sync connection's wire format: a keyed handshake, then framed records. Pure code (no I/O),
// so encoding, decoding and every malformed-frame case are unit-tested byte for byte.
//
// Handshake (standby = client, active = server; all integers little-endian):
//   C->S  ClientHello  magic "HAS1" u32, version u32, nonce_c[16], roots_digest u64   (32 bytes)
//   S->C  ServerHello  magic u32, version u32, nonce_s[16], mac_s u64                  (32 bytes)
//   C->S  ClientProof  mac_c u64                                                       ( 8 bytes)
// mac_s = SipHash(key, "srv" nonce_c nonce_s roots_digest), mac_c likewise with "cli", so each
// side proves it holds the key over nonces it did not choose. The session key that MACs every
// frame header is derived from both nonces, so a recorded session cannot be replayed.
//
// Frame: a 68-byte header, then path_len bytes of root-relative path, then `length` payload
// bytes. hdr_mac = SipHash(session_key, header[0..60) path) catches corruption and forgery of
// the header; the payload carries its own keyed checksum (`checksum`, see checksum.hpp), verified
// by the receiver before anything is renamed into place. Version 2 changed that checksum (version
// 1 was SipHash-2-4 over every payload byte) and added the checksum trailer: a large whole file is
// sent with aux bit 0 set and no checksum in its header; a Checksum frame with the same seq follows
// its payload at once. The sender hashes each chunk just before sending it, so hashing and the
// transfer overlap, and it can still abandon the transfer (Checksum aux bit 0) when the file
// changed while it was sent.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/keyfile.hpp"
#include "common/result.hpp"
#include "sync/checksum.hpp"
#include "sync/siphash_stream.hpp"

namespace ha::sync {

inline constexpr std::uint32_t kMagic = 0x31534148;  // "HAS1" little-endian
inline constexpr std::uint32_t kProtoVersion = 2;
inline constexpr std::size_t kHeaderSize = 68;
inline constexpr std::size_t kMaxPath = 4096;
inline constexpr std::size_t kMaxComponent = 255;
inline constexpr std::uint64_t kMaxFileSize = 1ULL << 40;  // 1 TiB: anything bigger is a bad frame
inline constexpr std::size_t kHelloSize = 32;
inline constexpr std::size_t kProofSize = 8;
inline constexpr std::uint8_t kMaxRoots = 64;

enum class FrameType : std::uint8_t {
    File = 1,             // A->S whole file: length = size, payload = content
    Append = 2,           // A->S bytes [offset, offset+length)
    Delete = 3,           // A->S remove path (file or directory tree)
    Rename = 4,           // A->S path -> payload (new path)
    Ack = 5,              // S->A seq applied; aux = AckStatus
    ManifestEntry = 6,    // S->A offset = size, mtime_ns, checksum (aux bit0: checksum valid)
    ManifestEnd = 7,      // S->A seq = request id (0 = sent on connect)
    ManifestRequest = 8,  // A->S seq = request id, aux bit0 = with checksums
    SyncDone = 9,         // A->S every difference of request `aux` has been sent before this
    FullRequest = 10,     // S->A please run a full backup now
    Ping = 11,            // A->S liveness; acked like data so lag math stays simple
    Checksum = 12,        // A->S the trailer of the File frame `seq` (aux bit0: abandoned)
};
inline constexpr std::uint64_t kFileTrailer = 1;      // File aux: a Checksum frame follows
inline constexpr std::uint64_t kChecksumAbandon = 1;  // Checksum aux: discard the file
std::string_view to_string(FrameType t);

enum class AckStatus : std::uint8_t {
    Ok = 0,
    NeedFull = 1,          // append offset mismatch / rename source missing: send the whole file
    ChecksumMismatch = 2,  // payload did not match its checksum (file changed while sent)
    NoSpace = 3,           // standby disk full; nothing torn was left behind
    IoError = 4,
    Refused = 5,  // path unsafe on the standby (symlink out, not a regular file...)
};
std::string_view to_string(AckStatus s);

struct FrameHeader {
    FrameType type = FrameType::Ping;
    std::uint8_t root = 0;
    std::uint16_t path_len = 0;
    std::uint32_t file_mode = 0;  // permission bits (07777)
    std::uint64_t seq = 0;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;  // payload bytes following the path
    std::int64_t mtime_ns = 0;
    std::uint64_t checksum = 0;
    std::uint64_t aux = 0;
    friend bool operator==(const FrameHeader&, const FrameHeader&) = default;
};

// Appends header + path to `out`; the MAC is computed with `session`.
void encode_frame(const Key& session, const FrameHeader& h, std::string_view path,
                  std::vector<std::uint8_t>& out);
// Parses the fixed header (exactly kHeaderSize bytes) and checks everything that does not need
// the path: magic, type, bounds. `nroots` bounds the root index.
Result<FrameHeader> decode_header(std::span<const std::uint8_t> bytes, std::uint8_t nroots);
// Checks the header MAC once the path is in.
Status verify_frame_mac(const Key& session, std::span<const std::uint8_t> header,
                        std::string_view path);

// A root-relative path is safe when it is non-empty, relative, has no "", "." or ".." component,
// no NUL, and stays within the length limits. Names of our own temp files are refused too.
Status check_rel_path(std::string_view path);
inline constexpr std::string_view kTempPrefix = ".ha-sync-tmp.";

// --- handshake ---
struct Nonce {
    std::array<std::uint8_t, 16> bytes{};
};
Nonce random_nonce();
std::array<std::uint8_t, kHelloSize> encode_client_hello(const Nonce& nc, std::uint64_t digest);
std::array<std::uint8_t, kHelloSize> encode_server_hello(const Key& key, const Nonce& nc,
                                                         const Nonce& ns, std::uint64_t digest);
struct ClientHello {
    Nonce nonce;
    std::uint64_t roots_digest = 0;
};
Result<ClientHello> decode_client_hello(std::span<const std::uint8_t> b);
// Verifies the server's MAC; returns the server nonce.
Result<Nonce> check_server_hello(const Key& key, std::span<const std::uint8_t> b, const Nonce& nc,
                                 std::uint64_t digest);
std::array<std::uint8_t, kProofSize> encode_client_proof(const Key& key, const Nonce& nc,
                                                         const Nonce& ns, std::uint64_t digest);
Status check_client_proof(const Key& key, std::span<const std::uint8_t> b, const Nonce& nc,
                          const Nonce& ns, std::uint64_t digest);
Key session_key(const Key& key, const Nonce& nc, const Nonce& ns);

// Incremental frame parser for a byte stream. Payload bytes are handed out as they arrive so a
// large file never has to sit in memory.
class FrameSink {
  public:
    virtual ~FrameSink() = default;
    // Header and path validated. Returning an error closes the connection with that reason.
    virtual Status on_frame(const FrameHeader& h, std::string_view path) = 0;
    virtual Status on_payload(std::span<const std::uint8_t> chunk) = 0;
    virtual Status on_frame_end() = 0;
};

class FrameReader {
  public:
    FrameReader(Key session, std::uint8_t nroots) : session_(session), nroots_(nroots) {}
    // Consumes all of `data`; the first error is sticky (the connection must be closed).
    Status feed(std::span<const std::uint8_t> data, FrameSink& sink);
    [[nodiscard]] bool idle() const { return state_ == State::Header && have_ == 0; }

  private:
    enum class State : std::uint8_t { Header, Path, Payload };
    Key session_;
    std::uint8_t nroots_;
    State state_ = State::Header;
    std::array<std::uint8_t, kHeaderSize> hdr_buf_{};
    std::size_t have_ = 0;
    FrameHeader hdr_;
    std::string path_;
    std::uint64_t remaining_ = 0;
    bool failed_ = false;
};

}  // namespace ha::sync
