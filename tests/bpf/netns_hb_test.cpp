// XDP_TX heartbeat replies over a real veth pair between two namespaces, and the pinned link
// surviving kill -9 of the process that attached it (re-adopted, then detached and unpinned).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "bpf_test_env.hpp"
#include "common/clock.hpp"
#include "common/unique_fd.hpp"
#include "loader.hpp"
#include "packet_builder.hpp"
#include "wire_util.hpp"

namespace ha::bpf {
namespace {

const Key kKey{0xa5a5a5a5a5a5a5a5ULL, 0x5a5a5a5a5a5a5a5aULL};
constexpr const char* kAddrA = "198.18.0.1";
constexpr const char* kAddrB = "198.18.0.2";
constexpr const char* kMacA = "02:00:5e:4a:00:01";
constexpr const char* kMacB = "02:00:5e:4a:00:02";

bool sh(const std::string& cmd) {
    return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

// Runs fn on a thread that has joined the named namespace (setns is per thread), so the test's
// own thread never changes namespace.
void in_netns(const std::string& ns, const std::function<void()>& fn) {
    std::thread t([&] {
        UniqueFd fd(::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd || ::setns(fd.get(), CLONE_NEWNET) != 0) {
            ADD_FAILURE() << "setns " << ns;
            return;
        }
        fn();
    });
    t.join();
}

ha_node_state state_of(std::uint8_t station, std::uint8_t st, std::uint64_t term) {
    NodeState s;
    s.term = term;
    s.station = station;
    s.state = st;
    s.ha_enabled = true;
    s.healthy = true;
    s.proto_version = 1;
    s.model = "FCM630A";
    s.version = "1.0.0";
    return *to_wire(s);
}

class NetnsHeartbeat : public ::testing::Test {
  protected:
    void SetUp() override {
        HA_REQUIRE_ROOT();
        std::random_device rd;
        const std::string suffix = std::to_string(::getpid()) + "-" + std::to_string(rd() % 100000);
        ns_a_ = "hbA-" + suffix;
        ns_b_ = "hbB-" + suffix;
        if_a_ = "hbva" + std::to_string(rd() % 100000);
        if_b_ = "hbvb" + std::to_string(rd() % 100000);
        ASSERT_TRUE(sh("ip netns add " + ns_a_));
        created_a_ = true;
        ASSERT_TRUE(sh("ip netns add " + ns_b_));
        created_b_ = true;
        ASSERT_TRUE(sh("ip link add " + if_a_ + " netns " + ns_a_ + " address " + kMacA +
                       " type veth peer name " + if_b_ + " netns " + ns_b_ + " address " + kMacB));
        const std::string a = "ip -n " + ns_a_ + " ", b = "ip -n " + ns_b_ + " ";
        ASSERT_TRUE(sh(a + "addr add " + kAddrA + "/24 dev " + if_a_));
        ASSERT_TRUE(sh(b + "addr add " + kAddrB + "/24 dev " + if_b_));
        ASSERT_TRUE(sh(a + "link set " + if_a_ + " up") && sh(a + "link set lo up"));
        ASSERT_TRUE(sh(b + "link set " + if_b_ + " up") && sh(b + "link set lo up"));
        ASSERT_TRUE(sh(a + "neigh add " + kAddrB + " lladdr " + kMacB + " dev " + if_a_ +
                       " nud permanent"));
        ASSERT_TRUE(sh(b + "neigh add " + kAddrA + " lladdr " + kMacA + " dev " + if_b_ +
                       " nud permanent"));
        bpffs_.emplace();
        ASSERT_TRUE(bpffs_->ok()) << "mount a private bpffs";
        pin_root_ = bpffs_->path() + "/fcm-ha";

        // B is the requester: a socket, and XDP_PASS on its veth so A's XDP_TX frames arrive.
        in_netns(ns_b_, [&] {
            sock_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
            sockaddr_in local{};
            local.sin_family = AF_INET;
            local.sin_addr.s_addr = test::ip4(kAddrB);
            ASSERT_EQ(::bind(sock_.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)), 0);
            auto p = PassProgram::attach(static_cast<int>(if_nametoindex(if_b_.c_str())));
            ASSERT_TRUE(p) << p.error().message();
            pass_.emplace(std::move(*p));
        });
    }

    void TearDown() override {
        if (child_ > 0) {
            ::kill(child_, SIGKILL);
            ::waitpid(child_, nullptr, 0);
        }
        pass_.reset();
        sock_.reset();
        if (created_a_) sh("ip netns del " + ns_a_);  // takes the veth pair with it
        if (created_b_) sh("ip netns del " + ns_b_);
        bpffs_.reset();
    }

    ResponderOptions options() const {
        ResponderOptions o;
        o.ifname = if_a_;
        o.pin_root = pin_root_;
        o.attach_mode = AttachMode::Native;  // veth has native XDP: falling back would hide a bug
        o.key = kKey;
        o.peer_mac = *MacAddr::parse(kMacB);
        return o;
    }

    int ifindex_a() {
        int idx = 0;
        in_netns(ns_a_, [&] { idx = static_cast<int>(if_nametoindex(if_a_.c_str())); });
        return idx;
    }

    // Sends a signed request from B and waits (bounded) for the answer.
    std::optional<Message> exchange(std::uint64_t seq, int timeout_ms = 2000) {
        const MsgBytes req =
            build_request(state_of(HA_STATION_SECONDARY, 3, 4), kKey, seq, mono_ns());
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(HA_HB_DEFAULT_PORT);
        to.sin_addr.s_addr = test::ip4(kAddrA);
        EXPECT_EQ(::sendto(sock_.get(), req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to),
                           sizeof(to)),
                  static_cast<ssize_t>(req.size()));
        const auto deadline = Clock::now() + milliseconds(timeout_ms);
        for (;;) {
            const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{sock_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            std::array<std::uint8_t, 256> buf{};
            const ssize_t n = ::recv(sock_.get(), buf.data(), buf.size(), 0);
            if (n < 0) continue;  // e.g. ECONNREFUSED from an ICMP when nobody answers
            auto m = parse_message(std::span(buf).first(static_cast<std::size_t>(n)), kKey);
            EXPECT_TRUE(m) << m.error().message();
            if (m && m->type == MsgType::Reply && m->seq == seq) return *m;
        }
    }

    std::string ns_a_, ns_b_, if_a_, if_b_, pin_root_;
    bool created_a_ = false, created_b_ = false;
    std::optional<test::PrivateBpfFs> bpffs_;
    std::optional<PassProgram> pass_;
    UniqueFd sock_;
    pid_t child_ = -1;
};

TEST_F(NetnsHeartbeat, RepliesOverVethAndSurvivesKillOfItsLoader) {
    const int ifindex = ifindex_a();
    ASSERT_GT(ifindex, 0);

    // The "agent": a child process that attaches, publishes its state, then is killed -9.
    int ready[2];
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
        UniqueFd ns(::open(("/var/run/netns/" + ns_a_).c_str(), O_RDONLY | O_CLOEXEC));
        if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) ::_exit(10);
        ResponderOptions o = options();
        o.ifindex = ifindex;
        auto r = Responder::create(o);
        if (!r) {
            std::fprintf(stderr, "child: %s\n", r.error().message().c_str());
            ::_exit(11);
        }
        ha_agent_state st{};
        st.self = state_of(HA_STATION_PRIMARY, 2, 9);
        st.alive_until_ns = mono_ns() + 600'000'000'000ULL;
        if (!r->set_state(st)) ::_exit(12);
        const char mode = r->mode() == "native" ? 'N' : 'G';
        if (::write(ready[1], &mode, 1) != 1) ::_exit(13);
        for (;;) ::pause();
    }
    ::close(ready[1]);
    char mode = 0;
    pollfd p{ready[0], POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "child never became ready";
    ASSERT_EQ(::read(ready[0], &mode, 1), 1) << "child failed to attach (see stderr)";
    ::close(ready[0]);
    EXPECT_EQ(mode, 'N') << "veth must run the responder in native mode";

    auto r1 = exchange(make_seq(1, 1));
    ASSERT_TRUE(r1) << "no XDP_TX reply over the veth";
    EXPECT_EQ(r1->state.term, 9u);
    EXPECT_EQ(r1->state.station, HA_STATION_PRIMARY);
    EXPECT_FALSE(r1->state.agent_stale);
    EXPECT_LE(r1->sent_ns, mono_ns());

    ASSERT_EQ(::kill(child_, SIGKILL), 0);
    ASSERT_EQ(::waitpid(child_, nullptr, 0), child_);
    child_ = -1;

    auto r2 = exchange(make_seq(1, 2));
    ASSERT_TRUE(r2) << "the pinned link should keep answering after kill -9";
    EXPECT_EQ(r2->state.term, 9u);
    struct stat st {};
    EXPECT_EQ(::stat((pin_root_ + "/" + if_a_ + "/link").c_str(), &st), 0);
    EXPECT_EQ(::stat((pin_root_ + "/" + if_a_ + "/ha_state").c_str(), &st), 0);

    // The next start re-adopts the link and the maps (the replay window survived too).
    in_netns(ns_a_, [&] {
        ResponderOptions o = options();
        o.ifindex = ifindex;
        auto r = Responder::create(o);
        ASSERT_TRUE(r) << r.error().message();
        EXPECT_TRUE(r->adopted());
        EXPECT_EQ(r->mode(), "native");
        auto seen = r->last_request();
        ASSERT_TRUE(seen && seen->has_value());
        EXPECT_EQ((*seen)->last_seq, make_seq(1, 2));
        EXPECT_EQ((*seen)->state.state, 3);
        EXPECT_GE(r->counters()->rx_request, 2u);

        // The agent is considered hung: replies carry the stale mark.
        ha_agent_state hung{};
        hung.self = state_of(HA_STATION_PRIMARY, 2, 10);
        hung.alive_until_ns = mono_ns() - 1;
        ASSERT_TRUE(r->set_state(hung));
        auto r3 = exchange(make_seq(1, 3));
        ASSERT_TRUE(r3);
        EXPECT_TRUE(r3->state.agent_stale);
        EXPECT_EQ(r3->state.term, 10u);

        ASSERT_TRUE(r->detach_and_unpin());
        bpf_xdp_query_opts q{};
        q.sz = sizeof(q);
        ASSERT_EQ(bpf_xdp_query(ifindex, 0, &q), 0);
        EXPECT_EQ(q.prog_id, 0u) << "XDP program still attached after detach_and_unpin";
    });
    struct stat gone {};
    EXPECT_NE(::stat((pin_root_ + "/" + if_a_).c_str(), &gone), 0) << "pin folder left behind";
    EXPECT_FALSE(exchange(make_seq(1, 4), 300)) << "nobody should answer after a clean stop";
}

TEST_F(NetnsHeartbeat, UnpinnedResponderEndsWithItsOwner) {
    const int ifindex = ifindex_a();
    in_netns(ns_a_, [&] {
        ResponderOptions o = options();
        o.ifindex = ifindex;
        o.pin_root.clear();
        {
            auto r = Responder::create(o);
            ASSERT_TRUE(r) << r.error().message();
            ha_agent_state st{};
            st.self = state_of(HA_STATION_PRIMARY, 2, 1);
            st.alive_until_ns = mono_ns() + 60'000'000'000ULL;
            ASSERT_TRUE(r->set_state(st));
            EXPECT_TRUE(exchange(make_seq(2, 1)));
        }
        bpf_xdp_query_opts q{};
        q.sz = sizeof(q);
        ASSERT_EQ(bpf_xdp_query(ifindex, 0, &q), 0);
        EXPECT_EQ(q.prog_id, 0u);
    });
}

}  // namespace
}  // namespace ha::bpf
