// The standby's durability work, off the receive loop. The engine thread hands over jobs (files
// whose bytes are written and checked, appended files, directories to sync); one helper thread
// ("ha-sync-fs") runs them in submission order and hands them back with a status per item. The
// engine thread keeps receiving meanwhile, so a 4-8 ms fsync no longer delays the next append.
//
// What a job does, in this order (the ordering is the "temp file, fsync, rename" contract):
//   0. close the SQLite replicas the engine is about to delete (replica.hpp);
//   1. snapshots of WAL-mode databases whose replica is in WAL mode too: applied through SQLite
//      (replica.hpp) - visible at once, made durable in step 3. Every other whole file:
//      make its bytes durable - fsync of the temp file when the job holds one,
//      one syncfs() per filesystem when it holds several (a full sync's small files: one device
//      flush per batch instead of one per file);
//   2. rename each temp file over its name, in order (SQLite side files removed first). A file is
//      visible here, and only here: nothing torn or unchecked is ever visible, even after a crash,
//      because its bytes were durable before its name pointed at them;
//   3. set the mtime of every appended file of the job and fdatasync it (appends are visible
//      when written; this only makes them durable); fdatasync the -wal of every replica applied
//      to in step 1;
//   4. fsync every directory whose entries the job (or the engine thread, for deletes and
//      renames) changed, so the names are durable too.
// Only then does the engine send the acks of the job's frames: an acknowledged change survives a
// crash of the standby. A failed item is reported with its status, its temp file removed.
//
// Threads: submit(), take_done(), wait_one() and in_flight() are for the engine thread only.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sync/thread.hpp"
#include "sync/wire.hpp"

namespace ha::sync {

// An fd several owners keep open: the applier's caches and the jobs that use it.
using SharedFd = std::shared_ptr<const UniqueFd>;

struct CommitJob {
    struct File {  // a checked temp file waiting to be installed
        std::uint64_t seq = 0;
        std::uint8_t root = 0;
        SharedFd dir;  // the temp file is not held open: a full sync batches thousands
        std::string tmp, leaf, path;
        bool sqlite = false;  // a snapshot: applied to its replica, or installed without the
                              // stale -wal/-shm/-journal of the file it replaces
        std::int64_t mtime_ns = 0;
        AckStatus status = AckStatus::Ok;
    };
    struct Append {  // one appended file; its bytes are already in place
        SharedFd fd;
        std::uint64_t batch_start = 0;  // its size before the job's first append
        std::string path;
        std::int64_t mtime_ns = 0;  // the active's mtime after the job's last append
        AckStatus status = AckStatus::Ok;
    };
    static constexpr std::size_t kNoAppend = ~std::size_t{0};
    struct Frame {  // a frame acknowledged when the job is done (appends, deletes, renames)
        std::uint64_t seq = 0;
        std::size_t append = kNoAppend;  // appends[append] decides its status
        AckStatus status = AckStatus::Ok;
    };
    std::vector<File> files;
    std::vector<Append> appends;
    std::vector<Frame> frames;
    std::vector<SharedFd> dirs;  // changed by the engine thread (deletes, renames)
    // Replicas (root, path; "" = the whole root) to close before anything else happens.
    std::vector<std::pair<std::uint8_t, std::string>> close_sqlite;
    std::uint64_t conn_gen = 0;  // acks only go out on the connection the frames came from
    std::string error;           // the first failure, for the log
    [[nodiscard]] bool empty() const {
        return files.empty() && appends.empty() && frames.empty() && dirs.empty() &&
               close_sqlite.empty();
    }
};

class SqliteReplicas;
// Runs a job's steps on the calling thread (the helper thread, or a test). Without `replicas`
// every snapshot is installed by rename.
void run_commit_job(CommitJob& job, SqliteReplicas* replicas = nullptr);
// The ack status an errno from the standby's filesystem maps to.
AckStatus status_for_errno(int err);

class Committer {
  public:
    static Result<std::unique_ptr<Committer>> create();
    ~Committer();  // runs what was submitted, then stops the thread
    Committer(const Committer&) = delete;
    Committer& operator=(const Committer&) = delete;

    void submit(std::unique_ptr<CommitJob> job);
    // The oldest finished job, or null. Jobs come back in submission order.
    std::unique_ptr<CommitJob> take_done();
    // Blocks until the oldest job in flight is done and returns it; null when none is.
    std::unique_ptr<CommitJob> wait_one();
    [[nodiscard]] std::size_t in_flight() const { return in_flight_; }
    // Readable (eventfd) when a job is done; the engine polls it in its ring.
    [[nodiscard]] const UniqueFd& done_fd() const { return done_fd_; }

  private:
    Committer() = default;
    void loop();
    std::mutex mu_;
    std::condition_variable cv_;       // new work, or stop
    std::condition_variable done_cv_;  // a job finished
    std::deque<std::unique_ptr<CommitJob>> todo_, done_;
    bool stop_ = false;
    std::size_t in_flight_ = 0;                 // engine thread only
    std::unique_ptr<SqliteReplicas> replicas_;  // helper thread only
    UniqueFd done_fd_;
    std::unique_ptr<SmallThread> thread_;
};

}  // namespace ha::sync
