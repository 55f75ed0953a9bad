#include "agent/api/control_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/lockfree/spsc_queue.hpp>
#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/api/store_queries.hpp"
#include "common/atomic_file.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"

namespace ha::api {

nlohmann::json ok_response(nlohmann::json fields) {
    if (!fields.is_object()) fields = nlohmann::json::object();
    fields["ok"] = true;
    return fields;
}

nlohmann::json error_response(std::string_view reason) {
    return {{"ok", false}, {"error", std::string(reason)}};
}

namespace {

constexpr std::string_view kSub = "api";

// One request or response crossing between the threads. Raw pointers go through the queues
// (trivially copyable, no allocation inside the lock-free path); ownership moves with them.
// clang-tidy sees json's destructor allocate (it flattens deep values) inside this struct's
// noexcept destructor; out of memory is fatal here anyway (STYLE: memory exhaustion aborts).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Message {
    std::uint64_t id = 0;
    nlohmann::json body;
};

void signal_efd(int fd) {
    std::uint64_t one = 1;
    // EAGAIN only when the counter is saturated, which still leaves the fd readable.
    while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

void clear_efd(int fd) {
    std::uint64_t v = 0;
    while (::read(fd, &v, sizeof v) < 0 && errno == EINTR) {
    }
}

std::string parent_dir(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos || slash == 0) return {};
    return path.substr(0, slash);
}

Result<sockaddr_un> unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) {
        return fail("control socket path must be 1-" + std::to_string(sizeof addr.sun_path - 1) +
                    " bytes: " + path);
    }
    std::memcpy(addr.sun_path, path.data(), path.size());
    return addr;
}

// True when something accepts connections on `path`.
bool someone_listens(const sockaddr_un& addr) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return false;
    // EAGAIN: a listener whose backlog is full is still a listener.
    int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    return rc == 0 || errno == EAGAIN;
}

}  // namespace

struct ControlServer::Impl {
    explicit Impl(std::size_t capacity) : requests(capacity), responses(capacity) {}
    ~Impl() {
        Message* m = nullptr;
        while (requests.pop(m)) delete m;
        while (responses.pop(m)) delete m;
    }

    struct Client {
        UniqueFd fd;
        std::string in;
        std::string out;
        std::uint64_t pending = 0;  // request id the loop is answering; 0 = none
        bool close_after_write = false;
        TimePoint deadline;
    };

    boost::lockfree::spsc_queue<Message*> requests;   // server -> loop
    boost::lockfree::spsc_queue<Message*> responses;  // loop -> server
    // Server thread only below.
    std::vector<Client> clients;
    std::uint64_t next_id = 1;
    std::size_t in_flight = 0;  // pushed requests whose response has not been popped yet
    ino_t socket_ino = 0;
};

ControlServer::ControlServer(ServerOptions options, UniqueFd listen_fd, UniqueFd request_efd,
                             UniqueFd wake_efd)
    : options_(std::move(options)),
      listen_fd_(std::move(listen_fd)),
      request_efd_(std::move(request_efd)),
      wake_efd_(std::move(wake_efd)),
      impl_(std::make_unique<Impl>(options_.queue_capacity)) {}

