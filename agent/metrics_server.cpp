#include "agent/metrics_server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "agent/core/config.hpp"
#include "common/log.hpp"
#include "common/sockaddr.hpp"

namespace ha {

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen) {
    auto ep = core::parse_endpoint(listen);
    if (!ep) return unexpected(ep.error().wrap("metrics.listen"));
    std::unique_ptr<MetricsServer> m(new MetricsServer());
    const bool v6 = ep->addr.is_v6();
    m->listen_fd_.reset(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!m->listen_fd_) return last_errno("metrics socket");
    int one = 1;
    ::setsockopt(m->listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss;
    const socklen_t len = to_sockaddr(ep->addr, ep->port, ss);
    if (::bind(m->listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
        return last_errno("bind metrics " + listen);
    if (::listen(m->listen_fd_.get(), 8) != 0) return last_errno("listen metrics " + listen);
    m->stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!m->stop_fd_) return last_errno("eventfd");
    m->thread_ = std::thread([p = m.get()] { p->run(); });
    log::info("metrics", "serving Prometheus metrics on http://{}/metrics", listen);
    return m;
}

MetricsServer::~MetricsServer() {
    if (thread_.joinable()) {
        std::uint64_t one = 1;
        (void)!::write(stop_fd_.get(), &one, sizeof one);
        thread_.join();
    }
}

void MetricsServer::run() {
    for (;;) {
        pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents) return;
        UniqueFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) continue;
        // One short request, one answer; a slow client gets 1 s.
        timeval tv{1, 0};
        ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        char req[1024];
        ssize_t n = ::recv(c.get(), req, sizeof req - 1, 0);
        if (n <= 0) continue;
        std::string_view r(req, static_cast<std::size_t>(n));
        std::string body, status = "200 OK";
        if (r.starts_with("GET /metrics")) {
            body = *text_.load();
        } else {
            status = "404 Not Found";
            body = "only GET /metrics is served\n";
        }
        std::string head = fmt::format(
            "HTTP/1.0 {}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n"
            "Connection: close\r\n\r\n",
            status, body.size());
        head += body;
        (void)!::send(c.get(), head.data(), head.size(), MSG_NOSIGNAL);
    }
}

}  // namespace ha
