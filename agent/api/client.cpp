#include "agent/api/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "common/clock.hpp"
#include "common/unique_fd.hpp"

namespace ha::api {

namespace {
constexpr std::size_t kMaxResponse = 16u << 20;

// Waits for `events` on fd until the deadline; false on timeout.
Result<bool> wait_for(int fd, short events, TimePoint deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, events, 0};
        int rc = ::poll(&p, 1, static_cast<int>(left.count()));
        if (rc < 0) {
            if (errno == EINTR) continue;
            return last_errno("poll");
        }
        if (rc > 0) return true;
    }
}
}  // namespace

bool is_not_running(const Error& e) {
    return e.code == std::errc::connection_refused ||
           e.code == std::errc::no_such_file_or_directory;
}

Result<nlohmann::json> call(const std::string& socket_path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path) {
        return fail("bad control socket path: '" + socket_path + "'");
    }
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return last_errno("socket(AF_UNIX)");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        int err = errno;
        if (err == ENOENT || err == ECONNREFUSED) {
            return errno_error(err,
                               "fcm-ha-agent is not running (no listener on " + socket_path + ")");
        }
        if (err == EAGAIN) {
            return fail("fcm-ha-agent is busy (connection backlog full on " + socket_path + ")",
                        std::errc::resource_unavailable_try_again);
        }
        return errno_error(err, "connect " + socket_path);
    }
    std::string out = request.dump() + "\n";
    std::size_t sent = 0;
    while (sent < out.size()) {
        auto ready = wait_for(fd.get(), POLLOUT, deadline);
        if (!ready) return unexpected(ready.error());
        if (!*ready) return fail("timed out sending to " + socket_path, std::errc::timed_out);
        ssize_t n = ::send(fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return last_errno("send to " + socket_path);
        }
        sent += static_cast<std::size_t>(n);
    }
    std::string in;
    for (;;) {
        auto nl = in.find('\n');
        if (nl != std::string::npos) {
            auto j = nlohmann::json::parse(std::string_view(in).substr(0, nl), nullptr, false);
            if (j.is_discarded() || !j.is_object()) {
                return fail("agent sent a malformed answer on " + socket_path,
                            std::errc::bad_message);
            }
            return j;
        }
        auto ready = wait_for(fd.get(), POLLIN, deadline);
        if (!ready) return unexpected(ready.error());
        if (!*ready) {
            return fail("no answer from fcm-ha-agent within " + std::to_string(timeout.count()) +
                            "ms on " + socket_path,
                        std::errc::timed_out);
        }
        char buf[65536];
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return last_errno("recv from " + socket_path);
        }
        if (n == 0) {
            return fail("fcm-ha-agent closed the connection without answering on " + socket_path,
                        std::errc::connection_reset);
        }
        in.append(buf, static_cast<std::size_t>(n));
        if (in.size() > kMaxResponse) {
            return fail("answer from fcm-ha-agent too large", std::errc::message_size);
        }
    }
}

}  // namespace ha::api
