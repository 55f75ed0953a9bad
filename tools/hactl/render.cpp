#include "tools/hactl/render.hpp"

#include <fmt/format.h>

#include <vector>

#include "agent/store/guide_format.hpp"

namespace ha::hactl {

namespace {

using nlohmann::json;

const json* find(const json& j, const char* key) {
    if (!j.is_object()) return nullptr;
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string text(const json& j, const char* key, std::string_view fallback = "-") {
    const json* v = find(j, key);
    if (v == nullptr) return std::string(fallback);
    if (v->is_string()) return v->get<std::string>();
    if (v->is_boolean()) return v->get<bool>() ? "yes" : "no";
    return v->dump();
}

std::optional<std::uint64_t> count(const json& j, const char* key) {
    const json* v = find(j, key);
    if (v == nullptr || !v->is_number()) return std::nullopt;
    if (v->is_number_float()) return static_cast<std::uint64_t>(std::max(0.0, v->get<double>()));
    if (v->is_number_integer() && v->get<std::int64_t>() < 0) return std::nullopt;
    return v->get<std::uint64_t>();
}

// The guide writes station types and roles capitalised ("Primary", "Standby").
std::string capitalised(std::string word) {
    if (!word.empty() && word[0] >= 'a' && word[0] <= 'z')
        word[0] = static_cast<char>(word[0] - 32);
    return word;
}

// An all-zero MAC means the agent has not opened its NICs (HA off, or not started yet).
std::string mac_text(const json& j, const char* key) {
    std::string mac = text(j, key);
    return mac.empty() || mac == "00:00:00:00:00:00" ? "-" : mac;
}

std::string us_text(std::uint64_t us) {
    if (us >= 1'000'000) return fmt::format("{:.3g}s", static_cast<double>(us) / 1e6);
    if (us >= 1'000) return fmt::format("{:.3g}ms", static_cast<double>(us) / 1e3);
    return fmt::format("{}us", us);
}

std::string list_text(const json* arr) {
    if (arr == nullptr || !arr->is_array() || arr->empty()) return "none";
    std::string out;
    for (const auto& item : *arr) {
        out += "\n  - ";
        if (item.is_string()) {
            out += item.get<std::string>();
        } else if (item.is_object()) {
            out += text(item, "kind", "?");
            if (const json* d = find(item, "content"); d && d->is_string()) {
                out += ": " + d->get<std::string>();
            } else if (const json* dd = find(item, "detail"); dd && dd->is_string()) {
                out += ": " + dd->get<std::string>();
            }
            if (const json* s = find(item, "since"); s && s->is_string()) {
                out += " (since " + s->get<std::string>() + ")";
            }
        } else {
            out += item.dump();
        }
    }
    return out;
}

}  // namespace

std::string human_seconds(std::uint64_t s) {
    std::uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
    if (d > 0) return fmt::format("{}d {}h {}m {}s", d, h, m, sec);
    if (h > 0) return fmt::format("{}h {}m {}s", h, m, sec);
    if (m > 0) return fmt::format("{}m {}s", m, sec);
    return fmt::format("{}s", sec);
}

std::string render_sync(const json& sync) {
    if (!sync.is_object()) return "-";
    std::string out = text(sync, "connected") == "yes" ? "connected" : "not connected";
    if (const json* st = find(sync, "state"); st && st->is_string()) {
        out = st->get<std::string>() + ", " + out;
    }
    if (auto lag = count(sync, "lag_bytes")) {
        out += ", lag " + store::human_bytes(*lag);
        if (auto age = count(sync, "oldest_unacked_ms")) {
            out += fmt::format(" (oldest unacknowledged {}ms)", *age);
        }
    }
    if (const json* init = find(sync, "initial_done"); init && init->is_boolean()) {
        out += init->get<bool>() ? ", initial sync done" : ", initial sync pending";
    }
    if (auto pending = count(sync, "queued_changes")) out += fmt::format(", {} queued", *pending);
    if (const json* last = find(sync, "last_full_backup"); last && last->is_string()) {
        out += ", last full backup " + last->get<std::string>();
    }
    return out;
}

std::string render_status(const json& s) {
    std::string out;
    out += "HA Status: " + text(s, "ha_status") + "\n";
    std::string backup = text(s, "backup_status", "Idle");
    if (const json* b = find(s, "backup"); b != nullptr && backup == "In progress") {
        auto files = count(*b, "files_done"), files_total = count(*b, "files_total");
        auto bytes = count(*b, "bytes_done"), bytes_total = count(*b, "bytes_total");
        if (files) {
            backup += fmt::format(", {}{} files", *files,
                                  files_total ? fmt::format("/{}", *files_total) : "");
        }
        if (bytes) {
            backup += ", " + store::human_bytes(*bytes) +
                      (bytes_total ? "/" + store::human_bytes(*bytes_total) : "");
        }
        if (auto rate = count(*b, "rate_bps")) backup += ", " + store::human_bytes(*rate) + "/s";
        if (auto eta = count(*b, "eta_s")) backup += ", ETA " + human_seconds(*eta);
    }
    out += "HA Full Backup Status: " + backup + "\n";
    out += "MAC Address of Current FCM: " + mac_text(s, "mac") + "\n";
    out += "Role of Current FCM: " + text(s, "role") + "\n";
    out += "\n";
    const std::string station = text(s, "station");
    out += "Station Type: " + (station.empty() ? "-" : capitalised(station)) + "\n";
    if (find(s, "node")) out += "Node: " + text(s, "node") + "\n";
    out += "Term: " + text(s, "term") + "\n";
    if (auto up = count(s, "uptime_s")) out += "Uptime: " + human_seconds(*up) + "\n";
    if (const json* r = find(s, "last_reason"); r && r->is_string() && !r->empty()) {
        out += "Last role change: " + r->get<std::string>();
        if (auto since = count(s, "role_since_s")) out += " (" + human_seconds(*since) + " ago)";
        out += "\n";
    }
    if (const json* p = find(s, "peer"); p != nullptr && p->is_object() && !p->empty()) {
        std::string line = "Peer: " + text(*p, "address");
        line += ", MAC " + mac_text(*p, "mac") + ", role " + text(*p, "role");
        if (find(*p, "station")) line += ", station " + capitalised(text(*p, "station"));
        if (find(*p, "term")) line += ", term " + text(*p, "term");
        if (auto seen = count(*p, "last_seen_ms")) {
            line += fmt::format(", last seen {}ms ago", *seen);
        } else {
            line += ", never seen";
        }
        if (const json* rtt = find(*p, "rtt_us"); rtt && rtt->is_number()) {
            line += ", RTT " + us_text(rtt->get<std::uint64_t>());
        }
        out += line + "\n";
        std::vector<std::string> paths;
        if (const json* d = find(*p, "direct"); d && d->is_boolean()) {
            paths.push_back(std::string("direct link ") + (d->get<bool>() ? "up" : "down"));
        }
        if (const json* l = find(*p, "lan"); l && l->is_boolean()) {
            paths.push_back(std::string("LAN ") + (l->get<bool>() ? "up" : "down"));
        }
        if (!paths.empty()) {
            out += "Peer paths: ";
            for (std::size_t i = 0; i < paths.size(); ++i) out += (i ? ", " : "") + paths[i];
            out += "\n";
        }
        if (const json* v = find(*p, "version"); v && v->is_string()) {
            out += "Peer version: " + v->get<std::string>() + "\n";
        }
    } else {
        out += "Peer: none\n";
    }
    if (const json* hb = find(s, "heartbeat"); hb != nullptr && hb->is_object()) {
        std::string line = "Heartbeat: " + text(*hb, "mode");
        if (find(*hb, "interface")) line += " on " + text(*hb, "interface");
        if (auto iv = count(*hb, "interval_us")) line += ", interval " + us_text(*iv);
        if (auto to = count(*hb, "timeout_us")) line += ", timeout " + us_text(*to);
        if (const json* rtt = find(*hb, "rtt_us"); rtt && rtt->is_object()) {
            line += ", RTT";
            for (const char* k : {"p50", "p99", "max"}) {
                if (auto v = count(*rtt, k)) line += fmt::format(" {} {}", k, us_text(*v));
            }
        }
        if (auto lost = count(*hb, "lost")) line += fmt::format(", {} lost", *lost);
        out += line + "\n";
        if (const json* w = find(*hb, "warning"); w && w->is_string()) {
            out += "Heartbeat warning: " + w->get<std::string>() + "\n";
        }
    }
    if (const json* sync = find(s, "sync")) out += "Sync: " + render_sync(*sync) + "\n";
    out += "Faults: " + list_text(find(s, "faults")) + "\n";
    out += "Alerts: " + list_text(find(s, "alerts")) + "\n";
    return out;
}

std::string render_backup_log(const json& answer) {
    std::string out;
    const json* recs = find(answer, "records");
    if (recs == nullptr || !recs->is_array() || recs->empty()) return "HA backup log is empty\n";
    for (const auto& r : *recs) {
        out += store::format_backup_line(r) + "  (" + store::format_backup_details(r) + ")\n";
    }
    return out;
}

std::string render_failover_log(const json& answer) {
    std::string out;
    const json* recs = find(answer, "records");
    if (recs == nullptr || !recs->is_array() || recs->empty()) return "HA failover log is empty\n";
    for (const auto& r : *recs) out += store::format_failover_line(r) + "\n";
    return out;
}

std::string render_events(const json& answer) {
    const json* recs = find(answer, "records");
    if (recs == nullptr || !recs->is_array() || recs->empty()) return "no system events\n";
    std::vector<json> rows(recs->begin(), recs->end());
    return store::format_events_table(rows);
}

}  // namespace ha::hactl
