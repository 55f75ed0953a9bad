// Sync wire format: frame encode/decode round trips, malformed frames, handshake, path safety.
#include <gtest/gtest.h>

#include "common/keyfile.hpp"
#include "sync/wire.hpp"

namespace ha::sync {
namespace {

const Key kKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
const Key kSession{0x1111, 0x2222};
const ChecksumKey kSum(kKey);

struct Collect : FrameSink {
    struct Got {
        FrameHeader h;
        std::string path;
        std::string payload;
    };
    std::vector<Got> frames;
    Status on_frame(const FrameHeader& h, std::string_view path) override {
        frames.push_back({h, std::string(path), {}});
        return {};
    }
    Status on_payload(std::span<const std::uint8_t> c) override {
        frames.back().payload.append(reinterpret_cast<const char*>(c.data()), c.size());
        return {};
    }
    Status on_frame_end() override {
        ++ended;
        return {};
    }
    int ended = 0;
};

std::vector<std::uint8_t> file_frame(std::string_view path, std::string_view payload) {
    FrameHeader h{.type = FrameType::File,
                  .root = 1,
                  .file_mode = 0640,
                  .seq = 7,
                  .length = payload.size(),
                  .mtime_ns = 123456789,
                  .checksum = payload_checksum(kSum, payload.data(), payload.size())};
    std::vector<std::uint8_t> out;
    encode_frame(kSession, h, path, out);
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

TEST(SipHashStream, MatchesOneShotSipHashForEverySplit) {
    std::string data;
    for (int i = 0; i < 100; ++i) data.push_back(static_cast<char>(i * 7));
    for (std::size_t len = 0; len <= data.size(); len += 13) {
        const auto expect = siphash(kKey, data.data(), len);
        for (std::size_t split = 0; split <= len; split += 3) {
            SipHashStream h(kKey);
            h.update(data.data(), split);
            h.update(data.data() + split, len - split);
            EXPECT_EQ(h.finish(), expect) << "len=" << len << " split=" << split;
        }
    }
}

TEST(SipHashStream, ReferenceVectorFromSipHashPaperAndWordUpdates) {
    // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e -> a129ca6149be45e5.
    std::uint8_t msg[15];
    for (int i = 0; i < 15; ++i) msg[i] = static_cast<std::uint8_t>(i);
    SipHashStream h(kKey);
    h.update(msg, sizeof msg);
    EXPECT_EQ(h.finish(), 0xa129ca6149be45e5ULL);
    // update_u64 is update() of the word's 8 little-endian bytes, aligned or not.
    SipHashStream a(kKey), b(kKey);
    a.update(msg, 3);
    b.update(msg, 3);
    a.update_u64(0x0807060504030201ULL);
    const std::uint8_t le[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    b.update(le, 8);
    EXPECT_EQ(a.finish(), b.finish());
}

std::string pattern(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& c : s) {
        x = x * 1664525u + 1013904223u;
        c = static_cast<char>(x >> 24);
    }
    return s;
}

TEST(PayloadChecksum, AnySplitGivesTheOneShotTag) {
    const std::string data = pattern(5000, 1);
    for (std::size_t len : {0, 1, 31, 32, 33, 1023, 1024, 1025, 2048, 4099, 5000}) {
        const auto expect = payload_checksum(kSum, data.data(), len);
        for (std::size_t split = 0; split <= len; split += 97) {
            PayloadChecksum c(kSum);
            c.update(data.data(), split);
            c.update(data.data() + split, (len - split) / 2);
            c.update(data.data() + split + (len - split) / 2, len - split - (len - split) / 2);
            EXPECT_EQ(c.finish(), expect) << "len=" << len << " split=" << split;
        }
    }
}

TEST(PayloadChecksum, EveryBitFlipTrailingZeroAndOtherKeyChangesTheTag) {
    const std::string data = pattern(2100, 2);  // three blocks, the last one partial
    const auto tag = payload_checksum(kSum, data.data(), data.size());
    for (std::size_t i = 0; i < data.size(); ++i) {
        for (int bit = 0; bit < 8; bit += 3) {
            std::string d = data;
            d[i] = static_cast<char>(d[i] ^ (1 << bit));
            ASSERT_NE(payload_checksum(kSum, d.data(), d.size()), tag) << i << ":" << bit;
        }
    }
    // Zero padding is not data: a trailing zero byte, or a block's worth, is a different payload.
    std::string z = data + std::string(1, '\0');
    EXPECT_NE(payload_checksum(kSum, z.data(), z.size()), tag);
    z = data + std::string(1024, '\0');
    EXPECT_NE(payload_checksum(kSum, z.data(), z.size()), tag);
    EXPECT_NE(payload_checksum(kSum, nullptr, 0), payload_checksum(kSum, "\0", 1));
    // Swapping two whole blocks is a different payload too.
    std::string swapped = data.substr(1024, 1024) + data.substr(0, 1024) + data.substr(2048);
    EXPECT_NE(payload_checksum(kSum, swapped.data(), swapped.size()), tag);
    // Keyed: the same bytes under another key give another tag.
    const ChecksumKey other(Key{kKey.k0, kKey.k1 ^ 1});
    EXPECT_NE(payload_checksum(other, data.data(), data.size()), tag);
}

TEST(PayloadChecksum, TheKernelChosenAtStartupGivesThePortableSums) {
    // The vector kernel wherever the CPU has one (checked below), else the portable one: never a
    // skip, so a CPU without AVX2 still runs what it will use.
    const detail::NhRun best = detail::nh_best();
#if defined(__x86_64__)
    EXPECT_EQ(best == detail::nh_run_avx2, __builtin_cpu_supports("avx2") != 0);
#endif
    const std::string data = pattern(70000, 4);
    for (std::size_t bytes : {32, 64, 992, 1024, 1056, 4096, 65536, 69984}) {
        std::vector<std::uint64_t> a(2 * (bytes / 1024 + 1)), b(a.size());
        detail::nh_run_portable(kSum.nh.data(), reinterpret_cast<const std::uint8_t*>(data.data()),
                                bytes, a.data());
        best(kSum.nh.data(), reinterpret_cast<const std::uint8_t*>(data.data()), bytes, b.data());
        EXPECT_EQ(a, b) << bytes;
    }
}

TEST(PayloadChecksum, PinnedValuesBothBoxesMustAgreeOn) {
    // Computed with an independent (Python) implementation of the construction in checksum.hpp.
    // Changing these means a new protocol version (wire.hpp kProtoVersion).
    const std::string data = pattern(1500, 3);
    EXPECT_EQ(payload_checksum(kSum, nullptr, 0), 0x64ba78823f816ee6ULL);
    EXPECT_EQ(payload_checksum(kSum, data.data(), data.size()), 0xb38fef1688b893eaULL);
}

TEST(FrameReader, RoundTripsFramesFedOneByteAtATime) {
    auto bytes = file_frame("dir/a.wav", "hello world");
    FrameHeader del{.type = FrameType::Delete, .root = 0, .seq = 8};
    encode_frame(kSession, del, "old", bytes);
    FrameReader r(kSession, 2);
    Collect c;
    for (auto b : bytes) ASSERT_TRUE(r.feed(std::span(&b, 1), c));
    ASSERT_EQ(c.frames.size(), 2u);
    EXPECT_EQ(c.ended, 2);
    EXPECT_EQ(c.frames[0].h.type, FrameType::File);
    EXPECT_EQ(c.frames[0].h.root, 1);
    EXPECT_EQ(c.frames[0].h.file_mode, 0640u);
    EXPECT_EQ(c.frames[0].h.mtime_ns, 123456789);
    EXPECT_EQ(c.frames[0].path, "dir/a.wav");
    EXPECT_EQ(c.frames[0].payload, "hello world");
    EXPECT_EQ(c.frames[1].h.type, FrameType::Delete);
    EXPECT_EQ(c.frames[1].path, "old");
    EXPECT_TRUE(r.idle());
}

TEST(FrameReader, RejectsBadMagic) {
    auto bytes = file_frame("a", "x");
    bytes[0] ^= 0xff;
    FrameReader r(kSession, 2);
    Collect c;
    auto st = r.feed(bytes, c);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("magic"), std::string::npos);
    EXPECT_TRUE(c.frames.empty());
    EXPECT_FALSE(r.feed(bytes, c)) << "errors are sticky";
}

TEST(FrameReader, RejectsTamperedHeaderAndWrongSession) {
    auto bytes = file_frame("a", "x");
    bytes[20] ^= 1;  // offset field
    FrameReader r(kSession, 2);
    Collect c;
    auto st = r.feed(bytes, c);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("MAC"), std::string::npos);