Result<std::unique_ptr<ControlServer>> ControlServer::start(ServerOptions options) {
    if (options.queue_capacity == 0) options.queue_capacity = 1;
    if (options.max_clients == 0) options.max_clients = 1;
    const std::string& path = options.socket_path;
    auto addr = unix_address(path);
    if (!addr) return unexpected(addr.error());
    if (auto dir = parent_dir(path); !dir.empty()) {
        if (auto made = make_dirs(dir); !made) {
            return unexpected(made.error().wrap("control socket"));
        }
    }
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return last_errno("socket(AF_UNIX)");
    const auto* sa = reinterpret_cast<const sockaddr*>(&*addr);
    if (::bind(fd.get(), sa, sizeof *addr) != 0) {
        if (errno != EADDRINUSE) return last_errno("bind " + path);
        if (someone_listens(*addr)) {
            return fail("control socket " + path + " is in use: another fcm-ha-agent is running",
                        std::errc::address_in_use);
        }
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) return last_errno("lstat " + path);
        if (!S_ISSOCK(st.st_mode)) {
            return fail("control socket path " + path + " exists and is not a socket",
                        std::errc::file_exists);
        }
        log::info(kSub, "replacing stale control socket path={}", path);
        if (::unlink(path.c_str()) != 0) return last_errno("unlink stale " + path);
        if (::bind(fd.get(), sa, sizeof *addr) != 0) return last_errno("bind " + path);
    }
    struct stat st {};
    if (::chmod(path.c_str(), options.socket_mode) != 0 || ::stat(path.c_str(), &st) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return errno_error(err, "chmod " + path);
    }
    if (::listen(fd.get(), 16) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return errno_error(err, "listen " + path);
    }
    UniqueFd req(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!req || !wake) {
        int err = errno;
        ::unlink(path.c_str());
        return errno_error(err, "eventfd");
    }
    std::unique_ptr<ControlServer> server(
        new ControlServer(std::move(options), std::move(fd), std::move(req), std::move(wake)));
    server->impl_->socket_ino = st.st_ino;
    server->thread_ = std::thread([s = server.get()] { s->run(); });
    log::info(kSub, "control socket listening path={}", server->options_.socket_path);
    return server;
}

ControlServer::~ControlServer() {
    stop();
}

void ControlServer::stop() {
    if (stopping_.exchange(true)) return;
    signal_efd(wake_efd_.get());
    if (thread_.joinable()) thread_.join();
    impl_->clients.clear();
    listen_fd_.reset();
    // Remove the path only if it is still our socket (a successor agent may have replaced it).
    struct stat st {};
    if (::lstat(options_.socket_path.c_str(), &st) == 0 && st.st_ino == impl_->socket_ino) {
        ::unlink(options_.socket_path.c_str());
    }
}

std::size_t ControlServer::drain(const Handler& handler) {
    clear_efd(request_efd_.get());
    std::size_t n = 0;
    Message* raw = nullptr;
    while (impl_->requests.pop(raw)) {
        std::unique_ptr<Message> m(raw);
        nlohmann::json response;
        try {
            response = handler(m->body);
        } catch (const nlohmann::json::exception& e) {
            response = error_response(std::string("bad request: ") + e.what());
        }
        if (!response.is_object() || !response.contains("ok")) {
            response = error_response("internal error: handler gave no {\"ok\":...} object");
        }
        m->body = std::move(response);
        // Cannot fail: the server admits at most queue_capacity requests in flight.
        bool pushed = impl_->responses.push(m.get());
        HA_ASSERT(pushed);
        (void)m.release();  // the queue owns it now
        ++n;
    }
    if (n > 0) signal_efd(wake_efd_.get());
    return n;
}

