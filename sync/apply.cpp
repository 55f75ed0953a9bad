#include "sync/apply.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>

#include "common/log.hpp"

namespace ha::sync {

namespace {

AckStatus status_for_errno(int err) {
    switch (err) {
        case ENOSPC:
        case EDQUOT:
            return AckStatus::NoSpace;
        case ELOOP:
        case EXDEV:
        case ENOTDIR:
        case EISDIR:
            return AckStatus::Refused;
        default:
            return AckStatus::IoError;
    }
}

AckStatus status_for(const Error& e) {
    return status_for_errno(e.code.value());
}

Status write_all_at(int fd, const std::uint8_t* p, std::size_t n, std::uint64_t off) {
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return last_errno("pwrite");
        }
        p += w;
        n -= static_cast<std::size_t>(w);
        off += static_cast<std::uint64_t>(w);
    }
    return {};
}

std::string temp_name(std::string_view leaf) {
    std::uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<std::uint32_t>(::getpid());
    // Keep within NAME_MAX: the leaf may already be 255 bytes.
    const auto shown = leaf.substr(0, 200);
    return fmt::format("{}{}.{:08x}", kTempPrefix, shown, r);
}

}  // namespace

Result<Applier> Applier::create(const std::vector<Root>& roots,
                                std::shared_ptr<const ChecksumKey> key) {
    if (roots.size() > kMaxRoots)
        return fail(fmt::format("sync: {} roots (max {})", roots.size(), kMaxRoots));
    std::vector<OpenRoot> open;
    for (const auto& r : roots) {
        HA_TRY_CTX(fd, open_root(r.path, true), "sync applier");
        const std::size_t stale = remove_stale_temps(fd);
        if (stale > 0) log::info("sync", "removed partial files root={} count={}", r.path, stale);
        open.push_back(OpenRoot{std::move(fd), r.mode, r.path});
    }
    return Applier(std::move(open), std::move(key));
}

AckStatus Applier::fail_with(AckStatus s, std::string why) {
    last_error_ = std::move(why);
    return s;
}

void Applier::discard() {
    if (!tmp_name_.empty() && dir_) ::unlinkat(dir_.get(), tmp_name_.c_str(), 0);
    tmp_name_.clear();
    out_.reset();
    dir_.reset();
}

void Applier::begin(const FrameHeader& h, std::string_view path) {
    discard();
    cur_ = h;
    cur_path_ = std::string(path);
    written_ = 0;
    pending_ = AckStatus::Ok;
    hasher_.emplace(*key_);
    const auto& root = roots_[h.root];
    auto dir = open_parent(root.fd, path, true, leaf_);
    if (!dir) {
        pending_ = fail_with(status_for(dir.error()), dir.error().wrap(cur_path_).message());
        return;
    }
    dir_ = std::move(*dir);
    if (h.type == FrameType::Append) {
        auto fd = open_beneath(root.fd, path, O_WRONLY);
        if (!fd) {
            pending_ =
                fd.error().code == std::errc::no_such_file_or_directory
                    ? fail_with(AckStatus::NeedFull, fmt::format("append {}: missing", cur_path_))
                    : fail_with(status_for(fd.error()), fd.error().message());
            return;
        }
        struct stat st {};
        if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
            pending_ = fail_with(AckStatus::Refused,
                                 fmt::format("append {}: not a regular file", cur_path_));
            return;
        }
        if (static_cast<std::uint64_t>(st.st_size) != h.offset) {
            pending_ = fail_with(AckStatus::NeedFull,
                                 fmt::format("append {}: standby has {} bytes, frame at {}",
                                             cur_path_, st.st_size, h.offset));
            return;
        }
        out_ = std::move(*fd);
        return;
    }
    tmp_name_ = temp_name(leaf_);
    const int fd = ::openat(dir_.get(), tmp_name_.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        const int err = errno;
        tmp_name_.clear();
        pending_ = fail_with(status_for_errno(err),
                             fmt::format("create temp for {}: {}", cur_path_, std::strerror(err)));
        return;
    }
    out_ = UniqueFd(fd);
    // Reserve the space up front so a full disk is found before any byte moves.
    if (h.length > 0) {
        const int rc = ::posix_fallocate(out_.get(), 0, static_cast<off_t>(h.length));
        if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
            pending_ = fail_with(status_for_errno(rc),
                                 fmt::format("fallocate {} bytes for {}: {}", h.length, cur_path_,
                                             std::strerror(rc)));
            discard();
        }
    }
}

