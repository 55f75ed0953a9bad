#include "agent/service/probe.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "agent/service/spawn.hpp"
#include "common/log.hpp"
#include "common/sockaddr.hpp"

namespace ha::service {

namespace {
std::string random_token() {
    std::uint64_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) r = mono_ns();
    return fmt::format("{:016x}", r);
}
}  // namespace

Result<LivenessProbe> LivenessProbe::create(const core::ServiceConfig& cfg,
                                            const IpAddr& default_target) {
    LivenessProbe p;
    p.cfg_ = cfg;
    p.target_ = default_target;
    if (cfg.probe == core::ProbeKind::SipOptions && !cfg.sip_target.empty()) {
        auto ep = core::parse_endpoint(cfg.sip_target);
        if (!ep) return unexpected(ep.error().wrap("service.sip_target"));
        p.target_ = ep->addr;
        p.port_ = ep->port;
    }
    if (cfg.probe == core::ProbeKind::SipOptions) {
        p.sock_.reset(::socket(p.target_.is_v4() ? AF_INET : AF_INET6,
                               SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!p.sock_) return last_errno("SIP probe socket");
    }
    return p;
}

LivenessProbe::~LivenessProbe() {
    if (child_ > 0) {
        ::kill(child_, SIGKILL);
        ::waitpid(child_, nullptr, 0);
    }
}

void LivenessProbe::enable(bool on, TimePoint now) {
    if (on == enabled_) return;
    enabled_ = on;
    outstanding_ = false;
    failures_ = 0;
    faulted_ = false;
    answers_ = 0;
    grace_until_ =
        now + std::max<Duration>(std::chrono::seconds(5),
                                 std::chrono::duration_cast<Duration>(cfg_.probe_interval) *
                                     static_cast<int>(cfg_.probe_failures));
    // The PBX needs a moment to bind after a start; the first probe goes after a tenth of an
    // interval, so "service ready" in the failover log is measured finely.
    next_send_ = now + std::chrono::duration_cast<Duration>(cfg_.probe_interval) / 10;
    if (!on && child_ > 0) {
        ::kill(child_, SIGKILL);
        reap_command();
    }
}

int LivenessProbe::fd() const {
    if (cfg_.probe == core::ProbeKind::SipOptions) return sock_.get();
    return pidfd_.get();
}

std::optional<TimePoint> LivenessProbe::next_deadline() const {
    if (!enabled_ || cfg_.probe == core::ProbeKind::None) return std::nullopt;
    return outstanding_ ? answer_by_ : next_send_;  // on_deadline() advances exactly these
}

Status LivenessProbe::send_options(TimePoint now) {
    sockaddr_storage ss{};
    const socklen_t len = to_sockaddr(target_, port_, ss);
    call_id_ = random_token() + "@fcm-ha";
    ++cseq_;
    const std::string host =
        target_.is_v4() ? target_.to_string() : "[" + target_.to_string() + "]";
    // RFC 3261 §11: OPTIONS asks for capabilities; any final response shows the PBX is alive.
    std::string msg = fmt::format(
        "OPTIONS sip:{}:{} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP {}:{};branch=z9hG4bK{};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:fcm-ha-probe@{}>;tag={}\r\n"
        "To: <sip:{}:{}>\r\n"
        "Call-ID: {}\r\n"
        "CSeq: {} OPTIONS\r\n"
        "User-Agent: fcm-ha liveness probe\r\n"
        "Content-Length: 0\r\n\r\n",
        host, port_, host, port_, random_token(), host, random_token(), host, port_, call_id_,
        cseq_);
    if (::sendto(sock_.get(), msg.data(), msg.size(), MSG_DONTWAIT,
                 reinterpret_cast<sockaddr*>(&ss), len) < 0)
        return last_errno("send SIP OPTIONS to " + host);
    outstanding_ = true;
    answer_by_ = now + std::chrono::duration_cast<Duration>(cfg_.probe_timeout);
    ++sent_;
    return {};
}

Status LivenessProbe::spawn_command(TimePoint now) {
    auto spawned = spawn_shell(cfg_.probe_command, true);
    if (!spawned) return unexpected(spawned.error().wrap("probe command"));
    const pid_t pid = *spawned;
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
        int err = errno;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return errno_error(err, "pidfd_open probe command");
    }
    child_ = pid;
    pidfd_.reset(fd);
    outstanding_ = true;
    answer_by_ = now + std::chrono::duration_cast<Duration>(cfg_.probe_timeout);
    ++sent_;
    return {};
}

