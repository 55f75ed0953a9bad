// ha::sync::Engine: the data mirror between the two boxes. The agent owns one Engine.
//
// Threads and ownership:
// - The Engine runs one worker thread ("ha-sync") that owns its own io_uring ring, the inotify
//   watcher, the TCP connection, the listen socket and every file it reads or writes. All
//   protocol work happens there; nothing the agent calls blocks on it. On the standby it has two
//   helpers: the committer ("ha-sync-fs", committer.hpp) runs the blocking durability work in
//   order, and a checkpointer ("ha-sync-ckpt", replica.hpp) keeps SQLite replicas' WALs short.
// - The public methods below are called from ONE agent thread (the agent loop). set_role,
//   request_full_sync and quarantine enqueue a command (Boost.Lockfree SPSC + eventfd) and return
//   at once; they are applied in call order.
// - status() is lock-free and callable from any thread: each field is an atomic, so a snapshot is
//   field-wise consistent (good enough for display and for "lag == 0" checks).
// - Events flow back through a second SPSC queue. Poll event_fd() for POLLIN in the agent's ring
//   and call drain_events() (same agent thread) to consume them; it resets the eventfd.
//
// Who connects: the standby connects to peer:port (the active listens on listen:port) and
// re-connects with exponential backoff. Each TCP connection starts with a mutual SipHash
// challenge-response (see wire.hpp); a peer that fails it is dropped with a logged reason.
//
// Active: watches the roots, coalesces changes per path, streams them (sendfile from the page
// cache; payloads of at most 4 KiB go out from the buffer their checksum was read into, large
// files are hashed while they are sent), answers the standby's manifest with only what differs,
// and runs the daily/on-demand full backup. SQLite databases are copied by snapshot as soon as
// the wal-index shows the commit. Standby: writes a whole file to a temp file and checks it; the
// committer makes it durable (fsync, or one syncfs per batch) before renaming it into place. A
// snapshot of a WAL database is applied to its replica through SQLite instead (replica.hpp).
// Appends are visible at once and made durable with one fdatasync per file per 20 ms window.
// Every change is acknowledged once durable; acks leave in sequence order.
#pragma once

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/lockfree/spsc_queue.hpp>

#include "common/keyfile.hpp"
#include "common/net_types.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sync/fsutil.hpp"
#include "sync/thread.hpp"

