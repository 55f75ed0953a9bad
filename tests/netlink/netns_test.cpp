// Netns integration of netlink/: AddressManager, LinkMonitor, Announcer and ha_arp_watch against
// real namespaces, veths and a bridge, addressed in 198.18.0.0/24 and fd00:4a::/64.
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.hpp"
#include "netlink/address_manager.hpp"
#include "netlink/announcer.hpp"
#include "netlink/link_monitor.hpp"
#include "netlink/napi.hpp"

namespace ha::nl {
namespace {

#define HA_REQUIRE_ROOT()                                                                     \
    do {                                                                                      \
        if (geteuid() != 0) {                                                                 \
            const char* ci = std::getenv("CI");                                               \
            if (ci != nullptr && std::string(ci) == "true") FAIL() << "needs root (CI=true)"; \
            GTEST_SKIP() << "needs root to create network namespaces";                        \
        }                                                                                     \
    } while (0)

int sh(const std::string& cmd) {
    const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string sh_out(const std::string& cmd, int* status = nullptr) {
    std::string out;
    FILE* f = ::popen(cmd.c_str(), "r");
    if (f == nullptr) return out;
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
    const int rc = ::pclose(f);
    if (status != nullptr) *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    return out;
}

bool contains(const std::string& s, const std::string& what) {
    return s.find(what) != std::string::npos;
}

// Two boxes (a, b) and a client (c), each with lan0 plugged into a bridge in a "switch"
// namespace (s). Names carry the pid and a counter, and the destructor deletes them all.
class Lan {
  public:
    Lan() {
        static std::atomic<int> counter{0};
        const std::string sfx = std::to_string(::getpid()) + "-" + std::to_string(counter++);
        for (const char* role : {"a", "b", "c", "s"}) names_.push_back("hanl" + sfx + role);
        ok_ = sh("ip netns add " + s()) == 0 &&
              sh("ip -n " + s() + " link add br0 type bridge") == 0 &&
              sh("ip -n " + s() + " link set br0 up") == 0;
        const char* v4[] = {"198.18.0.1/24", "198.18.0.2/24", "198.18.0.3/24"};
        const char* v6[] = {"fd00:4a::1/64", "fd00:4a::2/64", "fd00:4a::3/64"};
        for (int i = 0; i < 3 && ok_; ++i) {
            const std::string& ns = names_[static_cast<std::size_t>(i)];
            const std::string port = "p" + std::string(1, static_cast<char>('a' + i));
            ok_ = sh("ip netns add " + ns) == 0 && sh("ip -n " + ns + " link set lo up") == 0 &&
                  sh(fmt::format("ip -n {} link add lan0 type veth peer name {} netns {}", ns, port,
                                 s())) == 0 &&
                  sh("ip -n " + s() + " link set " + port + " master br0 up") == 0 &&
                  sh("ip -n " + ns + " addr add " + v4[i] + " dev lan0") == 0 &&
                  sh("ip -n " + ns + " addr add " + v6[i] + " dev lan0 nodad") == 0 &&
                  sh("ip -n " + ns + " link set lan0 up") == 0;
        }
    }
    ~Lan() {
        for (const auto& n : names_) sh("ip netns del " + n);
    }
    Lan(const Lan&) = delete;
    Lan& operator=(const Lan&) = delete;

    [[nodiscard]] bool ok() const { return ok_; }
    [[nodiscard]] const std::string& a() const { return names_[0]; }
    [[nodiscard]] const std::string& b() const { return names_[1]; }
    [[nodiscard]] const std::string& c() const { return names_[2]; }
    [[nodiscard]] const std::string& s() const { return names_[3]; }
    static std::string mac_of(const std::string& ns) {
        std::string m = sh_out("ip netns exec " + ns + " cat /sys/class/net/lan0/address");
        while (!m.empty() && (m.back() == '\n')) m.pop_back();
        return m;
    }

  private:
    std::vector<std::string> names_;
    bool ok_ = false;
};

// Moves this thread into a namespace for the scope: sockets opened meanwhile stay in it.
class InNetns {
  public:
    explicit InNetns(const std::string& ns)
        : home_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
        UniqueFd target(::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
        ok_ = home_ && target && ::setns(target.get(), CLONE_NEWNET) == 0;
    }
    ~InNetns() {
        if (home_ && ::setns(home_.get(), CLONE_NEWNET) != 0) std::abort();
    }
    InNetns(const InNetns&) = delete;
    InNetns& operator=(const InNetns&) = delete;
    [[nodiscard]] bool ok() const { return ok_; }

  private:
    UniqueFd home_;
    bool ok_ = false;
};

constexpr auto kDeadline = std::chrono::seconds(5);

// Feeds the monitor until pred(event) matched or the deadline passed.
template <typename Pred>
bool wait_event(LinkMonitor& m, Pred pred) {
    const auto until = Clock::now() + kDeadline;
    bool seen = false;
    while (!seen && Clock::now() < until) {
        pollfd p{m.fd(), POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        auto st = m.on_readable([&](const MonitorEvent& e) { seen = seen || pred(e); });
        EXPECT_TRUE(st) << (st ? "" : st.error().message());
    }
    return seen;
}

// Drives the announcer like the loop would, until the probe reports.
Result<ProbeResult> run_probe(Announcer& an, const IpAddr& ip, const ProbeOptions& opts = {}) {
    if (auto st = an.probe(ip, Clock::now(), opts); !st) return unexpected(st.error());
    const auto until = Clock::now() + kDeadline;
    while (Clock::now() < until) {
        const auto dl = an.next_deadline();
        if (!dl) return fail("probing without a deadline", std::errc::state_not_recoverable);
        const auto wait = std::chrono::duration_cast<nanoseconds>(*dl - Clock::now());
        timespec ts{0, std::max<long>(0, static_cast<long>(wait.count()))};
        pollfd p{an.fd(), POLLIN, 0};
        const int n = ::ppoll(&p, 1, &ts, nullptr);
        Result<std::optional<ProbeResult>> r =
            n > 0 ? an.on_readable(Clock::now()) : an.on_deadline(Clock::now());
        if (!r) return unexpected(r.error());
        if (r->has_value()) return **r;
    }
    return fail("probe never finished", std::errc::timed_out);
}

class NetlinkNetns : public ::testing::Test {
  protected:
    void SetUp() override {
        HA_REQUIRE_ROOT();
        lan_ = std::make_unique<Lan>();
        ASSERT_TRUE(lan_->ok()) << "could not build the test namespaces";
    }
    std::unique_ptr<Lan> lan_;
};

const IpPrefix kCluster4 = *IpPrefix::parse("198.18.0.100/24");
const IpPrefix kCluster6 = *IpPrefix::parse("fd00:4a::100/64");

TEST_F(NetlinkNetns, AddressManagerAddsAndRemovesIdempotently) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    const int ifindex = static_cast<int>(if_nametoindex("lan0"));
    ASSERT_GT(ifindex, 0);
    auto mgr = AddressManager::create();
    ASSERT_TRUE(mgr) << mgr.error().message();
    for (const auto& p : {kCluster4, kCluster6}) {
        SCOPED_TRACE(p.to_string());
        const std::string show = "ip -n " + lan_->a() + " -o addr show dev lan0";
        ASSERT_TRUE(mgr->add(ifindex, p));
        ASSERT_TRUE(mgr->add(ifindex, p)) << "EEXIST must be success";
        const std::string listed = sh_out(show);
        EXPECT_TRUE(contains(listed, p.to_string())) << listed;
        const auto at = listed.find(p.to_string());
        const std::string line =
            at == std::string::npos ? "" : listed.substr(at, listed.find('\n', at) - at);
        EXPECT_FALSE(contains(line, "tentative")) << "IPv6 must be usable at once: " << line;
        if (p.addr.is_v6()) {
            EXPECT_TRUE(contains(line, "nodad")) << line;
        }
        auto has = mgr->has(ifindex, p);
        ASSERT_TRUE(has);
        EXPECT_TRUE(*has);
        ASSERT_TRUE(mgr->remove(ifindex, p));
        const std::string after = sh_out(show);
        EXPECT_FALSE(contains(after, p.to_string())) << after;
        ASSERT_TRUE(mgr->remove(ifindex, p)) << "EADDRNOTAVAIL must be success";
        has = mgr->has(ifindex, p);
        ASSERT_TRUE(has);
        EXPECT_FALSE(*has);
    }
    auto bad = mgr->add(9999, kCluster4);
    ASSERT_FALSE(bad);
    EXPECT_TRUE(contains(bad.error().message(), "ifindex=9999")) << bad.error().message();
}

TEST_F(NetlinkNetns, AddressWithALifetimeGoesAwayUnlessRenewed) {
    // The cluster IP's dead man's switch: the kernel drops it once nobody renews it.
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    const int ifindex = static_cast<int>(if_nametoindex("lan0"));
    auto mgr = AddressManager::create();
    ASSERT_TRUE(mgr) << mgr.error().message();
    ASSERT_TRUE(mgr->add(ifindex, kCluster4, {}, 1));
    const std::string show = "ip -n " + lan_->a() + " -o addr show dev lan0";
    EXPECT_TRUE(contains(sh_out(show), "valid_lft 1sec")) << sh_out(show);
    for (int i = 0; i < 3; ++i) {  // renewed every 0.5 s: still there after 1.5 s
        ::usleep(500'000);
        ASSERT_TRUE(mgr->renew(ifindex, kCluster4, {}, 1));
    }
    EXPECT_TRUE(*mgr->has(ifindex, kCluster4));
    bool gone = false;
    for (int i = 0; i < 40 && !gone; ++i) {  // the kernel checks lifetimes about once a second
        ::usleep(100'000);
        gone = !*mgr->has(ifindex, kCluster4);
    }
    EXPECT_TRUE(gone) << "not removed within 4 s of its last renewal";
}

TEST_F(NetlinkNetns, LinkMonitorReportsCarrierLossOfPeerEnd) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    const int ifindex = static_cast<int>(if_nametoindex("lan0"));
    auto mon = LinkMonitor::create();
    ASSERT_TRUE(mon) << mon.error().message();
    ASSERT_NE(mon->link(ifindex), nullptr);
    EXPECT_TRUE(mon->link(ifindex)->running());
    EXPECT_EQ(mon->link(ifindex)->name, "lan0");
    EXPECT_TRUE(mon->has_address(ifindex, *IpPrefix::parse("198.18.0.1/24")));

    ASSERT_EQ(sh("ip -n " + lan_->s() + " link set pa down"), 0);
    EXPECT_TRUE(wait_event(*mon, [&](const MonitorEvent& e) {
        const auto* l = std::get_if<LinkEvent>(&e);
        return l != nullptr && l->link.ifindex == ifindex && !l->link.carrier && l->link.admin_up &&
               l->link.name == "lan0";
    }));
    EXPECT_FALSE(mon->link(ifindex)->running());
    ASSERT_EQ(sh("ip -n " + lan_->s() + " link set pa up"), 0);
    EXPECT_TRUE(wait_event(*mon, [&](const MonitorEvent& e) {
        const auto* l = std::get_if<LinkEvent>(&e);
        return l != nullptr && l->link.ifindex == ifindex && l->link.running();
    }));
}

TEST_F(NetlinkNetns, LinkMonitorReportsClusterIpRemovedBehindOurBack) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    const int ifindex = static_cast<int>(if_nametoindex("lan0"));
    auto mon = LinkMonitor::create();
    ASSERT_TRUE(mon) << mon.error().message();
    auto mgr = AddressManager::create();
    ASSERT_TRUE(mgr);
    for (const auto& p : {kCluster4, kCluster6}) {
        SCOPED_TRACE(p.to_string());
        ASSERT_TRUE(mgr->add(ifindex, p));
        EXPECT_TRUE(wait_event(*mon, [&](const MonitorEvent& e) {
            const auto* a = std::get_if<AddrEvent>(&e);
            return a != nullptr && !a->addr.removed && a->addr.prefix == p;
        }));
        ASSERT_EQ(sh("ip -n " + lan_->a() + " addr del " + p.to_string() + " dev lan0"), 0);
        EXPECT_TRUE(wait_event(*mon, [&](const MonitorEvent& e) {
            const auto* a = std::get_if<AddrEvent>(&e);
            return a != nullptr && a->addr.removed && a->addr.prefix == p &&
                   a->addr.ifindex == ifindex;
        }));
        EXPECT_FALSE(mon->has_address(ifindex, p));
    }
}

TEST_F(NetlinkNetns, LinkMonitorResyncsAfterOverrunAndStillReportsRemoval) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    const int ifindex = static_cast<int>(if_nametoindex("lan0"));
    auto mgr = AddressManager::create();
    ASSERT_TRUE(mgr);
    ASSERT_TRUE(mgr->add(ifindex, kCluster4));
    auto mon = LinkMonitor::create();
    ASSERT_TRUE(mon);
    ASSERT_TRUE(mon->has_address(ifindex, kCluster4));
    // Shrink the receive buffer to the kernel minimum so a burst of changes overruns it.
    int tiny = 1;
    ASSERT_EQ(::setsockopt(mon->fd(), SOL_SOCKET, SO_RCVBUF, &tiny, sizeof tiny), 0);
    std::string batch;
    for (int i = 0; i < 200; ++i)
        batch += "addr add 198.18.1." + std::to_string(i + 1) + "/32 dev lan0\n";
    batch += "addr del " + kCluster4.to_string() + " dev lan0\n";
    const std::string file = "/tmp/" + lan_->a() + ".batch";
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(batch.c_str(), f);
    std::fclose(f);
    const int rc = sh("ip -n " + lan_->a() + " -batch " + file);
    std::remove(file.c_str());
    ASSERT_EQ(rc, 0);
    bool removed = false;
    auto st = mon->on_readable([&](const MonitorEvent& e) {
        const auto* a = std::get_if<AddrEvent>(&e);
        if (a != nullptr && a->addr.removed && a->addr.prefix == kCluster4) removed = true;
    });
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_GE(mon->resyncs(), 1U);
    EXPECT_TRUE(removed);
    EXPECT_FALSE(mon->has_address(ifindex, kCluster4));
    EXPECT_TRUE(mon->has_address(ifindex, *IpPrefix::parse("198.18.1.200/32")));
}

TEST_F(NetlinkNetns, ProbeFindsPeerHoldingIpv4AndIpv6) {
    ASSERT_EQ(sh("ip -n " + lan_->b() + " addr add " + kCluster4.to_string() + " dev lan0"), 0);
    ASSERT_EQ(sh("ip -n " + lan_->b() + " addr add " + kCluster6.to_string() + " dev lan0 nodad"),
              0);
    const std::string b_mac = Lan::mac_of(lan_->b());
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    auto an = Announcer::create(static_cast<int>(if_nametoindex("lan0")));
    ASSERT_TRUE(an) << an.error().message();
    for (const auto& p : {kCluster4, kCluster6}) {
        SCOPED_TRACE(p.to_string());
        auto r = run_probe(*an, p.addr);
        ASSERT_TRUE(r) << r.error().message();
        EXPECT_TRUE(r->conflict);
        EXPECT_EQ(r->by.to_string(), b_mac);
        EXPECT_EQ(r->ip, p.addr);
        EXPECT_FALSE(an->probing());
    }
}

TEST_F(NetlinkNetns, ProbeIsClearWhenNobodyHoldsTheIp) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    auto an = Announcer::create(static_cast<int>(if_nametoindex("lan0")));
    ASSERT_TRUE(an) << an.error().message();
    for (const auto& p : {kCluster4, kCluster6}) {
        SCOPED_TRACE(p.to_string());
        const auto t0 = Clock::now();
        auto r = run_probe(*an, p.addr);
        const auto took = Clock::now() - t0;
        ASSERT_TRUE(r) << r.error().message();
        EXPECT_FALSE(r->conflict);
        // 3 probes 1 ms apart + 1 ms: about 3 ms; generous bound for a loaded 2-core box.
        EXPECT_GE(took, milliseconds(3));
        EXPECT_LT(took, milliseconds(100));
    }
    EXPECT_GE(an->counters().frames_sent, 6U);
}

TEST_F(NetlinkNetns, ProbeFailsWhenItCannotSend) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    auto an = Announcer::create(static_cast<int>(if_nametoindex("lan0")));
    ASSERT_TRUE(an);
    ASSERT_EQ(sh("ip -n " + lan_->a() + " link set lan0 down"), 0);
    auto r = run_probe(*an, kCluster4.addr);
    ASSERT_FALSE(r) << "a probe that sent nothing must not report the IP as free";
}

