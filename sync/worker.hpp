// Private to sync/: the engine thread's state. Everything here is touched by the worker thread
// only; the Engine's queues and status cells are the only shared state.
#pragma once

#include <liburing.h>
#include <sys/stat.h>

#include <deque>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "sync/apply.hpp"
#include "sync/change_queue.hpp"
#include "sync/committer.hpp"
#include "sync/engine.hpp"
#include "sync/manifest.hpp"
#include "sync/watcher.hpp"
#include "sync/wire.hpp"

namespace ha::sync {

// The sync connection's state (namespace scope: a nested aggregate with member initializers is
// not default-constructible inside its enclosing class's definition for clang).
struct SyncConn {
    UniqueFd fd;
    Key session;
    std::optional<FrameReader> reader;
    std::vector<std::uint8_t> out;
    std::size_t out_off = 0;
    // Frames queued while a payload is on the wire; they go out after it, never inside it.
    std::vector<std::uint8_t> later;
    SharedFd src;  // payload being moved by sendfile
    std::uint64_t src_off = 0, src_left = 0, pad_left = 0;
    // A payload whose checksum trails it (large whole files): each chunk is hashed just before
    // it is sent, so hashing and the transfer overlap instead of taking turns.
    std::optional<PayloadChecksum> src_sum;
    std::uint64_t hashed_to = 0;  // file offset src_sum has read up to
    bool src_failed = false;      // the file shrank or could not be read: padded, abandoned
    struct Trailer {              // what the trailer of the payload in flight re-checks
        std::uint64_t seq = 0;
        std::uint8_t root = 0;
        std::string path;
        std::uint64_t size = 0;
        std::int64_t mtime_ns = 0;
        bool check_writer = false;
    } trailer;
    std::uint64_t last_rx_ns = 0;
};

class Engine::Worker final : public FrameSink {
  public:
    explicit Worker(Engine& engine);
    ~Worker() override;
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    Status init();
    void run();

    // FrameSink (both roles; dispatches on role_)
    Status on_frame(const FrameHeader& h, std::string_view path) override;
    Status on_payload(std::span<const std::uint8_t> chunk) override;
    Status on_frame_end() override;

  private:
    // --- io_uring poll plumbing ---
    enum Slot : std::uint8_t { kCmd, kWatch, kListen, kConnIn, kConnOut, kCommit, kSlotCount };
    struct PollOp {  // one armed poll; user_data points here; freed at its completion
        Slot slot;
        std::uint64_t gen;
    };
    struct SlotState {
        int fd = -1;
        std::uint64_t gen = 0;
        PollOp* armed = nullptr;
        bool ready = false;
    };
    void set_slot_fd(Slot s, int fd);
    void arm(Slot s, unsigned mask);
    void wait(std::chrono::nanoseconds timeout);

    // --- connection ---
    using Conn = SyncConn;
    std::uint64_t roots_digest() const;
    Result<UniqueFd> connect_peer();
    Result<Key> handshake_server(const UniqueFd& fd);
    Result<Key> handshake_client(const UniqueFd& fd);
    void adopt(UniqueFd fd, Key session);
    void drop_conn(std::string_view why);
    void read_conn();
    bool flush();  // true when nothing is left to write
    void send_frame(const FrameHeader& h, std::string_view path,
                    std::string_view inline_payload = {});

    // --- commands, roles ---
    void handle_commands();
    void apply_role(Role r);
    void do_quarantine(std::uint64_t term);
    void timers(std::uint64_t now);
    void publish(std::uint64_t now, bool full);
    void emit(SyncEvent::Kind k, std::string_view detail, std::uint64_t files = 0,
              std::uint64_t bytes = 0, std::uint64_t duration_ms = 0);