void Applier::write(std::span<const std::uint8_t> chunk) {
    if (pending_ != AckStatus::Ok || !out_) return;
    hasher_->update(chunk.data(), chunk.size());
    const std::uint64_t at = (cur_.type == FrameType::Append ? cur_.offset : 0) + written_;
    if (auto st = write_all_at(out_.get(), chunk.data(), chunk.size(), at); !st) {
        pending_ = fail_with(status_for(st.error()), st.error().wrap(cur_path_).message());
        if (cur_.type == FrameType::Append) {
            if (::ftruncate(out_.get(), static_cast<off_t>(cur_.offset)) != 0) {
                log::warn("sync", "truncate after failed append path={} err={}", cur_path_,
                          std::strerror(errno));
            }
        } else {
            discard();
        }
        return;
    }
    written_ += chunk.size();
}

AckStatus Applier::install(const UniqueFd& dir, const std::string& tmp, const std::string& leaf,
                           bool sqlite, const std::string& path) {
    // A stale -wal beside a replaced database would be replayed into the new file: remove the
    // side files first (the snapshot itself is in rollback-journal mode and needs none).
    if (sqlite) {
        for (const char* suffix : {"-wal", "-shm", "-journal"}) {
            const std::string side = leaf + suffix;
            ::unlinkat(dir.get(), side.c_str(), 0);
        }
    }
    if (::renameat(dir.get(), tmp.c_str(), dir.get(), leaf.c_str()) != 0) {
        const int err = errno;
        return fail_with(status_for_errno(err),
                         fmt::format("rename into {}: {}", path, std::strerror(err)));
    }
    return AckStatus::Ok;
}

void Applier::mark_dirty(UniqueFd dir) {
    // The directory entry is made durable by sync_dirs() once per received batch, before the
    // acks of that batch leave: one fsync per directory instead of one per file.
    struct stat st {};
    if (::fstat(dir.get(), &st) != 0) return;
    for (const auto& d : dirty_) {
        if (d.dev == st.st_dev && d.ino == st.st_ino) return;
    }
    dirty_.push_back(DirtyDir{std::move(dir), st.st_dev, st.st_ino});
}

std::size_t Applier::commit() {
    if (deferred_.empty()) return 0;
    std::vector<dev_t> synced;
    bool ok = true;
    for (const auto& p : deferred_) {
        struct stat st {};
        if (::fstat(p.dir.get(), &st) != 0) continue;
        if (std::find(synced.begin(), synced.end(), st.st_dev) != synced.end()) continue;
        synced.push_back(st.st_dev);
        if (::syncfs(p.dir.get()) != 0) {
            ok = false;
            last_error_ = fmt::format("syncfs before installing {} files: {}", deferred_.size(),
                                      std::strerror(errno));
        }
    }
    std::size_t failed = 0;
    for (auto& p : deferred_) {
        if (!ok || install(p.dir, p.tmp, p.leaf, p.sqlite, p.path) != AckStatus::Ok) {
            ::unlinkat(p.dir.get(), p.tmp.c_str(), 0);
            ++failed;
            continue;
        }
        mark_dirty(std::move(p.dir));
    }
    deferred_.clear();
    pending_bytes_ = 0;
    return failed;
}

std::vector<std::string> Applier::sync_appends() {
    std::vector<std::string> failed;
    for (auto& d : dirty_appends_) {
        if (::fdatasync(d.fd.get()) == 0) continue;
        const int err = errno;
        last_error_ = fmt::format("fdatasync {}: {}", d.path, std::strerror(err));
        // Not durable, not acknowledged: cut it back so the active's re-send lands at the
        // offset it expects.
        if (::ftruncate(d.fd.get(), static_cast<off_t>(d.batch_start)) != 0)
            log::warn("sync", "truncate after failed fdatasync path={}", d.path);
        failed.push_back(d.path);
    }
    dirty_appends_.clear();
    return failed;
}

std::size_t Applier::sync_dirs() {
    std::size_t failed = 0;
    for (auto& d : dirty_) {
        if (::fsync(d.fd.get()) != 0) ++failed;
    }
    dirty_.clear();
    return failed;
}

void Applier::abort() {
    if (out_ && cur_.type == FrameType::Append && pending_ == AckStatus::Ok) {
        if (::ftruncate(out_.get(), static_cast<off_t>(cur_.offset)) != 0) {
            log::warn("sync", "truncate after aborted append path={} err={}", cur_path_,
                      std::strerror(errno));
        }
    }
    discard();
    pending_ = AckStatus::Ok;
}