// Polls `ip neigh` until the entry shows mac (or the deadline passes).
bool neigh_becomes(const std::string& ns, const std::string& ip, const std::string& mac) {
    const auto until = Clock::now() + kDeadline;
    while (Clock::now() < until) {
        if (contains(sh_out(fmt::format("ip -n {} neigh show {} dev lan0", ns, ip)), mac))
            return true;
        std::this_thread::sleep_for(milliseconds(2));
    }
    return false;
}

TEST_F(NetlinkNetns, GratuitousArpAndUnsolicitedNaUpdatePeerNeighbourTable) {
    // The client has stale entries pointing elsewhere (the old active's MAC).
    for (const auto& p : {kCluster4, kCluster6})
        ASSERT_EQ(sh("ip -n " + lan_->c() + " neigh replace " + p.addr.to_string() +
                     " lladdr 02:00:00:00:00:99 dev lan0 nud stale"),
                  0);
    const std::string a_mac = Lan::mac_of(lan_->a());
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    auto an = Announcer::create(static_cast<int>(if_nametoindex("lan0")));
    ASSERT_TRUE(an);
    EXPECT_EQ(an->mac().to_string(), a_mac);
    for (const auto& p : {kCluster4, kCluster6}) {
        SCOPED_TRACE(p.to_string());
        ASSERT_TRUE(an->announce(p.addr, Clock::now()));
        EXPECT_TRUE(neigh_becomes(lan_->c(), p.addr.to_string(), a_mac))
            << sh_out("ip -n " + lan_->c() + " neigh show");
    }
}

