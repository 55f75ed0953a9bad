// The control API: a Unix stream socket speaking one JSON object per line each way
// (protocol and schemas in agent/api/protocol.md). fcm-hactl is its client.
//
// Threads. The server owns one thread that accepts, reads and writes clients (poll with
// timeouts; a client that dawdles, floods or never reads its answer is cut off, so none can hold
// the server up for long). Requests cross to the agent's loop thread through a lock-free SPSC
// queue plus an eventfd:
//
//   server thread: parse line -> requests_ queue -> write event_fd()
//   loop thread:   event_fd() readable -> drain(handler) -> handler(request) -> responses_ queue
//                  -> write the server's wake eventfd
//   server thread: pop responses -> write each to its client
//
// The loop thread never blocks on the server: drain() only pops, calls the handler and pushes
// (the response queue cannot fill, because the server admits no more requests than it has room
// for answers). A request the loop does not answer within response_timeout gets an
// {"ok":false,"error":"agent busy ..."} reply; the late answer is dropped.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::api {

struct ServerOptions {
    std::string socket_path = "/run/fcm-ha/agent.sock";
    unsigned socket_mode = 0660;  // operators in the socket's group may control the agent
    std::size_t max_request_bytes =
        std::size_t{64} * 1024;  // a longer line is answered with an error
    std::size_t max_clients = 16;
    // A client must send its whole request line within this time, and read its answer within it.
    std::chrono::milliseconds client_timeout{5000};
    // The loop must answer within this time; a force switch waits for the sync drain first.
    std::chrono::milliseconds response_timeout{30000};
    std::size_t queue_capacity = 64;  // requests in flight between server and loop
};

class ControlServer {
  public:
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

    // Binds and listens (parent directory created, a stale socket file replaced only when nobody
    // listens on it: a second agent must not steal the first one's socket), then starts the
    // server thread. Errors: bind/listen errnos, "already in use" when another agent listens.
    static Result<std::unique_ptr<ControlServer>> start(ServerOptions options);
    ~ControlServer();  // stop()
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Loop thread: poll this fd for readability (EFD_NONBLOCK eventfd), then call drain().
    [[nodiscard]] int event_fd() const { return request_efd_.get(); }
    // Loop thread: answers every queued request with `handler`; returns how many. Resets the
    // eventfd (EAGAIN is fine, e.g. when an io_uring read already consumed it). A handler that
    // throws a JSON type error gets {"ok":false,"error":...} sent for it.
    std::size_t drain(const Handler& handler);

    // Any thread (not the server thread): stops accepting, closes clients, joins the thread,
    // removes the socket file. Idempotent.
    void stop();

    [[nodiscard]] const std::string& socket_path() const { return options_.socket_path; }

    struct Impl;  // server-thread state, in the .cpp

  private:
    ControlServer(ServerOptions options, UniqueFd listen_fd, UniqueFd request_efd,
                  UniqueFd wake_efd);
    void run();

    ServerOptions options_;
    UniqueFd listen_fd_;
    UniqueFd request_efd_;  // server -> loop: requests queued
    UniqueFd wake_efd_;     // loop -> server: responses queued; stop() also writes it
    std::unique_ptr<Impl> impl_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

// Builds the two response shapes of the protocol.
nlohmann::json ok_response(nlohmann::json fields = nlohmann::json::object());
nlohmann::json error_response(std::string_view reason);

}  // namespace ha::api
