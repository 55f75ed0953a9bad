// Human renderings of the agent's JSON answers (schemas in agent/api/protocol.md). A field the
// agent leaves out renders as "-" rather than failing: an older agent must still be readable.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace ha::hactl {

// The guide's HA Status page (Figure 6) first, then what an operator needs to judge the pair.
std::string render_status(const nlohmann::json& status);
std::string render_sync(const nlohmann::json& sync);
// Newest first, one guide line per record, details after it.
std::string render_backup_log(const nlohmann::json& answer);
std::string render_failover_log(const nlohmann::json& answer);
std::string render_events(const nlohmann::json& answer);
// "1d 2h 3m 4s"
std::string human_seconds(std::uint64_t s);

}  // namespace ha::hactl
