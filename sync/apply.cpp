#include "sync/apply.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.hpp"
#include "sync/fsutil.hpp"

namespace ha::sync {

namespace {

// Past this many cached directories or open append targets the cache starts over.
constexpr std::size_t kMaxCached = 1024;
// Whole files at least this big get their space reserved before any byte moves, so a full disk is
// found at once instead of after the transfer; smaller ones are not worth the extra call.
constexpr std::uint64_t kFallocateMin = 1ULL << 20;

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

}  // namespace

Applier::Applier(std::vector<OpenRoot> roots, std::shared_ptr<const ChecksumKey> key)
    : roots_(std::move(roots)), key_(std::move(key)) {
    if (getrandom(&tmp_salt_, sizeof tmp_salt_, 0) != sizeof tmp_salt_)
        tmp_salt_ = static_cast<std::uint32_t>(::getpid());
}

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
    if (!tmp_name_.empty() && dir_) ::unlinkat(dir_->get(), tmp_name_.c_str(), 0);
    tmp_name_.clear();
    out_.reset();
    dir_.reset();
    append_out_.reset();
}

void Applier::forget_caches() {
    dirs_.clear();
    targets_.clear();
}

Result<SharedFd> Applier::parent_dir(std::uint8_t root, std::string_view path, bool create,
                                     std::string& leaf) {
    const auto slash = path.rfind('/');
    leaf = std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
    const std::string key =
        path_key(root, slash == std::string_view::npos ? "" : path.substr(0, slash));
    if (auto it = dirs_.find(key); it != dirs_.end()) return it->second;
    std::string ignored;
    auto dir = open_parent(roots_[root].fd, path, create, ignored);
    if (!dir) return unexpected(dir.error());
    if (dirs_.size() >= kMaxCached) dirs_.clear();
    auto shared = std::make_shared<const UniqueFd>(std::move(*dir));
    dirs_.emplace(key, shared);
    return shared;
}

Result<SharedFd> Applier::append_target(std::uint8_t root, std::string_view path) {
    const std::string key = path_key(root, path);
    if (auto it = targets_.find(key); it != targets_.end()) return it->second;
    auto fd = open_beneath(roots_[root].fd, path, O_WRONLY);
    if (!fd) return unexpected(fd.error());
    if (targets_.size() >= kMaxCached) targets_.clear();
    auto shared = std::make_shared<const UniqueFd>(std::move(*fd));
    targets_.emplace(key, shared);
    return shared;
}

