// The standby's receive path: frames into the Applier, acks, manifests, group commit.
#include <cstring>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "sync/worker.hpp"

namespace ha::sync {

namespace {
// How long an append may wait for others to share its fdatasync. Only acknowledgement (and so
// the active's reported lag) waits; the bytes are visible on the standby at once.
constexpr std::uint64_t kAppendWindowNs = 4'000'000;
}  // namespace

// ---------------------------------------------------------------- standby receive path

void Engine::Worker::ack(std::uint64_t seq, AckStatus s) {
    // Acks leave in sequence order: any other ack waits for the held append acks before it.
    if (!held_acks_.empty()) commit_appends();
    send_frame(
        FrameHeader{.type = FrameType::Ack, .seq = seq, .aux = static_cast<std::uint64_t>(s)}, "");
}

void Engine::Worker::note_apply(AckStatus s, std::string_view path) {
    if (s == AckStatus::Ok) {
        standby_disk_full_ = false;
        return;
    }
    ++rx_failures_;
    ++errors_;
    const std::string why = applier_ ? applier_->last_error() : std::string(path);
    switch (s) {
        case AckStatus::NoSpace:
            if (!standby_disk_full_) {
                log::error("sync", "standby disk full path={} err={}", path, why);
                emit(SyncEvent::Kind::DiskFull, why);
            }
            standby_disk_full_ = true;
            break;
        case AckStatus::ChecksumMismatch:
            log::warn("sync", "checksum mismatch, discarded path={}", path);
            emit(SyncEvent::Kind::ChecksumMismatch, why);
            break;
        case AckStatus::Refused:
            log::error("sync", "refused path={} err={}", path, why);
            emit(SyncEvent::Kind::PeerRefused, why);
            break;
        case AckStatus::IoError:
            log::error("sync", "apply failed path={} err={}", path, why);
            emit(SyncEvent::Kind::ApplyFailed, why);
            break;
        case AckStatus::NeedFull:
        case AckStatus::Ok:
            break;
    }
}

void Engine::Worker::send_manifest(bool with_checksums, std::uint64_t req) {
    if (!applier_) return;
    for (std::size_t i = 0; i < cfg_.roots.size(); ++i) {
        auto m = scan_root(applier_->root_fd(i), cfg_.roots[i].mode, with_checksums, *csum_key_);
        if (!m) {
            ++errors_;
            log::error("sync", "manifest root={}: {}", cfg_.roots[i].path, m.error().message());
            continue;
        }
        for (const auto& [path, ent] : *m) {
            FrameHeader h{.type = FrameType::ManifestEntry,
                          .root = static_cast<std::uint8_t>(i),
                          .file_mode = ent.mode,
                          .offset = ent.size,
                          .mtime_ns = ent.mtime_ns,
                          .checksum = ent.checksum.value_or(0),
                          .aux = ent.checksum ? 1u : 0u};
            send_frame(h, path);
        }
    }
    send_frame(FrameHeader{.type = FrameType::ManifestEnd, .seq = req}, "");
}

Status Engine::Worker::on_frame(const FrameHeader& h, std::string_view path) {
    rx_ = h;
    rx_path_ = std::string(path);
    rx_payload_.clear();
    const bool standby = role_ == Role::Standby;
    switch (h.type) {
        case FrameType::File:
        case FrameType::Append:
        case FrameType::Delete:
        case FrameType::Rename:
        case FrameType::ManifestRequest:
        case FrameType::SyncDone:
        case FrameType::Ping:
            if (!standby)
                return fail(fmt::format("{} frame sent to the active", to_string(h.type)));
            if (!applier_) return fail("standby cannot apply (no applier)");
            break;
        case FrameType::Ack:
        case FrameType::ManifestEntry:
        case FrameType::ManifestEnd:
        case FrameType::FullRequest:
            if (standby)
                return fail(fmt::format("{} frame sent to the standby", to_string(h.type)));
            break;
    }
    if (standby) {
        // Deferred whole files go in before anything that could touch the same names, and in
        // bounded batches.
        constexpr std::size_t kMaxDeferredFiles = 512;
        constexpr std::uint64_t kMaxDeferredBytes = 64ULL << 20;
        if (h.type == FrameType::Append) {
            // An append may extend a whole file still waiting to be installed.
            if (applier_->pending_files() > 0) commit_applied();
        } else if (h.type != FrameType::File || applier_->pending_files() >= kMaxDeferredFiles ||
                   applier_->pending_bytes() >= kMaxDeferredBytes) {
            commit_applied();
        }
    }
    if (h.type == FrameType::File || h.type == FrameType::Append) applier_->begin(h, path);
    return {};
}

Status Engine::Worker::on_payload(std::span<const std::uint8_t> chunk) {
    if (rx_.type == FrameType::Rename) {
        rx_payload_.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
        return {};
    }
    applier_->write(chunk);
    return {};
}

Status Engine::Worker::on_frame_end() {
    const FrameHeader& h = rx_;
    switch (h.type) {
        case FrameType::File:
        case FrameType::Append: {
            const AckStatus s = applier_->end();
            if (s == AckStatus::Ok) {
                bytes_applied_ += h.length;
                ++files_applied_;
            }
            note_apply(s, rx_path_);
            if (s == AckStatus::Ok && h.type == FrameType::Append && applier_->appends_pending()) {
                // Visible now, durable (and acked) with the others of its window: one
                // fdatasync per file per window instead of one per append.
                held_acks_.push_back(HeldAck{h.seq, rx_path_});
                if (append_commit_due_ns_ == 0) append_commit_due_ns_ = mono_ns() + kAppendWindowNs;
                return {};
            }
            ack(h.seq, s);
            return {};
        }
        case FrameType::Delete: {
            const AckStatus s = applier_->apply_delete(h.root, rx_path_);
            note_apply(s, rx_path_);
            ack(h.seq, s);
            return {};
        }
        case FrameType::Rename: {
            if (auto st = check_rel_path(rx_payload_); !st)
                return unexpected(st.error().wrap("rename target"));
            const AckStatus s = applier_->apply_rename(h.root, rx_path_, rx_payload_);
            if (s != AckStatus::NeedFull) note_apply(s, rx_path_);
            ack(h.seq, s);
            return {};
        }
        case FrameType::ManifestRequest:
            send_manifest((h.aux & 1) != 0, h.seq);
            return {};
        case FrameType::SyncDone:
            // Every difference was sent before this; it is whole here if none of them failed.
            if (rx_failures_ == 0 && !initial_done_) {
                initial_done_ = true;
                log::info("sync", "standby caught up files={} bytes={}", files_applied_,
                          bytes_applied_);
                emit(SyncEvent::Kind::InitialSyncDone, "standby caught up", files_applied_,
                     bytes_applied_);
            }
            rx_failures_ = 0;
            ack(h.seq, AckStatus::Ok);
            return {};
        case FrameType::Ping:
            ack(h.seq, AckStatus::Ok);
            return {};
        case FrameType::Ack:
            on_ack(h);
            return {};
        case FrameType::ManifestEntry: {
            ManifestEntry ent{h.offset, h.mtime_ns, h.file_mode, std::nullopt};
            if ((h.aux & 1) != 0) ent.checksum = h.checksum;
            if (peer_manifest_[h.root].size() > 10'000'000)
                return fail("manifest: too many entries");
            peer_manifest_[h.root][rx_path_] = ent;
            return {};
        }
        case FrameType::ManifestEnd:
            on_manifest_end(h.seq);
            return {};
        case FrameType::FullRequest:
            start_full_backup("requested by the standby");
            return {};
    }
    return {};
}

}  // namespace ha::sync