TEST_F(NetlinkNetns, AnnounceRepeatsFollowTheSchedule) {
    InNetns in(lan_->a());
    ASSERT_TRUE(in.ok());
    auto an = Announcer::create(static_cast<int>(if_nametoindex("lan0")));
    ASSERT_TRUE(an);
    const TimePoint t0 = Clock::now();
    ASSERT_TRUE(an->announce(kCluster4.addr, t0));
    EXPECT_EQ(an->counters().frames_sent, 2U);
    EXPECT_EQ(an->next_deadline(), t0 + milliseconds(100));
    ASSERT_TRUE(an->on_deadline(t0 + milliseconds(99)));
    EXPECT_EQ(an->counters().frames_sent, 2U);
    ASSERT_TRUE(an->on_deadline(t0 + milliseconds(100)));
    EXPECT_EQ(an->counters().frames_sent, 4U);
    EXPECT_EQ(an->next_deadline(), t0 + milliseconds(500));
    // A loop that overslept past two repeats sends one burst, then waits for the next.
    ASSERT_TRUE(an->on_deadline(t0 + milliseconds(1200)));
    EXPECT_EQ(an->counters().frames_sent, 6U);
    EXPECT_EQ(an->next_deadline(), t0 + milliseconds(2000));
    ASSERT_TRUE(an->on_deadline(t0 + milliseconds(2000)));
    EXPECT_EQ(an->counters().frames_sent, 8U);
    EXPECT_FALSE(an->next_deadline().has_value());
    ASSERT_TRUE(an->announce(kCluster4.addr, t0));
    an->cancel_announce();
    EXPECT_FALSE(an->next_deadline().has_value());
}