void Applier::begin(const FrameHeader& h, std::string_view path) {
    discard();
    cur_ = h;
    cur_path_ = std::string(path);
    written_ = 0;
    pending_ = AckStatus::Ok;
    hasher_.emplace(*key_);
    if (h.type == FrameType::Append) {
        for (int attempt = 0; attempt < 2; ++attempt) {
            auto fd = append_target(h.root, path);
            if (!fd) {
                pending_ =
                    fd.error().code == std::errc::no_such_file_or_directory
                        ? fail_with(AckStatus::NeedFull,
                                    fmt::format("append {}: missing", cur_path_))
                        : fail_with(status_for(fd.error()), fd.error().wrap(cur_path_).message());
                return;
            }
            struct stat st {};
            if (::fstat((*fd)->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
                pending_ = fail_with(AckStatus::Refused,
                                     fmt::format("append {}: not a regular file", cur_path_));
                return;
            }
            if (st.st_nlink == 0) {  // removed behind our back: open the file that has the name
                targets_.erase(path_key(h.root, path));
                continue;
            }
            if (static_cast<std::uint64_t>(st.st_size) != h.offset) {
                pending_ = fail_with(AckStatus::NeedFull,
                                     fmt::format("append {}: standby has {} bytes, frame at {}",
                                                 cur_path_, st.st_size, h.offset));
                return;
            }
            append_out_ = *fd;
            append_id_ = {st.st_dev, st.st_ino};
            return;
        }
        pending_ = fail_with(AckStatus::NeedFull, fmt::format("append {}: replaced", cur_path_));
        return;
    }
    auto dir = parent_dir(h.root, path, true, leaf_);
    if (!dir) {
        pending_ = fail_with(status_for(dir.error()), dir.error().wrap(cur_path_).message());
        return;
    }
    dir_ = *dir;
    int fd = -1;
    int err = 0;
    for (int attempt = 0; attempt < 3 && fd < 0; ++attempt) {
        // Keep within NAME_MAX: the leaf may already be 255 bytes.
        tmp_name_ = fmt::format("{}{}.{:08x}{:x}", kTempPrefix,
                                std::string_view(leaf_).substr(0, 200), tmp_salt_, tmp_counter_++);
        fd = ::openat(dir_->get(), tmp_name_.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        err = errno;
        if (fd < 0 && err != EEXIST) break;
    }
    if (fd < 0) {
        tmp_name_.clear();
        pending_ = fail_with(status_for_errno(err),
                             fmt::format("create temp for {}: {}", cur_path_, std::strerror(err)));
        return;
    }
    out_ = UniqueFd(fd);
    if (h.length >= kFallocateMin) {
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
    if (pending_ != AckStatus::Ok) return;
    const bool append = cur_.type == FrameType::Append;
    const int fd = append ? (append_out_ ? append_out_->get() : -1) : out_.get();
    if (fd < 0) return;
    hasher_->update(chunk.data(), chunk.size());
    const std::uint64_t at = (append ? cur_.offset : 0) + written_;
    if (auto st = write_all_at(fd, chunk.data(), chunk.size(), at); !st) {
        pending_ = fail_with(status_for(st.error()), st.error().wrap(cur_path_).message());
        if (append) {
            if (::ftruncate(fd, static_cast<off_t>(cur_.offset)) != 0) {
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

AckStatus Applier::end() {
    if (pending_ != AckStatus::Ok) {
        discard();
        return pending_;
    }
    const bool append = cur_.type == FrameType::Append;
    const int fd = append ? (append_out_ ? append_out_->get() : -1) : out_.get();
    if (fd < 0) return fail_with(AckStatus::IoError, "no transfer in progress");
    if (hasher_->finish() != cur_.checksum) {
        if (append && ::ftruncate(fd, static_cast<off_t>(cur_.offset)) != 0) {
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
        if (::fchmod(fd, cur_.file_mode) != 0) {
            const int err = errno;
            discard();
            return fail_with(status_for_errno(err),
                             fmt::format("chmod {}: {}", cur_path_, std::strerror(err)));
        }
        ::futimens(fd, times);
        pending_bytes_ += cur_.length;
        files_.push_back(CommitJob::File{cur_.seq, cur_.root, std::move(dir_), tmp_name_, leaf_,
                                         cur_path_, roots_[cur_.root].mode == Mode::Sqlite,
                                         cur_.mtime_ns});
        tmp_name_.clear();
        out_.reset();
        // The next append to this name must open the file installed by this one.
        targets_.erase(path_key(cur_.root, cur_path_));
        return AckStatus::Ok;
    }
    // The mtime is set once per group, by the committer, with the newest one.
    std::size_t i = 0;
    while (i < append_ids_.size() &&
           (append_ids_[i].dev != append_id_.dev || append_ids_[i].ino != append_id_.ino))
        ++i;
    if (i == append_ids_.size()) {
        append_ids_.push_back(append_id_);
        appends_.push_back(CommitJob::Append{append_out_, cur_.offset, cur_path_});
    }
    appends_[i].mtime_ns = cur_.mtime_ns;
    last_append_ = i;
    append_out_.reset();
    return AckStatus::Ok;
}

void Applier::abort() {
    if (append_out_ && cur_.type == FrameType::Append && pending_ == AckStatus::Ok) {
        if (::ftruncate(append_out_->get(), static_cast<off_t>(cur_.offset)) != 0) {
            log::warn("sync", "truncate after aborted append path={} err={}", cur_path_,
                      std::strerror(errno));
        }
    }
    discard();
    pending_ = AckStatus::Ok;
}

std::vector<CommitJob::File> Applier::take_files() {
    pending_bytes_ = 0;
    return std::exchange(files_, {});
}

std::vector<CommitJob::Append> Applier::take_appends() {
    append_ids_.clear();
    return std::exchange(appends_, {});
}

void Applier::truncate_append(const CommitJob::Append& a) {
    if (::ftruncate(a.fd->get(), static_cast<off_t>(a.batch_start)) != 0)
        log::warn("sync", "truncate after failed fdatasync path={} err={}", a.path,
                  std::strerror(errno));
    targets_.clear();
}

AckStatus Applier::apply_delete(std::uint8_t root, std::string_view path,
                                std::vector<SharedFd>& dirs) {
    forget_caches();
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
    if (roots_[root].mode == Mode::Sqlite) {
        // A database goes with its side files (the replica's WAL persists, see replica.hpp).
        for (const char* suffix : {"-wal", "-shm", "-journal"}) {
            const std::string side = leaf + suffix;
            ::unlinkat(dir->get(), side.c_str(), 0);
        }
    }
    dirs.push_back(std::make_shared<const UniqueFd>(std::move(*dir)));
    return AckStatus::Ok;
}

AckStatus Applier::apply_rename(std::uint8_t root, std::string_view from, std::string_view to,
                                std::vector<SharedFd>& dirs) {
    forget_caches();
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
    dirs.push_back(std::make_shared<const UniqueFd>(std::move(*to_dir)));
    dirs.push_back(std::make_shared<const UniqueFd>(std::move(*from_dir)));
    return AckStatus::Ok;
}

}  // namespace ha::sync