namespace ha::sync {

struct SyncConfig {
    std::vector<Root> roots;  // same list, same order on both boxes (checked at connect)
    Key key;
    IpAddr peer;  // the peer's heartbeat-link address (standby connects here)
    std::uint16_t port = 9528;
    IpAddr listen;  // where the active accepts; family 0 = any address of peer's family
    std::string state_dir = "/var/lib/fcm-ha";  // snapshots, quarantine
    // Daily full backup, minutes after local midnight; negative = only on demand.
    int full_backup_minute = 0;
    std::chrono::milliseconds reconnect_min{100};
    std::chrono::milliseconds reconnect_max{2000};
    // No byte from the peer for this long (pings are sent every io_timeout/4) = link dead.
    std::chrono::milliseconds io_timeout{4000};
};

enum class Role : std::uint8_t { Off, Active, Standby };
std::string_view to_string(Role r);

enum class BackupResult : std::uint8_t { None, Success, Failed };

struct FullBackupStatus {
    bool in_progress = false;
    std::uint64_t files_done = 0, files_total = 0;
    std::uint64_t bytes_done = 0, bytes_total = 0;
    std::uint64_t rate_Bps = 0;
    std::uint64_t eta_s = 0;
    BackupResult last_result = BackupResult::None;
    std::int64_t last_time_ms = 0;  // wall clock, for the backup log
};

struct SyncStatus {
    // When the worker published these (monotonic ns). A caller that needs "drained" to cover a
    // change it made (or a service it stopped) at time T waits for as_of_ns > T: every change
    // made before T is then counted, as queued (inotify events not read yet included) or later.
    std::uint64_t as_of_ns = 0;
    bool connected = false;
    Role role = Role::Off;
    std::uint64_t lag_bytes = 0;          // sent or being sent, not yet acknowledged
    std::uint64_t unacked_changes = 0;    // frames sent, not yet acknowledged (deletes too)
    std::uint64_t queued_changes = 0;     // coalesced paths (and uncopied commits) not yet sent
    std::uint64_t oldest_unacked_ns = 0;  // age of the oldest change not yet acknowledged
    std::uint64_t bytes_sent = 0, files_sent = 0;
    std::uint64_t bytes_applied = 0, files_applied = 0;  // standby side
    FullBackupStatus full_backup;
    bool initial_done = false;  // the standby holds everything the active had at join time
    std::uint64_t errors = 0;
    // The force switch may proceed: connected, initial sync done, nothing queued or unacked.
    [[nodiscard]] bool drained() const {
        return connected && initial_done && lag_bytes == 0 && unacked_changes == 0 &&
               queued_changes == 0;
    }
};

struct SyncEvent {
    enum class Kind : std::uint8_t {
        Connected,
        Disconnected,
        InitialSyncDone,   // standby caught up after joining
        BackupSuccess,     // "HA backup success!!"
        BackupFailed,      // "HA backup failed!!" (detail says why)
        DiskFull,          // the standby ran out of space; nothing torn, retried
        PeerRefused,       // bad frame / failed handshake / peer refused a path
        ChecksumMismatch,  // a transfer did not match its checksum (discarded, re-sent)
        ApplyFailed,       // standby could not apply a change (I/O error)
        Quarantined,       // local roots moved aside (split-brain loser)
        Restored,          // a condition reported before has cleared; detail names it
    };
    Kind kind = Kind::Connected;
    std::int64_t wall_ms = 0;
    std::uint64_t files = 0;
    std::uint64_t bytes = 0;
    std::uint64_t duration_ms = 0;   // backups and initial syncs
    std::array<char, 200> detail{};  // NUL-terminated
    [[nodiscard]] std::string_view text() const { return detail.data(); }
};
std::string_view to_string(SyncEvent::Kind k);

class Engine {
  public:
    static Result<std::unique_ptr<Engine>> create(SyncConfig config);
    ~Engine();  // stops the worker thread, closes the connection
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    void set_role(Role role);
    // Active: run a full backup now. Standby: ask the active for one.
    void request_full_sync();
    // Move every root's content to state_dir/quarantine/<term>-<time>/<root index>/ and drop the
    // connection, so the next join pulls a full copy. Call before set_role(Standby) on a demoted
    // split-brain loser.
    void quarantine(std::uint64_t term);

    [[nodiscard]] SyncStatus status() const;
    [[nodiscard]] const UniqueFd& event_fd() const { return event_fd_; }
    // Calls fn(const SyncEvent&) for each pending event; returns how many.
    template <typename Fn>
    std::size_t drain_events(Fn&& fn) {
        std::uint64_t v = 0;
        (void)!::read(event_fd_.get(), &v, sizeof v);
        return events_.consume_all([&](const SyncEvent& e) { fn(e); });
    }

    class Worker;  // the thread's state; engine.cpp

  private:
    explicit Engine(SyncConfig config);
    struct Command {
        enum class Kind : std::uint8_t { SetRole, FullSync, Quarantine, Stop };
        Kind kind = Kind::Stop;
        Role role = Role::Off;
        std::uint64_t term = 0;
    };
    void push_command(const Command& c);

    SyncConfig config_;
    UniqueFd cmd_fd_;
    UniqueFd event_fd_;
    boost::lockfree::spsc_queue<Command, boost::lockfree::capacity<256>> commands_;
    boost::lockfree::spsc_queue<SyncEvent, boost::lockfree::capacity<1024>> events_;

    // Status cells, written by the worker, read by anyone.
    struct Cells {
        std::atomic<bool> connected{false}, initial_done{false}, fb_in_progress{false};
        std::atomic<std::uint8_t> role{0}, fb_last_result{0};
        std::atomic<std::uint64_t> lag_bytes{0}, unacked{0}, queued{0}, oldest_ns{0}, bytes_sent{0},
            files_sent{0}, bytes_applied{0}, files_applied{0}, fb_files_done{0}, fb_files_total{0},
            fb_bytes_done{0}, fb_bytes_total{0}, fb_rate{0}, fb_eta{0}, errors{0},
            dropped_events{0};
        std::atomic<std::int64_t> fb_last_time{0};
        std::atomic<std::uint64_t> as_of_ns{0};
    };
    Cells cells_;
    std::unique_ptr<Worker> worker_;
    std::unique_ptr<SmallThread> thread_;
    friend class Worker;
};

}  // namespace ha::sync
