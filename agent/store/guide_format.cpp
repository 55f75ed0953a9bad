#include "agent/store/guide_format.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>

namespace ha::store {

namespace {

// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm): no time-zone database
// and no global state, so iso8601() stays pure.
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) ++y;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

int local_offset_s(std::int64_t wall_ms) {
    auto secs = static_cast<std::time_t>(floor_div(wall_ms, 1000));
    std::tm tm{};
    if (::localtime_r(&secs, &tm) == nullptr) return 0;
    return static_cast<int>(tm.tm_gmtoff);
}

// The "YYYY-MM-DD" and "HH:MM:SS" parts of an ISO-8601 "time" field, validated.
bool split_time(const nlohmann::json& record, std::string& date, int& h, int& m, int& s) {
    auto it = record.find("time");
    if (it == record.end() || !it->is_string()) return false;
    const auto& t = it->get_ref<const std::string&>();
    if (t.size() < 19 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != ' ') ||
        t[13] != ':' || t[16] != ':') {
        return false;
    }
    auto digits = [&](std::size_t pos, std::size_t n, int& out) {
        out = 0;
        for (std::size_t i = pos; i < pos + n; ++i) {
            if (t[i] < '0' || t[i] > '9') return false;
            out = out * 10 + (t[i] - '0');
        }
        return true;
    };
    int ignored = 0;
    if (!digits(0, 4, ignored) || !digits(5, 2, ignored) || !digits(8, 2, ignored)) return false;
    if (!digits(11, 2, h) || !digits(14, 2, m) || !digits(17, 2, s)) return false;
    if (h > 23 || m > 59 || s > 60) return false;
    date = t.substr(0, 10);
    return true;
}

std::string str_field(const nlohmann::json& record, const char* key) {
    auto it = record.find(key);
    if (it == record.end() || !it->is_string()) return {};
    return it->get<std::string>();
}

std::uint64_t uint_field(const nlohmann::json& record, const char* key) {
    auto it = record.find(key);
    // Parsed JSON holds non-negative numbers as unsigned, built JSON as signed: take both.
    if (it == record.end() || !it->is_number_integer()) return 0;
    if (it->is_number_unsigned()) return it->get<std::uint64_t>();
    auto v = it->get<std::int64_t>();
    return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}

// 7000000us -> "7s", 3100us -> "3.1ms", 850us -> "850us".
std::string human_us(std::uint64_t us) {
    if (us >= 1'000'000) return fmt::format("{:.3g}s", static_cast<double>(us) / 1e6);
    if (us >= 1'000) return fmt::format("{:.3g}ms", static_cast<double>(us) / 1e3);
    return fmt::format("{}us", us);
}

}  // namespace

std::string iso8601(std::int64_t wall_ms, int utc_offset_s) {
    std::int64_t local_ms = wall_ms + static_cast<std::int64_t>(utc_offset_s) * 1000;
    std::int64_t days = floor_div(local_ms, 86'400'000);
    std::int64_t in_day = local_ms - days * 86'400'000;
    std::int64_t y = 0;
    unsigned mo = 0, d = 0;
    civil_from_days(days, y, mo, d);
    char sign = utc_offset_s < 0 ? '-' : '+';
    int off = std::abs(utc_offset_s) / 60;
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{}{:02}:{:02}", y, mo, d,
                       in_day / 3'600'000, in_day / 60'000 % 60, in_day / 1000 % 60, in_day % 1000,
                       sign, off / 60, off % 60);
}

std::string iso8601_local(std::int64_t wall_ms) {
    return iso8601(wall_ms, local_offset_s(wall_ms));
}

std::string local_time_text(std::int64_t wall_ms) {
    std::string iso = iso8601_local(wall_ms);
    iso[10] = ' ';
    return iso.substr(0, 19);
}

std::string_view event_type_text(bool raised) {
    return raised ? kGenerateAlert : kRestoreToNormal;
}

std::string heartbeat_alert_content(std::string_view peer_mac, std::string_view when, bool raised) {
    return fmt::format("MAC: {} -- HEARTBEAT {} {}", peer_mac, when,
                       raised ? "loose connection" : "has recovered from failure");
}

std::string record_time_24h(const nlohmann::json& record) {
    std::string date;
    int h = 0, m = 0, s = 0;
    if (!split_time(record, date, h, m, s)) return "?";
    return fmt::format("{} {:02}:{:02}:{:02}", date, h, m, s);
}

std::string record_time_12h(const nlohmann::json& record) {
    std::string date;
    int h = 0, m = 0, s = 0;
    if (!split_time(record, date, h, m, s)) return "?";
    int h12 = h % 12 == 0 ? 12 : h % 12;
    return fmt::format("{} {:02}:{:02}:{:02} {}", date, h12, m, s, h < 12 ? "AM" : "PM");
}

std::string format_backup_line(const nlohmann::json& record) {
    bool ok = str_field(record, "result") == "success";
    return fmt::format("[{}] HA backup {}!!", record_time_12h(record), ok ? "success" : "failed");
}

std::string human_bytes(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) return fmt::format("{} B", bytes);
    double v = static_cast<double>(bytes);
    std::size_t u = 0;
    v /= 1024.0;
    while (v >= 1024.0 && u + 1 < std::size(kUnits)) {
        v /= 1024.0;
        ++u;
    }
    return fmt::format("{:.1f} {}", v, kUnits[u]);
}

std::string format_backup_details(const nlohmann::json& record) {
    std::string err = str_field(record, "error");
    if (str_field(record, "result") != "success" && !err.empty()) return "error: " + err;
    return fmt::format("{} files, {} in {}", uint_field(record, "files"),
                       human_bytes(uint_field(record, "bytes")),
                       human_us(uint_field(record, "duration_ms") * 1000));
}

std::string format_failover_line(const nlohmann::json& record) {
    std::string line = fmt::format("[{}] {} -> {} (term {}): {}", record_time_12h(record),
                                   str_field(record, "from"), str_field(record, "to"),
                                   uint_field(record, "term"), str_field(record, "cause"));
    std::string timings;
    auto add = [&](const char* key, const char* label) {
        auto us = uint_field(record, key);
        if (us == 0) return;
        timings += timings.empty() ? "; " : ", ";
        timings += fmt::format("{} {}", label, human_us(us));
    };
    add("detection_us", "detection");
    add("takeover_us", "takeover");
    add("service_ready_us", "service ready");
    return line + timings;
}

std::string format_events_table(const std::vector<nlohmann::json>& records) {
    struct Row {
        std::string cols[4];
    };
    std::vector<Row> rows;
    rows.push_back({{"TIME", "EVENT NAME", "TYPE", "CONTENT"}});
    for (const auto& r : records) {
        std::string type = str_field(r, "type");
        if (type.empty()) {
            auto raised = r.find("raised");
            if (raised != r.end() && raised->is_boolean()) {
                type = std::string(event_type_text(raised->get<bool>()));
            }
        }
        rows.push_back({{record_time_24h(r), str_field(r, "name"), type, str_field(r, "content")}});
    }
    std::size_t width[3] = {0, 0, 0};
    for (const auto& row : rows) {
        for (std::size_t c = 0; c < 3; ++c) width[c] = std::max(width[c], row.cols[c].size());
    }
    std::string out;
    for (const auto& row : rows) {
        for (std::size_t c = 0; c < 3; ++c) {
            out += row.cols[c];
            out.append(width[c] - row.cols[c].size() + 2, ' ');
        }
        out += row.cols[3];
        out += '\n';
    }
    return out;
}

}  // namespace ha::store
