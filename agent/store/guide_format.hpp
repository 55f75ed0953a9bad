// The guide's text forms for the HA log and system events (MAINTENANCE, Figures 11 and 12), and
// the wall-clock formatting the records carry. Pure functions: the time zone is the one recorded
// in each record's "time" field, so rendering never depends on where or when it runs.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace ha::store {

inline constexpr std::string_view kHaFailureWarning = "HA failure warning";
inline constexpr std::string_view kGenerateAlert = "Generate Alert";
inline constexpr std::string_view kRestoreToNormal = "Restore to normal";

// "2026-11-25T14:48:33.120+01:00": wall_ms shifted by utc_offset_s, with that offset written.
std::string iso8601(std::int64_t wall_ms, int utc_offset_s);
// The same in the process's local time zone (localtime_r: honours TZ).
std::string iso8601_local(std::int64_t wall_ms);
// "2026-11-25 14:48:33" in local time: the guide's TIME column and heartbeat content stamp.
std::string local_time_text(std::int64_t wall_ms);

// "MAC: 02:00:00:00:00:02 -- HEARTBEAT 2026-11-25 14:48:33 loose connection" (raised) or
// "MAC: 02:00:00:00:00:02 -- HEARTBEAT 2026-11-25 14:48:37 has recovered from failure".
// `when` is local_time_text(...) of the moment the loss/recovery was detected.
std::string heartbeat_alert_content(std::string_view peer_mac, std::string_view when, bool raised);
std::string_view event_type_text(bool raised);  // "Generate Alert" / "Restore to normal"

// From a record's "time": "2026-11-25 14:48:33" (24 h, Figure 11) and
// "2021-06-15 03:00:35 AM" (12 h, Figure 12). An absent or malformed time renders as "?".
std::string record_time_24h(const nlohmann::json& record);
std::string record_time_12h(const nlohmann::json& record);

// "[2021-06-15 03:00:35 AM] HA backup success!!" / "... HA backup failed!!" exactly.
std::string format_backup_line(const nlohmann::json& record);
// "12 files, 3.4 MiB in 1.2s" or "error: <reason>": what the guide's line leaves out.
std::string format_backup_details(const nlohmann::json& record);
// "[2021-06-15 03:00:35 AM] Standby -> Active (term 7): heartbeat lost; detection 7s,
//  takeover 3.1ms, service ready 1.2s"
std::string format_failover_line(const nlohmann::json& record);

// The system events page as a table (TIME, EVENT NAME, TYPE, CONTENT), rows in the order given
// (callers pass newest first, as the guide shows them). Columns are padded with spaces.
std::string format_events_table(const std::vector<nlohmann::json>& records);

// "3.4 MiB", "512 B": byte counts for humans.
std::string human_bytes(std::uint64_t bytes);

}  // namespace ha::store