    FrameReader other(Key{1, 2}, 2);
    EXPECT_FALSE(other.feed(file_frame("a", "x"), c));
}

TEST(FrameReader, RejectsUnknownTypeRootOutOfRangeAndOversizedPayload) {
    Collect c;
    {
        auto bytes = file_frame("a", "x");
        bytes[4] = 99;
        FrameReader r(kSession, 2);
        EXPECT_FALSE(r.feed(bytes, c));
    }
    {
        auto bytes = file_frame("a", "x");  // root 1
        FrameReader r(kSession, 1);
        auto st = r.feed(bytes, c);
        ASSERT_FALSE(st);
        EXPECT_NE(st.error().message().find("root index 1"), std::string::npos);
    }
    {
        FrameHeader h{.type = FrameType::Ack, .aux = 1};
        h.length = 5;  // control frames carry no payload
        std::vector<std::uint8_t> bytes;
        encode_frame(kSession, h, "", bytes);
        FrameReader r(kSession, 1);
        EXPECT_FALSE(r.feed(bytes, c));
    }
    {
        FrameHeader h{.type = FrameType::File, .length = kMaxFileSize + 1};
        std::vector<std::uint8_t> bytes;
        encode_frame(kSession, h, "big", bytes);
        FrameReader r(kSession, 1);
        EXPECT_FALSE(r.feed(bytes, c));
    }
    EXPECT_TRUE(c.frames.empty());
}

TEST(FrameReader, ChecksumTrailerFramesAndFlagsAreChecked) {
    auto frame = [](FrameHeader h, std::string_view path = "") {
        std::vector<std::uint8_t> out;
        encode_frame(kSession, h, path, out);
        return out;
    };
    Collect c;
    FrameReader ok(kSession, 4);
    auto f = frame(FrameHeader{.type = FrameType::File, .root = 1, .seq = 9, .aux = kFileTrailer},
                   "big.wav");
    auto t = frame(FrameHeader{.type = FrameType::Checksum, .seq = 9, .checksum = 77});
    f.insert(f.end(), t.begin(), t.end());
    ASSERT_TRUE(ok.feed(f, c));
    ASSERT_EQ(c.frames.size(), 2u);
    EXPECT_EQ(c.frames[1].h.type, FrameType::Checksum);
    EXPECT_EQ(c.frames[1].h.checksum, 77u);
    for (auto bad : {frame(FrameHeader{.type = FrameType::File, .aux = 2}, "x"),
                     frame(FrameHeader{.type = FrameType::Checksum, .aux = 2}),
                     frame(FrameHeader{.type = FrameType::Checksum, .length = 1})}) {
        FrameReader r(kSession, 4);
        Collect sink;
        EXPECT_FALSE(r.feed(bad, sink));
    }
    const auto with_path = frame(FrameHeader{.type = FrameType::Checksum}, "p");
    EXPECT_FALSE(decode_header(std::span(with_path).first(kHeaderSize), 4))
        << "a checksum frame has no path";
}

TEST(FrameReader, RejectsEscapingPathsEvenWithValidMac) {
    for (const char* bad :
         {"../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", ".ha-sync-tmp.x"}) {
        Collect c;
        FrameReader r(kSession, 2);
        auto st = r.feed(file_frame(bad, "x"), c);
        EXPECT_FALSE(st) << bad;
        EXPECT_TRUE(c.frames.empty()) << bad;
    }
}

TEST(FrameReader, RejectsFrameTypesWithMissingPath) {
    FrameHeader h{.type = FrameType::Delete};
    std::vector<std::uint8_t> bytes;
    encode_frame(kSession, h, "", bytes);
    FrameReader r(kSession, 1);
    Collect c;
    auto st = r.feed(bytes, c);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("empty path"), std::string::npos);
}

