// Prometheus text metrics on a local HTTP endpoint (GET /metrics). The loop publishes a complete
// text snapshot (atomic shared_ptr swap, no lock on the loop); a server thread answers requests.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha {

class MetricsServer {
  public:
    // listen: "ADDRESS:PORT" (IPv4 or [IPv6]); meant for loopback or a management network.
    static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    // Loop thread: replace the text served.
    void publish(std::string text) {
        text_.store(std::make_shared<const std::string>(std::move(text)));
    }

  private:
    MetricsServer() = default;
    void run();
    UniqueFd listen_fd_;
    UniqueFd stop_fd_;  // eventfd: stop()
    std::atomic<std::shared_ptr<const std::string>> text_{std::make_shared<const std::string>()};
    std::thread thread_;
};

}  // namespace ha