    // --- active ---
    struct Outstanding {
        std::uint64_t seq;
        std::uint64_t bytes;
        std::uint64_t first_seen_ns;
        std::uint8_t root;
        std::string path;
        FrameType type;
        bool in_job;
        bool abandoned = false;  // its trailer told the standby to discard it
    };
    struct Job {
        // 0: the manifest the standby sent when it joined; else the id of our request (a resync or,
        // with `full`, a full backup).
        std::uint64_t id = 0;
        bool full = false;
        // The standby's initial sync, which the guide's backup log lists as a backup too.
        [[nodiscard]] bool initial() const { return !full && id == 0; }
        bool done_sent = false;
        std::uint64_t files_total = 0, bytes_total = 0, files_done = 0, bytes_done = 0;
        std::uint64_t start_ns = 0;
        unsigned failures = 0;
        std::string failure;
        std::unordered_set<std::string> paths;
    };
    void on_watch_events();
    void listen_start();
    void accept_conn();
    void pump();
    void prepare(const Change& c);
    void emit_file(std::uint8_t root, const std::string& path, SharedFd fd, std::uint64_t offset,
                   std::uint64_t len, std::int64_t mtime_ns, std::uint32_t mode, FrameType type,
                   std::uint64_t first_seen, std::uint64_t file_size);
    Result<SharedFd> open_source(std::uint8_t root, const std::string& path, bool keep,
                                 struct stat& st);
    // The file still is the version a transfer started from: no write seen, same size and mtime.
    bool unchanged_since(std::uint8_t root, const std::string& path, int fd, std::uint64_t size,
                         std::int64_t mtime_ns);
    // The payload in flight is out: its trailer, or the abandon of a file that changed meanwhile.
    void send_trailer();
    void job_skip(const std::string& k, bool failed, std::string_view why);
    void start_full_backup(std::string_view why);
    void schedule_resync();
    void request_manifest(bool full);
    void on_manifest_end(std::uint64_t req);
    void on_ack(const FrameHeader& h);
    void finish_job();
    void fail_job(std::string_view why);

    // --- standby ---
    void send_manifest(bool with_checksums, std::uint64_t req);
    void note_apply(AckStatus s, std::string_view path);
    void finish_data_frame(const FrameHeader& h);  // a File/Append payload is in: check, queue
    // Acks leave in sequence order: an ack whose change is not durable yet holds back the ones
    // after it (the active checks the order).
    void queue_ack(std::uint64_t seq, AckStatus s, bool ready, bool sync_done = false);
    void set_ack(std::uint64_t seq, AckStatus s);
    void send_ready_acks();
    CommitJob& open_job();
    // Hands what was applied since the last job to the committer: always when `force`, else only
    // when it is idle (so work that arrives while a job runs is grouped into the next one).
    void submit_open(bool force);
    void on_commit_done();
    void finish_commit(std::unique_ptr<CommitJob> job);
    // Finishes commit jobs until `pending()` (a look at installing_) is false.
    template <typename Pending>
    void wait_installs(Pending&& pending);
    void flush_commits();  // everything applied so far is durable and acknowledged-ready

    Engine& e_;
    const SyncConfig& cfg_;
    io_uring ring_{};
    bool ring_ok_ = false;
    std::array<SlotState, kSlotCount> slots_{};
    bool stopping_ = false;
    Role role_ = Role::Off;
    std::shared_ptr<const ChecksumKey> csum_key_;  // built once in init()
    std::vector<UniqueFd> root_fds_;
    std::optional<Conn> conn_;
    bool want_write_ = false;
    std::uint64_t last_publish_ns_ = 0;
    std::uint64_t errors_ = 0;