std::string watch(const Lan& lan, int ms, int* status) {
    return sh_out("ip netns exec " + lan.c() + " " + HA_ARP_WATCH + " lan0 " +
                      kCluster4.addr.to_string() + " 200 " + std::to_string(ms),
                  status);
}

TEST_F(NetlinkNetns, ArpWatchSeesOneHolder) {
    ASSERT_EQ(sh("ip -n " + lan_->a() + " addr add " + kCluster4.to_string() + " dev lan0"), 0);
    int status = -1;
    const std::string out = watch(*lan_, 300, &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_TRUE(contains(out, "reply t_us=")) << out;
    EXPECT_TRUE(contains(out, "mac=" + Lan::mac_of(lan_->a()) + " first=1")) << out;
    EXPECT_FALSE(contains(out, Lan::mac_of(lan_->b()))) << out;
    EXPECT_TRUE(contains(out, "conflicts=0")) << out;
}

TEST_F(NetlinkNetns, ArpWatchFailsWhenTwoBoxesHoldTheIp) {
    for (const auto& ns : {lan_->a(), lan_->b()})
        ASSERT_EQ(sh("ip -n " + ns + " addr add " + kCluster4.to_string() + " dev lan0"), 0);
    int status = -1;
    const std::string out = watch(*lan_, 200, &status);
    EXPECT_EQ(status, 1) << out;
    EXPECT_TRUE(contains(out, "conflict t_us=")) << out;
    EXPECT_TRUE(contains(out, Lan::mac_of(lan_->a()))) << out;
    EXPECT_TRUE(contains(out, Lan::mac_of(lan_->b()))) << out;
}

// Runs fn on a thread of its own inside namespace `ns`, with the sysfs of namespace `sysfs_of`
// (by default `ns`) mounted at /sys in a mount namespace private to that thread, the way the lab
// starts an agent. Returns false when the thread could not be set up.
template <typename Fn>
bool in_netns_with_sysfs(const std::string& ns, Fn fn, const std::string& sysfs_of = "") {
    bool ok = false;
    std::thread t([&] {
        UniqueFd sysfs_ns(::open(("/run/netns/" + (sysfs_of.empty() ? ns : sysfs_of)).c_str(),
                                 O_RDONLY | O_CLOEXEC));
        UniqueFd net_ns(::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
        if (!sysfs_ns || !net_ns || ::unshare(CLONE_NEWNS) != 0 ||
            ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::setns(sysfs_ns.get(), CLONE_NEWNET) != 0 || ::umount2("/sys", MNT_DETACH) != 0 ||
            ::mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0 ||
            ::setns(net_ns.get(), CLONE_NEWNET) != 0)
            return;
        ok = true;
        fn();
    });
    t.join();
    return ok;
}

struct NapiPlace {
    int policy = -1;
    int priority = -1;
    bool only_on_cpu0 = false;
};

NapiPlace place_of(int pid) {
    NapiPlace p;
    sched_param sp{};
    p.policy = sched_getscheduler(pid);
    if (sched_getparam(pid, &sp) == 0) p.priority = sp.sched_priority;
    cpu_set_t set;
    CPU_ZERO(&set);
    p.only_on_cpu0 =
        sched_getaffinity(pid, sizeof set, &set) == 0 && CPU_COUNT(&set) == 1 && CPU_ISSET(0, &set);
    return p;
}

std::string threaded_flag(const std::string& ns, const std::string& dev) {
    std::string v = sh_out("ip netns exec " + ns + " cat /sys/class/net/" + dev + "/threaded");
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
}

TEST_F(NetlinkNetns, NapiThreadsGoToTheCpuAtFifoAndAgainAfterTheLinkBounces) {
    // GRO gives a veth a NAPI instance, as XDP does.
    ASSERT_EQ(sh("ip netns exec " + lan_->a() + " ethtool -K lan0 gro on"), 0);
    ASSERT_EQ(threaded_flag(lan_->a(), "lan0"), "0");
    std::vector<NapiInstance> first, after_bounce;
    Result<int> moved = 0, again = 0, rebounce = 0;
    ASSERT_TRUE(in_netns_with_sysfs(lan_->a(), [&] {
        const int idx = static_cast<int>(if_nametoindex("lan0"));
        auto napi = NapiControl::open();
        ASSERT_TRUE(napi) << napi.error().message();
        moved = napi->pin_threads("lan0", idx, 0, 7);
        again = napi->pin_threads("lan0", idx, 0, 7);
        if (auto l = napi->list(idx)) first = *l;
        // Down and up: a veth's NAPI instances and their threads are new.
        ASSERT_EQ(sh("ip netns exec " + lan_->a() + " ip link set lan0 down"), 0);
        ASSERT_EQ(sh("ip netns exec " + lan_->a() + " ip link set lan0 up"), 0);
        rebounce = napi->pin_threads("lan0", idx, 0, 7);
        if (auto l = napi->list(idx)) after_bounce = *l;
    }));
    ASSERT_TRUE(moved) << moved.error().message();
    EXPECT_EQ(*moved, 1);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(*again, 0) << "already in place: nothing to change";
    EXPECT_EQ(threaded_flag(lan_->a(), "lan0"), "1");
    ASSERT_EQ(first.size(), 1u);
    ASSERT_GT(first[0].pid, 0);
    ASSERT_TRUE(rebounce) << rebounce.error().message();
    EXPECT_EQ(*rebounce, 1);
    ASSERT_EQ(after_bounce.size(), 1u);
    for (const auto& n : after_bounce) {
        const NapiPlace p = place_of(n.pid);
        EXPECT_EQ(p.policy, SCHED_FIFO) << "napi " << n.id;
        EXPECT_EQ(p.priority, 7) << "napi " << n.id;
        EXPECT_TRUE(p.only_on_cpu0) << "napi " << n.id;
    }
}

TEST_F(NetlinkNetns, NapiRefusesANicWithoutNapiAndChangesNothing) {
    Result<int> r = 0;
    ASSERT_TRUE(in_netns_with_sysfs(lan_->b(), [&] {
        auto napi = NapiControl::open();
        ASSERT_TRUE(napi) << napi.error().message();
        r = napi->pin_threads("lan0", static_cast<int>(if_nametoindex("lan0")), 0, 7);
    }));
    ASSERT_FALSE(r);
    EXPECT_TRUE(contains(r.error().message(), "lan0: no NAPI instance")) << r.error().message();
    EXPECT_EQ(threaded_flag(lan_->b(), "lan0"), "0");
}

TEST_F(NetlinkNetns, NapiNeverSwitchesAnotherNamespacesNicOfTheSameName) {
    for (const auto& ns : {lan_->a(), lan_->c()})
        ASSERT_EQ(sh("ip netns exec " + ns + " ethtool -K lan0 gro on"), 0);
    Result<int> r = 0;
    // Namespace c's lan0 seen through namespace a's sysfs.
    ASSERT_TRUE(in_netns_with_sysfs(
        lan_->c(),
        [&] {
            auto napi = NapiControl::open();
            ASSERT_TRUE(napi) << napi.error().message();
            r = napi->pin_threads("lan0", static_cast<int>(if_nametoindex("lan0")), 0, 7);
        },
        lan_->a()));
    ASSERT_FALSE(r);
    EXPECT_TRUE(contains(r.error().message(), "another network namespace's NIC"))
        << r.error().message();
    EXPECT_EQ(threaded_flag(lan_->a(), "lan0"), "0");
    EXPECT_EQ(threaded_flag(lan_->c(), "lan0"), "0");
}

TEST_F(NetlinkNetns, ArpWatchRejectsBadArguments) {
    int status = -1;
    const std::string out =
        sh_out(std::string(HA_ARP_WATCH) + " lan0 not-an-ip 100 10 2>&1", &status);
    EXPECT_EQ(status, 2);
    EXPECT_TRUE(contains(out, "not-an-ip")) << out;
}

}  // namespace
}  // namespace ha::nl