TEST(PathSafety, AcceptsNormalRelativePaths) {
    EXPECT_TRUE(check_rel_path("a"));
    EXPECT_TRUE(check_rel_path("voicemail/1001/INBOX/msg0001.wav"));
    EXPECT_TRUE(check_rel_path("..hidden"));
    EXPECT_TRUE(check_rel_path("a..b/c"));
    EXPECT_FALSE(check_rel_path(""));
    EXPECT_FALSE(check_rel_path("a/"));
    EXPECT_FALSE(check_rel_path(std::string("a\0b", 3)));
    EXPECT_FALSE(check_rel_path(std::string(300, 'x')));
}

TEST(Handshake, BothSidesProveTheKeyAndAgreeOnASessionKey) {
    const Nonce nc = random_nonce();
    const Nonce ns = random_nonce();
    const auto hello = encode_client_hello(nc, 42);
    auto ch = decode_client_hello(hello);
    ASSERT_TRUE(ch);
    EXPECT_EQ(ch->roots_digest, 42u);
    const auto sh = encode_server_hello(kKey, ch->nonce, ns, 42);
    auto got_ns = check_server_hello(kKey, sh, nc, 42);
    ASSERT_TRUE(got_ns);
    EXPECT_EQ(got_ns->bytes, ns.bytes);
    const auto proof = encode_client_proof(kKey, nc, ns, 42);
    EXPECT_TRUE(check_client_proof(kKey, proof, nc, ns, 42));
    const Key s1 = session_key(kKey, nc, ns);
    EXPECT_NE(s1, kKey);
    EXPECT_NE(s1, session_key(kKey, nc, random_nonce()));
}

TEST(Handshake, RefusesWrongKeyWrongRootsAndReplayedProof) {
    const Nonce nc = random_nonce();
    const Nonce ns = random_nonce();
    const auto sh = encode_server_hello(kKey, nc, ns, 42);
    EXPECT_FALSE(check_server_hello(Key{9, 9}, sh, nc, 42));
    EXPECT_FALSE(check_server_hello(kKey, sh, nc, 43)) << "different roots config";
    const auto proof = encode_client_proof(kKey, nc, ns, 42);
    EXPECT_FALSE(check_client_proof(kKey, proof, nc, random_nonce(), 42)) << "replay, new nonce";
    EXPECT_FALSE(check_client_proof(Key{9, 9}, proof, nc, ns, 42));
    auto bad = encode_client_hello(nc, 1);
    bad[4] = 9;  // protocol version
    EXPECT_FALSE(decode_client_hello(bad));
}

}  // namespace
}  // namespace ha::sync