    // active
    std::optional<Watcher> watcher_;
    UniqueFd listen_fd_;
    std::uint64_t next_listen_try_ns_ = 0;
    ChangeQueue queue_;
    std::unordered_map<std::string, std::uint64_t> sent_offset_;
    struct OpenSource {
        SharedFd fd;
        dev_t dev;
        ino_t ino;
    };
    std::unordered_map<std::string, OpenSource> srcs_;  // append sources kept open (open_source)
    bool noatime_ = true;  // cleared when O_NOATIME is refused (not owner, no CAP_FOWNER)
    std::unordered_set<std::string> writing_;  // file-mode paths written to since their last close
    // sqlite: a -wal write is seen before its commit is visible to readers (the commit ends with
    // an update of the wal-index header in the -shm, a memory write inotify does not see, and
    // with synchronous=FULL only after an fsync of the WAL). After a write the header is looked
    // at every 150 us and the snapshot taken as soon as it moves; a snapshot is taken anyway
    // `kSqliteSettleNs` after the last write (rollback-journal databases, a header we cannot
    // read, a checkpoint), and until then the change counts as queued, so "drained" (and the
    // force switch) waits for it. Past that the watch is `settled`: it keeps looking for a late
    // commit (a slow fsync) for a while longer, without counting as queued, since everything
    // committed is in the snapshot. A snapshot identical to the last one sent is not sent again.
    struct SqliteWatch {
        std::uint64_t first_seen_ns = 0;
        std::uint64_t next_check_ns = 0;
        std::uint64_t deadline_ns = 0;  // settle time, then (settled) when to stop looking
        bool settled = false;
    };
    // Watches whose snapshot is not taken yet (the settled ones are not pending changes).
    [[nodiscard]] std::size_t sqlite_pending() const;
    std::unordered_map<std::string, SqliteWatch> sqlite_watch_;       // root+db
    std::unordered_map<std::string, std::string> sqlite_hdr_;         // header at the last snapshot
    std::unordered_map<std::string, std::uint64_t> sqlite_sent_sum_;  // checksum of the last sent
    void sqlite_changed(std::uint8_t root, const std::string& db, std::uint64_t now);
    void sqlite_timers(std::uint64_t now);
    // The wal-index header of `db` (48 bytes of its -shm), or "" when there is none to read.
    std::string sqlite_wal_header(std::uint8_t root, const std::string& db);
    std::deque<Outstanding> outstanding_;
    std::uint64_t outstanding_bytes_ = 0;
    std::size_t outstanding_pings_ = 0;  // keepalives among outstanding_ (not changes)
    std::uint64_t next_seq_ = 1;
    bool streaming_ = false;
    std::vector<Manifest> peer_manifest_;
    std::optional<Job> job_;
    std::uint64_t next_req_id_ = 1;
    std::uint64_t awaiting_req_ = 0;  // full backup manifest we asked for
    bool full_pending_ = false;
    std::uint64_t resync_due_ns_ = 0;
    std::uint64_t resync_backoff_ns_ = 0;
    std::uint64_t next_ping_ns_ = 0;
    std::int64_t next_backup_wall_s_ = 0;
    bool disk_full_reported_ = false;
    std::uint64_t bytes_sent_ = 0, files_sent_ = 0;
    bool initial_done_ = false;
    std::vector<std::uint8_t> scratch_;

    // standby
    std::optional<Applier> applier_;
    std::unique_ptr<Committer> committer_;
    std::unique_ptr<CommitJob> open_job_;
    std::unordered_map<std::string, unsigned> installing_;  // root+path: checked, not yet renamed
    struct PendingAck {
        std::uint64_t seq;
        AckStatus status;
        bool ready;
        bool sync_done;
    };
    std::deque<PendingAck> acks_;
    std::uint64_t conn_gen_ = 0;  // bumped per connection: old jobs' acks are not sent on a new one
    std::uint64_t append_due_ns_ = 0;  // when the appends of the open job go to the committer
    std::uint64_t next_connect_ns_ = 0;
    std::chrono::milliseconds backoff_{0};
    bool want_full_ = false;
    FrameHeader frame_{};  // the frame being received
    FrameHeader rx_{};     // the last frame other than a Checksum trailer, and its path
    std::string rx_path_;
    std::optional<FrameHeader> trailer_of_;  // a File frame waiting for its Checksum frame
    std::string rx_payload_;
    unsigned rx_failures_ = 0;
    bool standby_disk_full_ = false;
    std::uint64_t bytes_applied_ = 0, files_applied_ = 0;
};

}  // namespace ha::sync