void ControlServer::run() {
    Impl& s = *impl_;
    using Client = Impl::Client;

    auto respond = [&](Client& c, const nlohmann::json& body, TimePoint now) {
        c.out = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        c.out.push_back('\n');
        c.deadline = now + options_.client_timeout;
    };

    // Takes the next complete line from the client's buffer, if any, and starts answering it.
    auto take_request = [&](Client& c, TimePoint now) {
        if (c.pending != 0 || !c.out.empty() || c.close_after_write) return;
        auto nl = c.in.find('\n');
        if (nl == std::string::npos) {
            if (c.in.size() > options_.max_request_bytes) {
                respond(c,
                        error_response("request longer than " +
                                       std::to_string(options_.max_request_bytes) + " bytes"),
                        now);
                c.close_after_write = true;
            }
            return;
        }
        std::string line = c.in.substr(0, nl);
        c.in.erase(0, nl + 1);
        if (line.size() > options_.max_request_bytes) {
            respond(c,
                    error_response("request longer than " +
                                   std::to_string(options_.max_request_bytes) + " bytes"),
                    now);
            c.close_after_write = true;
            return;
        }
        auto req = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (req.is_discarded() || !req.is_object()) {
            respond(c, error_response("request is not a JSON object"), now);
            return;
        }
        // Malformed requests are answered here: the loop only ever sees well-formed ones.
        if (auto bad = check_request(req); !bad.empty()) {
            respond(c, error_response(bad), now);
            return;
        }
        if (s.in_flight >= options_.queue_capacity) {
            respond(c, error_response("agent busy: too many requests in flight"), now);
            return;
        }
        auto m = std::make_unique<Message>();
        m->id = s.next_id++;
        m->body = std::move(req);
        std::uint64_t id = m->id;
        if (!s.requests.push(m.get())) {
            respond(c, error_response("agent busy: request queue full"), now);
            return;
        }
        (void)m.release();  // the queue owns it now
        ++s.in_flight;
        c.pending = id;
        c.deadline = now + options_.response_timeout;
        signal_efd(request_efd_.get());
    };

    std::vector<pollfd> pfds;
    while (!stopping_.load(std::memory_order_acquire)) {
        auto now = Clock::now();
        // Deadlines first: a client that is too slow is dropped or told the agent is busy.
        for (auto& c : s.clients) {
            if (now < c.deadline) continue;
            if (c.pending != 0) {
                log::warn(kSub, "loop did not answer within {}ms; replying busy",
                          options_.response_timeout.count());
                c.pending = 0;  // the late answer finds no client and is dropped
                respond(c,
                        error_response("agent busy: no answer within " +
                                       std::to_string(options_.response_timeout.count()) + "ms"),
                        now);
            } else {
                c.fd.reset();
            }
        }
        std::erase_if(s.clients, [](const Client& c) { return !c.fd.valid(); });

        pfds.clear();
        pfds.push_back({wake_efd_.get(), POLLIN, 0});
        bool accepting = s.clients.size() < options_.max_clients;
        pfds.push_back({listen_fd_.get(), static_cast<short>(accepting ? POLLIN : 0), 0});
        auto next = now + std::chrono::hours(1);
        for (auto& c : s.clients) {
            short ev = 0;
            if (!c.out.empty()) {
                ev = POLLOUT;
            } else if (c.pending == 0 && !c.close_after_write) {
                ev = POLLIN;
            }
            pfds.push_back({c.fd.get(), ev, 0});
            next = std::min(next, c.deadline);
        }
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
        int rc = ::poll(pfds.data(), pfds.size(), static_cast<int>(std::max<long>(wait, 0)));
        if (rc < 0) {
            if (errno == EINTR) continue;
            log::error(kSub, "poll failed: {}", std::strerror(errno));
            break;
        }
        now = Clock::now();

        if (pfds[0].revents & POLLIN) {
            clear_efd(wake_efd_.get());
            Message* raw = nullptr;
            while (s.responses.pop(raw)) {
                std::unique_ptr<Message> m(raw);
                --s.in_flight;
                for (auto& c : s.clients) {
                    if (c.pending == m->id) {
                        c.pending = 0;
                        respond(c, m->body, now);
                        break;
                    }
                }
            }
        }
        // Clients are handled before accepting so the pollfd indices stay aligned.
        for (std::size_t i = 0; i < s.clients.size(); ++i) {
            Client& c = s.clients[i];
            short re = pfds[i + 2].revents;
            if (re == 0) continue;
            if (re & POLLOUT) {
                ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
                if (n < 0 && errno != EAGAIN && errno != EINTR) {
                    c.fd.reset();
                    continue;
                }
                if (n > 0) c.out.erase(0, static_cast<std::size_t>(n));
                if (c.out.empty()) {
                    if (c.close_after_write) {
                        c.fd.reset();
                        continue;
                    }
                    c.deadline = now + options_.client_timeout;
                }
            } else if (re & POLLIN) {
                char buf[4096];
                ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    c.fd.reset();
                    continue;
                }
                if (n > 0) c.in.append(buf, static_cast<std::size_t>(n));
            } else if (re & (POLLERR | POLLHUP | POLLNVAL)) {
                c.fd.reset();
                continue;
            }
            take_request(c, now);
        }
        if (pfds[1].revents & POLLIN) {
            while (s.clients.size() < options_.max_clients) {
                UniqueFd cfd(
                    ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
                if (!cfd) break;
                Client c;
                c.fd = std::move(cfd);
                c.deadline = now + options_.client_timeout;
                s.clients.push_back(std::move(c));
            }
        }
    }
    s.clients.clear();
}

}  // namespace ha::api