void LivenessProbe::reap_command() {
    if (child_ > 0) ::waitpid(child_, nullptr, 0);
    child_ = -1;
    pidfd_.reset();
}

std::optional<ProbeVerdict> LivenessProbe::success() {
    outstanding_ = false;
    ++answers_;
    failures_ = 0;
    if (!faulted_) return std::nullopt;
    faulted_ = false;
    return ProbeVerdict{false, "PBX answers its liveness probe again"};
}

std::optional<ProbeVerdict> LivenessProbe::failure(const std::string& why, TimePoint now) {
    outstanding_ = false;
    if (answers_ == 0 && now < grace_until_) return std::nullopt;  // still starting
    ++failures_;
    if (faulted_ || failures_ < cfg_.probe_failures) return std::nullopt;
    faulted_ = true;
    return ProbeVerdict{true, fmt::format("PBX deadlock: {} ({} probes in a row)", why, failures_)};
}

std::optional<ProbeVerdict> LivenessProbe::on_readable(TimePoint) {
    if (cfg_.probe == core::ProbeKind::SipOptions) {
        char buf[2048];
        std::optional<ProbeVerdict> v;
        for (;;) {
            ssize_t n = ::recv(sock_.get(), buf, sizeof buf - 1, MSG_DONTWAIT);
            if (n <= 0) break;
            std::string_view resp(buf, static_cast<std::size_t>(n));
            // Only a response to the probe now outstanding counts (a late one proves nothing now).
            if (outstanding_ && resp.starts_with("SIP/2.0 ") &&
                resp.find(call_id_) != std::string_view::npos) {
                if (auto s = success()) v = s;
            }
        }
        return v;
    }
    if (cfg_.probe == core::ProbeKind::Command && child_ > 0) {
        int status = 0;
        if (::waitpid(child_, &status, WNOHANG) != child_) return std::nullopt;
        child_ = -1;
        pidfd_.reset();
        if (!outstanding_) return std::nullopt;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return success();
        return failure(
            fmt::format("probe command exited {}",
                        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)),
            Clock::now());
    }
    return std::nullopt;
}

std::optional<ProbeVerdict> LivenessProbe::on_deadline(TimePoint now) {
    if (!enabled_) return std::nullopt;
    std::optional<ProbeVerdict> v;
    // A command that already exited counts before its deadline is judged.
    if (cfg_.probe == core::ProbeKind::Command && child_ > 0) v = on_readable(now);
    if (outstanding_ && now >= answer_by_) {
        if (child_ > 0) {
            ::kill(-child_, SIGKILL);
            reap_command();
        }
        v = failure(cfg_.probe == core::ProbeKind::SipOptions ? "no answer to SIP OPTIONS"
                                                              : "probe command timed out",
                    now);
    }
    if (!outstanding_ && now >= next_send_) {
        next_send_ = now + std::chrono::duration_cast<Duration>(cfg_.probe_interval);
        Status s =
            cfg_.probe == core::ProbeKind::SipOptions ? send_options(now) : spawn_command(now);
        if (!s) {
            log::warn("service", "liveness probe: {}", s.error().message());
            if (auto f = failure(s.error().message(), now)) v = f;
        }
    }
    return v;
}

Result<CoreDumpWatch> CoreDumpWatch::create(const std::string& dir) {
    CoreDumpWatch w;
    w.fd_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!w.fd_) return last_errno("inotify_init1");
    if (::inotify_add_watch(w.fd_.get(), dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0)
        return last_errno("watch core dump folder " + dir);
    return w;
}

std::vector<std::string> CoreDumpWatch::drain() {
    std::vector<std::string> names;
    alignas(inotify_event) char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd_.get(), buf, sizeof buf);
        if (n <= 0) break;
        for (char* p = buf; p < buf + n;) {
            auto* ev = reinterpret_cast<inotify_event*>(p);
            if (ev->len > 0) names.emplace_back(ev->name);
            p += sizeof(inotify_event) + ev->len;
        }
    }
    return names;
}

}  // namespace ha::service
