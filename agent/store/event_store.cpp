#include "agent/store/event_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>

#include <fmt/format.h>

#include "agent/store/guide_format.hpp"
#include "common/atomic_file.hpp"

namespace ha::store {

std::string_view to_string(Stream s) {
    switch (s) {
        case Stream::Events:
            return "events";
        case Stream::Backup:
            return "backup";
        case Stream::Failover:
            return "failover";
    }
    return "?";
}

std::optional<Stream> parse_stream(std::string_view text) {
    if (text == "events") return Stream::Events;
    if (text == "backup") return Stream::Backup;
    if (text == "failover") return Stream::Failover;
    return std::nullopt;
}

namespace {

std::size_t index(Stream s) {
    return static_cast<std::size_t>(s);
}

std::int64_t ns_to_us(std::chrono::nanoseconds d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

Status fsync_dir(const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return last_errno("open dir " + dir);
    if (::fsync(fd.get()) != 0) return last_errno("fsync dir " + dir);
    return {};
}

// Drops a final line that lacks its newline: the remains of a write a crash interrupted.
// Returns the number of bytes removed.
Result<std::size_t> repair_tail(int fd, const std::string& path) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return last_errno("fstat " + path);
    auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0) return std::size_t{0};
    // Records are bounded, so the last newline is within the final max-record window; read
    // backwards in blocks until one is found or the file start is reached.
    std::size_t end = size;
    char buf[4096];
    while (end > 0) {
        std::size_t chunk = std::min(end, sizeof buf);
        std::size_t from = end - chunk;
        ssize_t n = ::pread(fd, buf, chunk, static_cast<off_t>(from));
        if (n < 0) {
            if (errno == EINTR) continue;
            return last_errno("pread " + path);
        }
        if (static_cast<std::size_t>(n) != chunk) return fail("short read " + path);
        for (std::size_t i = chunk; i > 0; --i) {
            if (buf[i - 1] == '\n') {
                std::size_t keep = from + i;
                if (keep == size) return std::size_t{0};
                if (::ftruncate(fd, static_cast<off_t>(keep)) != 0) {
                    return last_errno("ftruncate " + path);
                }
                return size - keep;
            }
        }
        end = from;
    }
    if (::ftruncate(fd, 0) != 0) return last_errno("ftruncate " + path);
    return size;
}

}  // namespace

nlohmann::json to_json(const SystemEvent& e) {
    return {{"name", e.name},
            {"type", std::string(event_type_text(e.raised))},
            {"raised", e.raised},
            {"key", e.key},
            {"content", e.content}};
}

nlohmann::json to_json(const BackupRecord& r) {
    nlohmann::json j = {{"result", r.success ? "success" : "failed"},
                        {"full", r.full},
                        {"files", r.files},
                        {"bytes", r.bytes},
                        {"duration_ms", r.duration.count()}};
    if (!r.error.empty()) j["error"] = r.error;
    return j;
}

nlohmann::json to_json(const FailoverRecord& r) {
    nlohmann::json j = {{"from", r.from}, {"to", r.to}, {"cause", r.cause}, {"term", r.term}};
    if (r.detection.count() > 0) j["detection_us"] = ns_to_us(r.detection);
    if (r.takeover.count() > 0) j["takeover_us"] = ns_to_us(r.takeover);
    if (r.service_ready.count() > 0) j["service_ready_us"] = ns_to_us(r.service_ready);
    return j;
}

Result<EventStore> EventStore::open(StoreOptions options) {
    if (options.dir.empty()) return fail("event store: empty directory");
    if (options.keep_files == 0) options.keep_files = 1;
    if (options.max_file_bytes < options.max_record_bytes) {
        options.max_file_bytes = options.max_record_bytes;
    }
    if (auto made = make_dirs(options.dir); !made) {
        return unexpected(made.error().wrap("open event store"));
    }
    EventStore store(std::move(options));
    for (std::size_t i = 0; i < kStreamCount; ++i) {
        if (auto st = store.open_live(static_cast<Stream>(i)); !st) {
            return unexpected(st.error().wrap("open event store"));
        }
    }
    return store;
}

std::string EventStore::live_path(Stream s) const {
    return options_.dir + "/" + std::string(to_string(s)) + ".jsonl";
}

