#include "sync/committer.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.hpp"
#include "sync/fsutil.hpp"
#include "sync/replica.hpp"

namespace ha::sync {

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

namespace {

struct DirId {
    dev_t dev;
    ino_t ino;
    const UniqueFd* fd;
};

void note(CommitJob& job, std::string what) {
    if (job.error.empty()) job.error = std::move(what);
}

}  // namespace

void run_commit_job(CommitJob& job, SqliteReplicas* replicas) {
    auto key_of = [](const CommitJob::File& f) { return path_key(f.root, f.path); };
    // 0. Nothing may still hold a replica the engine removes next.
    if (replicas != nullptr) {
        for (const auto& [root, path] : job.close_sqlite) replicas->close_under(root, path);
    }
    // 1a. Snapshots applied through SQLite. Once one of a database is declined, the later ones
    // of the same database in this job are installed by rename too, in order.
    std::vector<std::size_t> applied;  // indexes into job.files
    std::vector<std::string> declined;
    std::vector<char> done(job.files.size(), 0);
    if (replicas != nullptr) {
        for (std::size_t i = 0; i < job.files.size(); ++i) {
            auto& f = job.files[i];
            if (!f.sqlite || f.status != AckStatus::Ok) continue;
            const std::string& k = key_of(f);
            if (std::find(declined.begin(), declined.end(), k) != declined.end()) continue;
            std::string why;
            int err = 0;
            switch (replicas->apply(k, f.dir, f.tmp, f.leaf, f.mtime_ns, why, err)) {
                case SqliteReplicas::Outcome::Applied:
                    applied.push_back(i);
                    done[i] = 1;
                    break;
                case SqliteReplicas::Outcome::Declined:
                    log::debug("sync", "snapshot of {} installed by rename: {}", f.path, why);
                    declined.push_back(k);
                    break;
                case SqliteReplicas::Outcome::Failed:
                    f.status = status_for_errno(err);
                    note(job, fmt::format("{}: {}", f.path, why));
                    ::unlinkat(f.dir->get(), f.tmp.c_str(), 0);
                    done[i] = 1;
                    break;
            }
        }
    }
    std::size_t rest = 0;
    for (std::size_t i = 0; i < job.files.size(); ++i) rest += done[i] == 0 ? 1 : 0;
    // 1b. The bytes of every other whole file, durable before any name points at them.
    if (rest == 1) {
        auto& f = job.files[static_cast<std::size_t>(std::find(done.begin(), done.end(), 0) -
                                                     done.begin())];
        const int fd = f.status == AckStatus::Ok ? ::openat(f.dir->get(), f.tmp.c_str(),
                                                            O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                                                 : -1;
        const UniqueFd tmp(fd);
        if (f.status == AckStatus::Ok && (fd < 0 || ::fsync(fd) != 0)) {
            const int err = errno;
            f.status = status_for_errno(err);
            note(job, fmt::format("fsync {}: {}", f.path, std::strerror(err)));
        }
    } else if (rest > 1) {
        // One syncfs per filesystem instead of one fsync (and one device flush) per file.
        std::vector<std::pair<dev_t, int>> synced;  // device, errno (0 = ok)
        for (std::size_t i = 0; i < job.files.size(); ++i) {
            auto& f = job.files[i];
            if (done[i] != 0 || f.status != AckStatus::Ok) continue;
            struct stat st {};
            if (::fstat(f.dir->get(), &st) != 0) {
                f.status = AckStatus::IoError;
                continue;
            }
            auto it = std::find_if(synced.begin(), synced.end(),
                                   [&](const auto& s) { return s.first == st.st_dev; });
            if (it == synced.end()) {
                const int err = ::syncfs(f.dir->get()) == 0 ? 0 : errno;
                if (err != 0)
                    note(job, fmt::format("syncfs for {} files: {}", job.files.size(),
                                          std::strerror(err)));
                it = synced.insert(synced.end(), {st.st_dev, err});
            }
            if (it->second != 0) f.status = status_for_errno(it->second);
        }
    }
    // 2. Install them, in order; a failed one leaves its old version (or nothing) in place.
    std::vector<DirId> dirty;
    auto mark = [&](const UniqueFd& dir) {
        struct stat st {};
        if (::fstat(dir.get(), &st) != 0) return;
        for (const auto& d : dirty) {
            if (d.dev == st.st_dev && d.ino == st.st_ino) return;
        }
        dirty.push_back({st.st_dev, st.st_ino, &dir});
    };
    for (std::size_t i = 0; i < job.files.size(); ++i) {
        auto& f = job.files[i];
        if (done[i] != 0) continue;
        if (f.status == AckStatus::Ok && f.sqlite && replicas != nullptr &&
            !replicas->retire(key_of(f), f.dir, f.leaf)) {
            // The old replica keeps its WAL and stays whole; the active sends it again later.
            f.status = AckStatus::IoError;
            note(job, fmt::format("replace {}: its WAL could not be emptied", f.path));
        }
        if (f.status == AckStatus::Ok && f.sqlite) {
            // A stale -wal beside a replaced database would be replayed into the new file.
            for (const char* suffix : {"-wal", "-shm", "-journal"}) {
                const std::string side = f.leaf + suffix;
                ::unlinkat(f.dir->get(), side.c_str(), 0);
            }
        }
        if (f.status == AckStatus::Ok &&
            ::renameat(f.dir->get(), f.tmp.c_str(), f.dir->get(), f.leaf.c_str()) != 0) {
            const int err = errno;
            f.status = status_for_errno(err);
            note(job, fmt::format("rename into {}: {}", f.path, std::strerror(err)));
        }
        if (f.status != AckStatus::Ok) {
            ::unlinkat(f.dir->get(), f.tmp.c_str(), 0);
            continue;
        }
        mark(*f.dir);
    }
    // 3. Appended bytes: visible since they were written, durable now.
    for (auto& a : job.appends) {
        const timespec times[2] = {{0, UTIME_OMIT},
                                   {static_cast<time_t>(a.mtime_ns / 1'000'000'000),
                                    static_cast<long>(a.mtime_ns % 1'000'000'000)}};
        ::futimens(a.fd->get(), times);
        if (::fdatasync(a.fd->get()) != 0) {
            const int err = errno;
            a.status = status_for_errno(err);
            note(job, fmt::format("fdatasync {}: {}", a.path, std::strerror(err)));
        }
    }
    for (const std::size_t i : applied) {
        auto& f = job.files[i];
        if (const int err = replicas->sync(key_of(f)); err != 0) {
            f.status = status_for_errno(err);
            note(job, fmt::format("fdatasync {}-wal: {}", f.path, std::strerror(err)));
        }
    }
    // 4. The names.
    for (const auto& d : job.dirs) mark(*d);
    bool dirs_ok = true;
    for (const auto& d : dirty) {
        if (::fsync(d.fd->get()) != 0) {
            dirs_ok = false;
            note(job, fmt::format("fsync directory: {}", std::strerror(errno)));
        }
    }
    if (!dirs_ok) {
        // Which entry did not make it is unknown: none of them is acknowledged as durable.
        for (std::size_t i = 0; i < job.files.size(); ++i) {
            if (done[i] == 0 && job.files[i].status == AckStatus::Ok)
                job.files[i].status = AckStatus::IoError;
        }
        for (auto& fr : job.frames) {
            if (fr.append == CommitJob::kNoAppend && fr.status == AckStatus::Ok)
                fr.status = AckStatus::IoError;
        }
    }
    for (auto& fr : job.frames) {
        if (fr.append != CommitJob::kNoAppend && fr.status == AckStatus::Ok)
            fr.status = job.appends[fr.append].status;
    }
}

Result<std::unique_ptr<Committer>> Committer::create() {
    std::unique_ptr<Committer> c(new Committer());
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return last_errno("eventfd");
    c->done_fd_ = UniqueFd(fd);
    c->replicas_ = std::make_unique<SqliteReplicas>();
    auto t = SmallThread::start("ha-sync-fs", [p = c.get()] { p->loop(); });
    if (!t) return unexpected(t.error());
    c->thread_ = std::move(*t);
    return c;
}

Committer::~Committer() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    thread_.reset();  // joins
}

void Committer::loop() {
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait(lk, [&] { return stop_ || !todo_.empty(); });
        if (todo_.empty()) return;  // stop_, and everything submitted has run
        auto job = std::move(todo_.front());
        todo_.pop_front();
        lk.unlock();
        run_commit_job(*job, replicas_.get());
        lk.lock();
        done_.push_back(std::move(job));
        const std::uint64_t one = 1;
        (void)!::write(done_fd_.get(), &one, sizeof one);
        done_cv_.notify_one();
    }
}

void Committer::submit(std::unique_ptr<CommitJob> job) {
    {
        std::lock_guard lk(mu_);
        todo_.push_back(std::move(job));
    }
    ++in_flight_;
    cv_.notify_one();
}

std::unique_ptr<CommitJob> Committer::take_done() {
    std::lock_guard lk(mu_);
    if (done_.empty()) return nullptr;
    auto job = std::move(done_.front());
    done_.pop_front();
    --in_flight_;
    return job;
}

std::unique_ptr<CommitJob> Committer::wait_one() {
    if (in_flight_ == 0) return nullptr;
    std::unique_lock lk(mu_);
    done_cv_.wait(lk, [&] { return !done_.empty(); });
    auto job = std::move(done_.front());
    done_.pop_front();
    --in_flight_;
    return job;
}

}  // namespace ha::sync
