// The persisted HA log and system events: three append-only JSON-lines streams under
// <state_dir>/log/, bounded by rotation, surviving restarts and crashes.
//
//   events.jsonl    system events ("HA failure warning", Generate Alert / Restore to normal)
//   backup.jsonl    the HA backup log ("HA backup success!!" / "HA backup failed!!")
//   failover.jsonl  the HA failover log (every role change with cause, term and timings)
//
// Every record is one JSON object on one line with at least "time" (ISO-8601 local time with
// its UTC offset, millisecond precision) and "ts_ms" (Unix epoch milliseconds). A record is
// written with a single write(2) of the whole line on an O_APPEND descriptor, then fdatasync'd
// (SyncPolicy::EveryRecord, the default). A crash can therefore leave at most one torn line, at
// the end of the newest file: opening the store truncates it away, and readers skip any final
// line without its newline, so a torn record is never shown nor glued to the next one.
//
// Rotation: when a file would grow past max_file_bytes, it becomes <name>.1 (older ones shift to
// .2 ... .keep_files, the oldest is deleted). Each step is a rename, so a crash mid-rotation
// loses nothing but can leave a gap in the numbering, which readers tolerate.
//
// Threads: an EventStore is owned by one thread (the agent's loop) for appends. Queries only
// read files and may run on any thread; a record being appended concurrently is either seen
// whole or not at all. Appends cost one write plus one fdatasync: these records are rare
// (alerts, daily backups, failovers), which is why the loop may call append directly.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::store {

enum class Stream : std::uint8_t { Events = 0, Backup = 1, Failover = 2 };
inline constexpr std::size_t kStreamCount = 3;
std::string_view to_string(Stream s);  // "events", "backup", "failover"
std::optional<Stream> parse_stream(std::string_view text);

enum class SyncPolicy : std::uint8_t {
    EveryRecord,  // fdatasync after each record: an acknowledged record survives power loss
    None,         // page cache only (tests, benchmarks); a crash may lose recent records
};

struct StoreOptions {
    std::string dir;                                       // usually <state_dir>/log
    std::size_t max_file_bytes = std::size_t{256} * 1024;  // rotate the live file past this size
    unsigned keep_files = 4;  // rotated files kept per stream (.1 ... .N)
    std::size_t max_record_bytes =
        std::size_t{16} * 1024;  // a longer record is refused, not truncated
    SyncPolicy sync = SyncPolicy::EveryRecord;
};

// A "HA failure warning" row of the system events page (guide, Figure 11).
struct SystemEvent {
    std::string name = "HA failure warning";  // EVENT NAME
    bool raised = true;                       // TYPE: "Generate Alert" / "Restore to normal"
    std::string key;                          // what the alert is about: "heartbeat", ...
    std::string content;                      // CONTENT, e.g. heartbeat_alert_content(...)
};

// One line of the HA backup log (guide, Figure 12) plus the details an operator needs to act.
struct BackupRecord {
    bool success = true;
    bool full = true;  // daily/initial full backup vs. an incremental catch-up
    std::uint64_t files = 0;
    std::uint64_t bytes = 0;
    std::chrono::milliseconds duration{0};
    std::string error;  // empty on success
};

// One role change for the HA failover log.
struct FailoverRecord {
    std::string from;   // "Standby"
    std::string to;     // "Active"
    std::string cause;  // "heartbeat lost on direct link and LAN, no ARP answer"
    std::uint64_t term = 0;
    // Zero = not applicable (e.g. a demotion has no takeover time).
    std::chrono::nanoseconds detection{0};      // last heartbeat seen -> failure declared
    std::chrono::nanoseconds takeover{0};       // failure declared -> cluster IP held + GARP sent
    std::chrono::nanoseconds service_ready{0};  // failure declared -> PBX answering
};

nlohmann::json to_json(const SystemEvent& e);
nlohmann::json to_json(const BackupRecord& r);
nlohmann::json to_json(const FailoverRecord& r);

struct QueryResult {
    std::vector<nlohmann::json> records;  // oldest first
    std::size_t skipped = 0;              // torn or unparsable lines that were left out
};

class EventStore {
  public:
    // Creates the directory, repairs a torn last line left by a crash, opens the live files.
    static Result<EventStore> open(StoreOptions options);

    EventStore(EventStore&&) noexcept = default;
    EventStore& operator=(EventStore&&) noexcept = default;

    // Appends `record` (an object); "time" and "ts_ms" are set from wall_ms unless present.
    // Errors: record too large or not an object (invalid_argument), write/fsync/rotate errnos.
    // On error nothing of the record stays on disk.
    Status append(Stream stream, nlohmann::json record, std::int64_t wall_ms);
    Status append(const SystemEvent& e, std::int64_t wall_ms);
    Status append(const BackupRecord& r, std::int64_t wall_ms);
    Status append(const FailoverRecord& r, std::int64_t wall_ms);

    // Reading: the last `limit` records (0 = all), optionally only those at or after since_ms.
    [[nodiscard]] Result<QueryResult> last(Stream stream, std::size_t limit,
                                           std::optional<std::int64_t> since_ms = {}) const;

    [[nodiscard]] const StoreOptions& options() const { return options_; }
    [[nodiscard]] std::string live_path(Stream s) const;
    // Lines removed at open because a crash had torn them (for a log line / metric).
    [[nodiscard]] std::size_t repaired_at_open() const { return repaired_; }

  private:
    explicit EventStore(StoreOptions options) : options_(std::move(options)) {}
    Status open_live(Stream s);
    Status rotate(Stream s);

    StoreOptions options_;
    UniqueFd fds_[kStreamCount];
    std::size_t sizes_[kStreamCount] = {0, 0, 0};
    std::size_t repaired_ = 0;
};

// Reads one JSON-lines file: complete lines only; unparsable lines are counted in `skipped`.
// A missing file is an empty result, not an error.
Result<QueryResult> read_jsonl(const std::string& path);

}  // namespace ha::store
