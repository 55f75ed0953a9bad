// The control API's requests: their shape check (done on the server thread, so the loop only
// ever sees well-formed requests) and the answers that come straight from the event store.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "agent/store/event_store.hpp"

namespace ha::api {

inline constexpr std::size_t kDefaultLogLimit = 50;
inline constexpr std::size_t kMaxLogLimit = 10000;

// "" when `request` is a known command with well-typed arguments, else the reason, naming the
// bad command or argument: "unknown command 'frobnicate'", "log: 'which' must be ...".
std::string check_request(const nlohmann::json& request);

// Loop thread (or any thread): answers {"cmd":"log","which":"backup"|"failover","limit":N}
// and {"cmd":"events","limit":N} (optional "since_ms": epoch ms) with
// {"ok":true,"which":...,"records":[newest first],"skipped":K}.
nlohmann::json answer_store_query(const store::EventStore& store, const nlohmann::json& request);

}  // namespace ha::api