AckStatus Applier::end() {
    if (pending_ != AckStatus::Ok) {
        discard();
        return pending_;
    }
    const bool append = cur_.type == FrameType::Append;
    if (!out_) return fail_with(AckStatus::IoError, "no transfer in progress");
    if (hasher_->finish() != cur_.checksum) {
        if (append && ::ftruncate(out_.get(), static_cast<off_t>(cur_.offset)) != 0) {
            log::warn("sync", "truncate after bad append path={} err={}", cur_path_,
                      std::strerror(errno));
        }
        discard();
        return fail_with(AckStatus::ChecksumMismatch,
                         fmt::format("{}: checksum mismatch", cur_path_));
    }
    const timespec times[2] = {{0, UTIME_OMIT},
                               {static_cast<time_t>(cur_.mtime_ns / 1'000'000'000),
                                static_cast<long>(cur_.mtime_ns % 1'000'000'000)}};
    if (!append) {
        if (::fchmod(out_.get(), cur_.file_mode) != 0) {
            const int err = errno;
            discard();
            return fail_with(status_for_errno(err),
                             fmt::format("chmod {}: {}", cur_path_, std::strerror(err)));
        }
    }
    ::futimens(out_.get(), times);
    if (!append && group_commit_) {
        pending_bytes_ += cur_.length;
        deferred_.push_back(Pending{std::move(dir_), tmp_name_, leaf_, cur_path_,
                                    roots_[cur_.root].mode == Mode::Sqlite});
        tmp_name_.clear();
        out_.reset();
        return AckStatus::Ok;
    }
    if (append && group_commit_) {
        struct stat st {};
        if (::fstat(out_.get(), &st) == 0) {
            const bool known = std::any_of(
                dirty_appends_.begin(), dirty_appends_.end(),
                [&](const DirtyAppend& d) { return d.dev == st.st_dev && d.ino == st.st_ino; });
            if (!known)
                dirty_appends_.push_back(
                    DirtyAppend{std::move(out_), st.st_dev, st.st_ino, cur_.offset, cur_path_});
            out_.reset();
            dir_.reset();
            return AckStatus::Ok;
        }
    }
    if ((append ? ::fdatasync(out_.get()) : ::fsync(out_.get())) != 0) {
        const int err = errno;
        if (append && ::ftruncate(out_.get(), static_cast<off_t>(cur_.offset)) != 0) {
            log::warn("sync", "truncate after failed fsync path={}", cur_path_);
        }
        discard();
        return fail_with(status_for_errno(err),
                         fmt::format("fsync {}: {}", cur_path_, std::strerror(err)));
    }
    if (!append) {
        const AckStatus st =
            install(dir_, tmp_name_, leaf_, roots_[cur_.root].mode == Mode::Sqlite, cur_path_);
        if (st != AckStatus::Ok) {
            discard();
            return st;
        }
        tmp_name_.clear();
        mark_dirty(std::move(dir_));
    }
    out_.reset();
    dir_.reset();
    return AckStatus::Ok;
}

AckStatus Applier::apply_delete(std::uint8_t root, std::string_view path) {
    std::string leaf;
    auto dir = open_parent(roots_[root].fd, path, false, leaf);
    if (!dir) {
        if (dir.error().code == std::errc::no_such_file_or_directory) return AckStatus::Ok;
        return fail_with(status_for(dir.error()),
                         dir.error().wrap(fmt::format("delete {}", path)).message());
    }
    if (auto st = remove_at(*dir, leaf); !st)
        return fail_with(status_for(st.error()),
                         st.error().wrap(fmt::format("delete {}", path)).message());
    ::fsync(dir->get());
    return AckStatus::Ok;
}

AckStatus Applier::apply_rename(std::uint8_t root, std::string_view from, std::string_view to) {
    std::string from_leaf;
    std::string to_leaf;
    auto from_dir = open_parent(roots_[root].fd, from, false, from_leaf);
    if (!from_dir)
        return fail_with(AckStatus::NeedFull, fmt::format("rename source {} missing", from));
    auto to_dir = open_parent(roots_[root].fd, to, true, to_leaf);
    if (!to_dir)
        return fail_with(status_for(to_dir.error()),
                         to_dir.error().wrap("rename target").message());
    if (::renameat(from_dir->get(), from_leaf.c_str(), to_dir->get(), to_leaf.c_str()) != 0) {
        const int err = errno;
        if (err == ENOENT)
            return fail_with(AckStatus::NeedFull, fmt::format("rename source {} missing", from));
        return fail_with(status_for_errno(err),
                         fmt::format("rename {} -> {}: {}", from, to, std::strerror(err)));
    }
    ::fsync(to_dir->get());
    if (from_dir->get() != to_dir->get()) ::fsync(from_dir->get());
    return AckStatus::Ok;
}

}  // namespace ha::sync
