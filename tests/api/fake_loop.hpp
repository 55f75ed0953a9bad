// Test helper: a thread that plays the agent's io_uring loop for ControlServer tests. It polls the
// server's eventfd (plus its own stop eventfd) and answers requests with a test handler, exactly
// as the loop does: drain() on the polling thread.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "agent/api/control_server.hpp"
#include "common/unique_fd.hpp"

namespace ha::api::testing {

class FakeLoop {
  public:
    FakeLoop(ControlServer& server, ControlServer::Handler handler)
        : server_(server), handler_(std::move(handler)), stop_(::eventfd(0, EFD_CLOEXEC)) {
        thread_ = std::thread([this] { run(); });
    }
    ~FakeLoop() { stop(); }
    FakeLoop(const FakeLoop&) = delete;
    FakeLoop& operator=(const FakeLoop&) = delete;

    void stop() {
        if (!thread_.joinable()) return;
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
        thread_.join();
    }
    [[nodiscard]] std::thread::id thread_id() const { return id_.load(); }
    [[nodiscard]] std::size_t handled() const { return handled_.load(); }

  private:
    void run() {
        id_ = std::this_thread::get_id();
        for (;;) {
            pollfd p[2] = {{server_.event_fd(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
            if (::poll(p, 2, -1) < 0) continue;
            if (p[1].revents & POLLIN) return;
            // Counted before the answer is queued, so a client holding its answer sees the count.
            if (p[0].revents & POLLIN)
                server_.drain([this](const nlohmann::json& req) {
                    ++handled_;
                    return handler_(req);
                });
        }
    }

    ControlServer& server_;
    ControlServer::Handler handler_;
    UniqueFd stop_;
    std::atomic<std::thread::id> id_{};
    std::atomic<std::size_t> handled_{0};
    std::thread thread_;
};

// A private directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
  public:
    TempDir() {
        const char* base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/fcm-ha-api-XXXXXX";
        char* made = ::mkdtemp(tmpl.data());
        if (made != nullptr) path_ = made;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] const std::string& path() const { return path_; }

  private:
    std::string path_;
};

}  // namespace ha::api::testing
