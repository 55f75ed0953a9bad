// The client side of the control API (fcm-hactl, tests): one request line out, one response
// line back, with a deadline. No threads; blocking only inside poll with the caller's timeout.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/result.hpp"

namespace ha::api {

// Sends `request` and returns the agent's response object. Errors:
//  - not running (is_not_running() true): nobody listens on the path; the message names it:
//    "fcm-ha-agent is not running (no listener on /run/fcm-ha/agent.sock)";
//  - timed_out: no complete answer within `timeout`;
//  - bad_message: the answer is not a JSON object;
//  - other errnos from socket calls (permission denied names the path).
Result<nlohmann::json> call(const std::string& socket_path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout);
bool is_not_running(const Error& e);

}  // namespace ha::api
