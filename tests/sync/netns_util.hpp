// Test/bench plumbing: two network namespaces joined by a veth in 198.18.0.0/15, and running code
// on a thread that joined one of them (optionally inside a private mount namespace with a bind
// mount, so a second engine sees the same root paths backed by other directories).
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace ha::sync::test {

inline int sh(const std::string& cmd) {
    const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
    return rc;
}

// Two namespaces, one veth: A 198.18.7.1/24, B 198.18.7.2/24, no default route.
class NetnsPair {
  public:
    NetnsPair() {
        const auto id = fmt::format("{}{}", ::getpid() % 100000, counter_++);
        a_ = "hsa" + id;
        b_ = "hsb" + id;
        va_ = "hva" + id;
        vb_ = "hvb" + id;
        ok_ = sh("ip netns add " + a_) == 0 && sh("ip netns add " + b_) == 0 &&
              sh(fmt::format("ip link add {} type veth peer name {}", va_, vb_)) == 0 &&
              sh(fmt::format("ip link set {} netns {}", va_, a_)) == 0 &&
              sh(fmt::format("ip link set {} netns {}", vb_, b_)) == 0 &&
              sh(fmt::format("ip -n {} addr add 198.18.7.1/24 dev {}", a_, va_)) == 0 &&
              sh(fmt::format("ip -n {} addr add 198.18.7.2/24 dev {}", b_, vb_)) == 0 &&
              sh(fmt::format("ip -n {} link set {} up", a_, va_)) == 0 &&
              sh(fmt::format("ip -n {} link set {} up", b_, vb_)) == 0 &&
              sh(fmt::format("ip -n {} link set lo up", a_)) == 0 &&
              sh(fmt::format("ip -n {} link set lo up", b_)) == 0;
    }
    ~NetnsPair() {
        sh("ip netns del " + a_);
        sh("ip netns del " + b_);
    }
    NetnsPair(const NetnsPair&) = delete;
    NetnsPair& operator=(const NetnsPair&) = delete;
    [[nodiscard]] bool ok() const { return ok_; }
    void link(bool up) { sh(fmt::format("ip -n {} link set {} {}", a_, va_, up ? "up" : "down")); }
    [[nodiscard]] const std::string& a() const { return a_; }
    [[nodiscard]] const std::string& b() const { return b_; }

  private:
    static inline int counter_ = 0;
    std::string a_, b_, va_, vb_;
    bool ok_ = false;
};

// Runs fn on a fresh thread that joined `netns` and, when `bind_from` is set, a private mount
// namespace where `bind_from` is mounted over `bind_to`. Threads fn starts inherit both, which is
// how the standby engine sees the same root paths as the active but different directories.
// Returns "" or what failed (fn is not run then).
inline std::string in_namespaces(const std::string& netns, const std::string& bind_from,
                                 const std::string& bind_to, const std::function<void()>& fn) {
    std::string err;
    std::thread t([&] {
        auto fail = [&](const char* what) {
            err = fmt::format("{}: {}", what, std::strerror(errno));
        };
        if (!bind_from.empty()) {
            if (::unshare(CLONE_NEWNS) != 0) return fail("unshare(CLONE_NEWNS)");
            if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
                return fail("mount --make-rprivate /");
            if (::mount(bind_from.c_str(), bind_to.c_str(), nullptr, MS_BIND, nullptr) != 0)
                return fail("mount --bind");
        }
        const int fd = ::open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail("open netns");
        const int rc = ::setns(fd, CLONE_NEWNET);
        ::close(fd);
        if (rc != 0) return fail("setns");
        fn();
    });
    t.join();
    return err;
}

}  // namespace ha::sync::test
