// Shared test plumbing for tests/bpf: root/CI gating and a private bpffs mount.
#pragma once

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>

namespace ha::test {

inline bool in_ci() {
    const char* ci = std::getenv("CI");
    return ci != nullptr && std::string_view(ci) == "true";
}

// Skips (or fails under CI=true) when the test cannot touch BPF. Use from SetUp or a test body.
#define HA_REQUIRE_ROOT()                                                         \
    do {                                                                          \
        if (::geteuid() != 0) {                                                   \
            if (::ha::test::in_ci()) FAIL() << "needs root for BPF, and CI=true"; \
            GTEST_SKIP() << "needs root (CAP_BPF, CAP_NET_ADMIN) for BPF";        \
        }                                                                         \
    } while (0)

// A bpf filesystem mounted on a fresh temp folder, so pins never touch /sys/fs/bpf.
class PrivateBpfFs {
  public:
    PrivateBpfFs() {
        std::string tmpl = "/tmp/ha-bpffs-XXXXXX";
        if (::mkdtemp(tmpl.data()) == nullptr) return;
        dir_ = tmpl;
        if (::mount("bpf", dir_.c_str(), "bpf", 0, "mode=0700") != 0) {
            ::rmdir(dir_.c_str());
            dir_.clear();
            return;
        }
        mounted_ = true;
    }
    ~PrivateBpfFs() {
        if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
        if (!dir_.empty()) ::rmdir(dir_.c_str());
    }
    PrivateBpfFs(const PrivateBpfFs&) = delete;
    PrivateBpfFs& operator=(const PrivateBpfFs&) = delete;

    [[nodiscard]] bool ok() const { return mounted_; }
    [[nodiscard]] const std::string& path() const { return dir_; }

  private:
    std::string dir_;
    bool mounted_ = false;
};

}  // namespace ha::test
