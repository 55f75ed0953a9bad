#include "agent/api/store_queries.hpp"

#include <algorithm>
#include <array>
#include <string_view>

#include "agent/api/control_server.hpp"

namespace ha::api {

namespace {

constexpr std::array<std::string_view, 10> kCommands = {
    "status", "switch",      "config_show", "config_set", "log",
    "events", "sync_status", "sync_full",   "debug",      "ping"};

bool is_count(const nlohmann::json& j) {
    return j.is_number_unsigned();
}

std::string check_limit(const nlohmann::json& r, std::string_view cmd) {
    auto it = r.find("limit");
    if (it != r.end() && (!is_count(*it) || it->get<std::uint64_t>() > kMaxLogLimit)) {
        return std::string(cmd) + ": 'limit' must be an integer 0-" + std::to_string(kMaxLogLimit) +
               " (0 = default " + std::to_string(kDefaultLogLimit) + "), got " + it->dump();
    }
    auto since = r.find("since_ms");
    if (since != r.end() && !since->is_number_integer()) {
        return std::string(cmd) + ": 'since_ms' must be an integer (Unix epoch ms), got " +
               since->dump();
    }
    return {};
}

}  // namespace

std::string check_request(const nlohmann::json& r) {
    if (!r.is_object()) return "request is not a JSON object";
    auto c = r.find("cmd");
    if (c == r.end() || !c->is_string()) return "request has no \"cmd\" string";
    const auto& cmd = c->get_ref<const std::string&>();
    if (std::find(kCommands.begin(), kCommands.end(), cmd) == kCommands.end()) {
        return "unknown command '" + cmd + "'";
    }
    if (cmd == "config_set") {
        auto k = r.find("key");
        auto v = r.find("value");
        if (k == r.end() || !k->is_string() || k->get_ref<const std::string&>().empty()) {
            return "config_set: 'key' must be a non-empty string";
        }
        if (v == r.end() || !v->is_string()) return "config_set: 'value' must be a string";
    } else if (cmd == "log") {
        auto w = r.find("which");
        if (w == r.end() || !w->is_string() || (*w != "backup" && *w != "failover")) {
            return "log: 'which' must be \"backup\" or \"failover\", got " +
                   (w == r.end() ? std::string("nothing") : w->dump());
        }
        return check_limit(r, "log");
    } else if (cmd == "events") {
        return check_limit(r, "events");
    } else if (cmd == "debug") {
        auto s = r.find("subsystem");
        auto on = r.find("on");
        if (s == r.end() || !s->is_string() || s->get_ref<const std::string&>().empty()) {
            return "debug: 'subsystem' must be a non-empty string";
        }
        if (on == r.end() || !on->is_boolean()) return "debug: 'on' must be true or false";
    }
    return {};
}

nlohmann::json answer_store_query(const store::EventStore& es, const nlohmann::json& request) {
    if (auto bad = check_request(request); !bad.empty()) return error_response(bad);
    const auto& cmd = request["cmd"].get_ref<const std::string&>();
    store::Stream stream = store::Stream::Events;
    if (cmd == "log") {
        stream = *store::parse_stream(request["which"].get<std::string>());
    } else if (cmd != "events") {
        return error_response("not a log query: '" + cmd + "'");
    }
    std::size_t limit = kDefaultLogLimit;
    if (auto it = request.find("limit"); it != request.end() && it->get<std::uint64_t>() > 0) {
        limit = it->get<std::size_t>();
    }
    std::optional<std::int64_t> since;
    if (auto it = request.find("since_ms"); it != request.end()) since = it->get<std::int64_t>();
    auto result = es.last(stream, limit, since);
    if (!result) return error_response(result.error().message());
    nlohmann::json records = nlohmann::json::array();
    for (auto it = result->records.rbegin(); it != result->records.rend(); ++it) {
        records.push_back(std::move(*it));
    }
    return ok_response({{"which", std::string(store::to_string(stream))},
                        {"records", std::move(records)},
                        {"skipped", result->skipped}});
}

}  // namespace ha::api
