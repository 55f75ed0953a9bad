// The standby's receive path: frames into the Applier, acks, manifests, group commit.
#include <algorithm>
#include <cstring>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "sync/fsutil.hpp"
#include "sync/worker.hpp"

namespace ha::sync {

namespace {
// A received batch of whole files is handed to the committer at this size at the latest; with two
// jobs in flight the engine stops reading until one is done (back-pressure to the active).
constexpr std::size_t kMaxBatchFiles = 4096;
constexpr std::uint64_t kMaxBatchBytes = 64ULL << 20;
constexpr std::size_t kMaxJobsInFlight = 2;
// Appends are visible when written; only their acks wait for the fdatasync. Appends arriving
// within this window share one: a CDR line per ms would otherwise cost an fdatasync (a device
// flush, ~100 us of CPU in a VM), an ack and a wake-up of the active each. At 20 ms that is 50
// a second, and an append is durable and acknowledged 20 ms + one fdatasync after it arrived.
constexpr std::uint64_t kAppendWindowNs = 20'000'000;
constexpr std::size_t kMaxWindowAppends = 256;

}  // namespace

// ---------------------------------------------------------------- standby receive path

void Engine::Worker::queue_ack(std::uint64_t seq, AckStatus s, bool ready, bool sync_done) {
    acks_.push_back(PendingAck{seq, s, ready, sync_done});
}

void Engine::Worker::set_ack(std::uint64_t seq, AckStatus s) {
    auto it = std::lower_bound(acks_.begin(), acks_.end(), seq,
                               [](const PendingAck& a, std::uint64_t v) { return a.seq < v; });
    if (it == acks_.end() || it->seq != seq) return;
    it->status = s;
    it->ready = true;
}

void Engine::Worker::send_ready_acks() {
    while (!acks_.empty() && acks_.front().ready) {
        const PendingAck a = acks_.front();
        acks_.pop_front();
        if (a.sync_done) {
            // Every difference was sent before this and is acknowledged above: the standby is
            // whole if none of them failed.
            if (rx_failures_ == 0 && !initial_done_) {
                initial_done_ = true;
                log::info("sync", "standby caught up files={} bytes={}", files_applied_,
                          bytes_applied_);
                emit(SyncEvent::Kind::InitialSyncDone, "standby caught up", files_applied_,
                     bytes_applied_);
            }
            rx_failures_ = 0;
        }
        send_frame(
            FrameHeader{
                .type = FrameType::Ack, .seq = a.seq, .aux = static_cast<std::uint64_t>(a.status)},
            "");
    }
}

CommitJob& Engine::Worker::open_job() {
    if (!open_job_) {
        open_job_ = std::make_unique<CommitJob>();
        open_job_->conn_gen = conn_gen_;
    }
    return *open_job_;
}

void Engine::Worker::submit_open(bool force) {
    if (!applier_ || !committer_) return;
    if (!force && committer_->in_flight() > 0) return;
    if (applier_->pending_files() == 0 && !applier_->appends_pending() &&
        (!open_job_ || open_job_->empty()))
        return;
    const bool appends_only =
        applier_->pending_files() == 0 && (!open_job_ || open_job_->dirs.empty());
    if (!force && appends_only && mono_ns() < append_due_ns_ && open_job_ &&
        open_job_->frames.size() < kMaxWindowAppends)
        return;
    auto& job = open_job();
    job.files = applier_->take_files();
    job.appends = applier_->take_appends();
    committer_->submit(std::move(open_job_));
    append_due_ns_ = 0;
}

void Engine::Worker::on_commit_done() {
    std::uint64_t v = 0;
    (void)!::read(committer_->done_fd().get(), &v, sizeof v);
    while (committer_) {
        auto job = committer_->take_done();
        if (!job) break;
        finish_commit(std::move(job));
    }
    submit_open(false);
    send_ready_acks();
}

void Engine::Worker::finish_commit(std::unique_ptr<CommitJob> job) {
    const bool same_conn = conn_ && job->conn_gen == conn_gen_;
    std::size_t failed = 0;
    for (const auto& f : job->files) {
        if (auto it = installing_.find(path_key(f.root, f.path));
            it != installing_.end() && --it->second == 0)
            installing_.erase(it);
        if (f.status != AckStatus::Ok) {
            ++failed;
            note_apply(f.status, f.path);
        } else {
            ++files_applied_;
        }
        if (same_conn) set_ack(f.seq, f.status);
    }
    bool appends_failed = false;
    for (const auto& a : job->appends) {
        if (a.status == AckStatus::Ok) continue;
        appends_failed = true;
        ++failed;
        if (applier_) applier_->truncate_append(a);
    }
    for (const auto& fr : job->frames) {
        if (same_conn) set_ack(fr.seq, fr.status);
    }
    if (!job->error.empty()) {
        ++errors_;
        log::error("sync", "commit of {} files: {}", job->files.size(), job->error);
        if (failed == 0) emit(SyncEvent::Kind::ApplyFailed, job->error);
    }
    if (appends_failed && conn_) {
        // Not durable, not acknowledged, cut back: the next manifest exchange resumes from there.
        emit(SyncEvent::Kind::ApplyFailed, job->error);
        drop_conn("appended data could not be made durable");
    }
}

template <typename Pending>
void Engine::Worker::wait_installs(Pending&& pending) {
    while (committer_ && pending()) {
        submit_open(true);
        auto job = committer_->wait_one();
        if (!job) return;
        finish_commit(std::move(job));
    }
}

void Engine::Worker::flush_commits() {
    if (!committer_) return;
    submit_open(true);
    while (auto job = committer_->wait_one()) finish_commit(std::move(job));
}

void Engine::Worker::note_apply(AckStatus s, std::string_view path) {
    if (s == AckStatus::Ok) {
        if (std::exchange(standby_disk_full_, false)) {
            log::info("sync", "disk has space again path={}", path);
            emit(SyncEvent::Kind::Restored, "disk-full");
        }
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
    const bool standby = role_ == Role::Standby;
    frame_ = h;
    if (trailer_of_) {
        // Nothing may come between a file and its checksum trailer.
        if (h.type != FrameType::Checksum || h.seq != trailer_of_->seq)
            return fail(fmt::format("{} frame where the checksum of seq {} belongs",
                                    to_string(h.type), trailer_of_->seq));
    } else if (h.type == FrameType::Checksum) {
        return fail(fmt::format("checksum frame for seq {} without its file", h.seq));
    }
    if (h.type != FrameType::Checksum) {
        rx_ = h;
        rx_path_ = std::string(path);
    }
    rx_payload_.clear();
    switch (h.type) {
        case FrameType::Checksum:
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
    if (standby && h.type == FrameType::File &&
        (applier_->pending_files() >= kMaxBatchFiles ||
         applier_->pending_bytes() >= kMaxBatchBytes)) {
        // Back-pressure: at most kMaxJobsInFlight batches wait for the disk; past that the
        // engine stops reading until one is done, and TCP slows the active down.
        while (committer_ && committer_->in_flight() >= kMaxJobsInFlight) {
            auto job = committer_->wait_one();
            if (!job) break;
            finish_commit(std::move(job));
        }
        submit_open(true);
        send_ready_acks();
    }
    if (standby && h.type == FrameType::Append) {
        // An append extends the file a pending whole-file transfer of the same name installs.
        const std::string k = path_key(h.root, path);
        wait_installs([&] { return installing_.contains(k); });  // a lookup, not a scan
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

void Engine::Worker::finish_data_frame(const FrameHeader& h) {
    const AckStatus s = applier_->end();
    note_apply(s, rx_path_);
    if (s != AckStatus::Ok) {
        queue_ack(h.seq, s, true);
        return;
    }
    bytes_applied_ += h.length;
    // Not acknowledged before the committer has made it durable (files: and installed).
    queue_ack(h.seq, s, false);
    if (h.type == FrameType::File) {
        ++installing_[path_key(h.root, rx_path_)];
    } else {
        ++files_applied_;
        open_job().frames.push_back({h.seq, applier_->last_append()});
        if (append_due_ns_ == 0) append_due_ns_ = mono_ns() + kAppendWindowNs;
    }
}

Status Engine::Worker::on_frame_end() {
    // A Checksum frame's header is in `h`; the file it belongs to stays in rx_ / rx_path_.
    const FrameHeader h = frame_;
    switch (h.type) {
        case FrameType::Checksum: {
            const FrameHeader file = *trailer_of_;
            trailer_of_.reset();
            if ((h.aux & kChecksumAbandon) != 0) {
                // The file changed while the active sent it; it sends the new version later.
                applier_->abort();
                log::debug("sync", "transfer abandoned by the active path={}", rx_path_);
                queue_ack(file.seq, AckStatus::ChecksumMismatch, true);
            } else {
                applier_->set_checksum(h.checksum);
                finish_data_frame(file);
            }
            return {};
        }
        case FrameType::File:
        case FrameType::Append:
            if (h.type == FrameType::File && (h.aux & kFileTrailer) != 0) {
                trailer_of_ = h;  // checked when its Checksum frame is in
                return {};
            }
            finish_data_frame(h);
            return {};
        case FrameType::Delete:
        case FrameType::Rename: {
            if (h.type == FrameType::Rename) {
                if (auto st = check_rel_path(rx_payload_); !st)
                    return unexpected(st.error().wrap("rename target"));
            }
            // Installs still pending at or under either name go first.
            const std::string_view to = rx_payload_;
            const bool rename = h.type == FrameType::Rename;
            wait_installs([&] {
                return std::any_of(installing_.begin(), installing_.end(), [&](const auto& e) {
                    return key_at_or_under(e.first, h.root, rx_path_) ||
                           (rename && key_at_or_under(e.first, h.root, to));
                });
            });
            if (cfg_.roots[h.root].mode == Mode::Sqlite) {
                // No replica connection may outlive its file (replica.hpp).
                auto& job = open_job();
                job.close_sqlite.emplace_back(h.root, rx_path_);
                if (rename) job.close_sqlite.emplace_back(h.root, std::string(to));
                flush_commits();
            }
            std::vector<SharedFd> dirs;
            const AckStatus s = rename ? applier_->apply_rename(h.root, rx_path_, to, dirs)
                                       : applier_->apply_delete(h.root, rx_path_, dirs);
            if (s != AckStatus::NeedFull) note_apply(s, rx_path_);
            if (s != AckStatus::Ok) {
                queue_ack(h.seq, s, true);
                return {};
            }
            // Visible now; acknowledged once the directories are synced.
            queue_ack(h.seq, s, false);
            auto& job = open_job();
            job.frames.push_back({h.seq});
            for (auto& d : dirs) job.dirs.push_back(std::move(d));
            return {};
        }
        case FrameType::ManifestRequest:
            // The manifest lists what is installed: let everything received so far land first.
            flush_commits();
            send_ready_acks();
            send_manifest((h.aux & 1) != 0, h.seq);
            return {};
        case FrameType::SyncDone:
            // Its ack leaves after the acks of every difference sent before it (send_ready_acks
            // decides "caught up" then).
            queue_ack(h.seq, AckStatus::Ok, true, true);
            return {};
        case FrameType::Ping:
            queue_ack(h.seq, AckStatus::Ok, true);
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