Status EventStore::open_live(Stream s) {
    std::string path = live_path(s);
    // Read-write: the torn-tail check reads the end of the file before the first append.
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (!fd) return last_errno("open " + path);
    auto removed = repair_tail(fd.get(), path);
    if (!removed) return unexpected(removed.error());
    if (*removed > 0) {
        ++repaired_;
        if (::fdatasync(fd.get()) != 0) return last_errno("fdatasync " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return last_errno("fstat " + path);
    sizes_[index(s)] = static_cast<std::size_t>(st.st_size);
    fds_[index(s)] = std::move(fd);
    return {};
}

Status EventStore::rotate(Stream s) {
    std::string base = live_path(s);
    // Oldest first, so every rename lands on a free name; rename(2) replaces .keep if present.
    for (unsigned i = options_.keep_files; i > 1; --i) {
        const std::string from = fmt::format("{}.{}", base, i - 1);
        const std::string to = fmt::format("{}.{}", base, i);
        if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
            return last_errno(fmt::format("rotate {} -> {}", from, to));
        }
    }
    const std::string first = base + ".1";
    // Durable before it leaves the live name: the flusher only syncs live files.
    if (fds_[index(s)] && ::fdatasync(fds_[index(s)].get()) != 0)
        return last_errno("fdatasync before rotating " + base);
    if (::rename(base.c_str(), first.c_str()) != 0) {
        return last_errno(fmt::format("rotate {} -> {}", base, first));
    }
    // The old live file is gone from its name: open the new one before anything can fail, or a
    // failed directory fsync would leave the stream without a file (and the next rotation
    // would shift the history once more for nothing).
    fds_[index(s)].reset();
    if (auto st = open_live(s); !st) return st;
    return fsync_dir(options_.dir);
}

Status EventStore::append(Stream stream, nlohmann::json record, std::int64_t wall_ms) {
    if (!record.is_object()) return fail("event store: record is not a JSON object");
    if (!record.contains("time")) record["time"] = iso8601_local(wall_ms);
    if (!record.contains("ts_ms")) record["ts_ms"] = wall_ms;
    // Invalid UTF-8 in a detail string must not make the whole record unwritable.
    std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.push_back('\n');
    if (line.size() > options_.max_record_bytes) {
        return fail("event store: " + std::string(to_string(stream)) + " record of " +
                    std::to_string(line.size()) + " bytes exceeds max_record_bytes " +
                    std::to_string(options_.max_record_bytes));
    }
    auto i = index(stream);
    // A rotation that failed after its rename left no live file: make one.
    if (!fds_[i]) {
        if (auto st = open_live(stream); !st) return st;
    }
    if (sizes_[i] > 0 && sizes_[i] + line.size() > options_.max_file_bytes) {
        if (auto st = rotate(stream); !st) return st;
    }
    std::string path = live_path(stream);
    int fd = fds_[i].get();
    ssize_t n;
    do {
        n = ::write(fd, line.data(), line.size());
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(line.size())) {
        int err = n < 0 ? errno : ENOSPC;
        // A short write (disk full) leaves a partial line: cut it so the file stays whole.
        if (::ftruncate(fd, static_cast<off_t>(sizes_[i])) != 0) {
            return last_errno("ftruncate after short write " + path);
        }
        return errno_error(err, "append " + path);
    }
    if (options_.sync == SyncPolicy::EveryRecord && ::fdatasync(fd) != 0) {
        // Not known to be durable: take it back, so that an error means "not recorded" and the
        // caller's retry does not leave the record twice.
        const int err = errno;
        if (::ftruncate(fd, static_cast<off_t>(sizes_[i])) != 0) {
            return last_errno("ftruncate after failed fdatasync " + path);
        }
        return errno_error(err, "fdatasync " + path);
    }
    sizes_[i] += line.size();
    return {};
}

Status EventStore::append(const SystemEvent& e, std::int64_t wall_ms) {
    return append(Stream::Events, to_json(e), wall_ms);
}
Status EventStore::append(const BackupRecord& r, std::int64_t wall_ms) {
    return append(Stream::Backup, to_json(r), wall_ms);
}
Status EventStore::append(const FailoverRecord& r, std::int64_t wall_ms) {
    return append(Stream::Failover, to_json(r), wall_ms);
}

Result<QueryResult> read_jsonl(const std::string& path) {
    QueryResult out;
    auto text = read_file(path, 64u << 20);
    if (!text) {
        if (text.error().code == std::errc::no_such_file_or_directory) return out;
        return unexpected(text.error());
    }
    std::string_view rest = *text;
    while (!rest.empty()) {
        auto nl = rest.find('\n');
        if (nl == std::string_view::npos) {
            ++out.skipped;  // torn last line (crash, or a write in progress): never shown
            break;
        }
        std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl + 1);
        if (line.empty()) continue;
        auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) {
            ++out.skipped;
            continue;
        }
        out.records.push_back(std::move(j));
    }
    return out;
}

Result<QueryResult> EventStore::last(Stream stream, std::size_t limit,
                                     std::optional<std::int64_t> since_ms) const {
    QueryResult out;
    std::deque<nlohmann::json> window;
    std::string base = live_path(stream);
    // Oldest file first so the records come out in append order.
    for (unsigned i = options_.keep_files + 1; i > 0; --i) {
        std::string path = i == 1 ? base : base + "." + std::to_string(i - 1);
        auto part = read_jsonl(path);
        if (!part) return unexpected(part.error().wrap("query " + std::string(to_string(stream))));
        out.skipped += part->skipped;
        for (auto& rec : part->records) {
            if (since_ms) {
                auto ts = rec.find("ts_ms");
                if (ts == rec.end() || !ts->is_number_integer() ||
                    ts->get<std::int64_t>() < *since_ms) {
                    continue;
                }
            }
            window.push_back(std::move(rec));
            if (limit > 0 && window.size() > limit) window.pop_front();
        }
    }
    out.records.assign(std::make_move_iterator(window.begin()),
                       std::make_move_iterator(window.end()));
    return out;
}

}  // namespace ha::store
