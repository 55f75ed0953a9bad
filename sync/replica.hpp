// Live SQLite replicas on the standby (committer thread only). A snapshot of a WAL-mode database
// is applied to its replica through SQLite's backup API, as one WAL transaction of the replica:
// - readers on the standby see the old database or the new one, never a mix (SQLite's snapshot
//   isolation), and after a crash SQLite's WAL recovery keeps the last whole transaction;
// - it is visible as soon as it commits: with synchronous=NORMAL a WAL commit needs no fsync,
//   so the replica's lag no longer includes a device flush (the temp-file path pays two);
// - it is acknowledged only after sync() - an fdatasync of the -wal - made it durable.
// Connections stay open between snapshots. Their WAL persists on close (SQLITE_FCNTL_PERSIST_WAL)
// and they do not checkpoint on close, so closing one never deletes or rewrites a file: the
// engine closes a replica's connection before anything else replaces or removes it. Checkpoints
// (two device flushes each) run on a thread and connection of their own ("ha-sync-ckpt"), so no
// commit waits behind one.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "sync/committer.hpp"
#include "sync/thread.hpp"

struct sqlite3;

namespace ha::sync {

class SqliteReplicas {
  public:
    SqliteReplicas();
    ~SqliteReplicas();
    SqliteReplicas(const SqliteReplicas&) = delete;
    SqliteReplicas& operator=(const SqliteReplicas&) = delete;

    enum class Outcome : std::uint8_t {
        Applied,   // committed (visible); the temp file is removed; sync() makes it durable
        Declined,  // nothing changed; install the snapshot by rename (after retire()): no
                   // replica yet, either side not in WAL mode, a page size change, damage
        Failed,    // nothing changed, and a rename would not do better (disk full, I/O error)
    };
    // Applies the snapshot `dir`/`tmp` to the replica `dir`/`leaf` (`key`: root + path).
    // `why` says why not, and `err` is the errno for Failed.
    Outcome apply(const std::string& key, const SharedFd& dir, const std::string& tmp,
                  const std::string& leaf, std::int64_t mtime_ns, std::string& why, int& err);
    // Makes what apply() committed durable; 0 or an errno.
    int sync(const std::string& key);
    // Before a snapshot replaces the replica `dir`/`leaf` by rename, which removes its -wal and
    // -shm first: closes it, and makes its WAL empty by a TRUNCATE checkpoint. The database file
    // may hold part of a checkpoint that only its WAL completes; without the WAL, a reader
    // opening it in that moment would see a damaged database. False (nothing may be removed):
    // the WAL could not be emptied (a reader on an old snapshot, a full disk).
    bool retire(const std::string& key, const SharedFd& dir, const std::string& leaf);
    void close(const std::string& key);
    // Every replica at or under root/path ("" = the whole root).
    void close_under(std::uint8_t root, std::string_view path);
    void close_all();

  private:
    // Checkpoints replicas whose WAL grew past a threshold, on its own thread and connections.
    class Checkpointer {
      public:
        Checkpointer() = default;
        ~Checkpointer();
        Checkpointer(const Checkpointer&) = delete;
        Checkpointer& operator=(const Checkpointer&) = delete;
        void request(const std::string& key, const SharedFd& dir, const std::string& leaf);
        // Drops queued requests and closes the connections of the keys `match` selects, after
        // waiting for a checkpoint of one of them that is under way.
        template <typename Match>
        void forget(Match&& match);

      private:
        struct Conn {
            sqlite3* db = nullptr;
            SharedFd dir;
            std::string leaf;
        };
        void loop();
        std::mutex mu_;
        std::condition_variable cv_, idle_cv_;
        std::deque<std::string> todo_;
        std::unordered_map<std::string, Conn> conns_;  // used by the thread while busy_ says so
        std::string busy_;
        bool stop_ = false;
        std::unique_ptr<SmallThread> thread_;  // started by the first request
    };
    template <typename Match>
    void close_matching(Match&& match);

    struct Replica {
        sqlite3* db = nullptr;
        SharedFd dir;  // its path goes through /proc/self/fd/<dir>
        UniqueFd wal;
        std::string leaf;
        dev_t dev = 0;
        ino_t ino = 0;
        int wal_frames = 0;  // frames in the WAL after the last commit (wal hook)
    };
    std::unordered_map<std::string, Replica> open_;
    std::unique_ptr<Checkpointer> ckpt_;
};

}  // namespace ha::sync
