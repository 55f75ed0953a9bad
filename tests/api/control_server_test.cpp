// ControlServer over a real Unix socket: round trips answered on the loop thread, malformed and
// oversized requests, slow clients, an unresponsive loop, stale and busy socket paths, shutdown.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "agent/api/client.hpp"
#include "agent/api/control_server.hpp"
#include "fake_loop.hpp"

namespace ha::api {
namespace {

using nlohmann::json;
using testing::FakeLoop;
using testing::TempDir;
using namespace std::chrono_literals;

ServerOptions options_in(const TempDir& tmp) {
    ServerOptions o;
    o.socket_path = tmp.path() + "/run/fcm-ha/agent.sock";
    return o;
}

UniqueFd raw_connect(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
    return fd;
}

// Reads until EOF or `lines` newlines, with a bound; returns what arrived.
std::string read_lines(int fd, int lines, std::chrono::milliseconds bound = 5000ms) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + bound;
    while (std::count(out.begin(), out.end(), '\n') < lines) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
        char buf[4096];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

bool peer_closed(int fd, std::chrono::milliseconds bound) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(bound.count())) <= 0) return false;
    char c;
    // A close with unread request bytes in the server's buffer arrives as a reset.
    ssize_t n = ::recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

json echo(const json& req) {
    return ok_response({{"echo", req["cmd"]}});
}

TEST(ControlServer, RoundTripIsAnsweredOnTheLoopThread) {
    TempDir tmp;
    auto server = ControlServer::start(options_in(tmp));
    ASSERT_TRUE(server) << server.error().message();
    std::atomic<bool> on_loop{false};
    std::thread::id main_id = std::this_thread::get_id();
    FakeLoop* loop_ptr = nullptr;
    FakeLoop loop(**server, [&](const json& req) {
        on_loop = loop_ptr != nullptr && std::this_thread::get_id() == loop_ptr->thread_id() &&
                  std::this_thread::get_id() != main_id;
        return echo(req);
    });
    loop_ptr = &loop;
    auto answer = call((*server)->socket_path(), {{"cmd", "status"}}, 5000ms);
    ASSERT_TRUE(answer) << answer.error().message();
    EXPECT_EQ((*answer)["ok"], true);
    EXPECT_EQ((*answer)["echo"], "status");
    EXPECT_TRUE(on_loop.load());
    EXPECT_EQ(loop.handled(), 1u);
}

TEST(ControlServer, SocketHasMode0660InACreatedParent) {
    TempDir tmp;
    auto opts = options_in(tmp);
    auto server = ControlServer::start(opts);
    ASSERT_TRUE(server);
    struct stat st {};
    ASSERT_EQ(::stat(opts.socket_path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST(ControlServer, MalformedRequestsNeverReachTheLoop) {
    TempDir tmp;
    auto server = ControlServer::start(options_in(tmp));
    ASSERT_TRUE(server);
    FakeLoop loop(**server, echo);
    auto fd = raw_connect((*server)->socket_path());
    ASSERT_TRUE(fd.valid());
    std::string reqs =
        "not json\n[1,2]\n{\"nocmd\":1}\n{\"cmd\":\"frobnicate\"}\n"
        "{\"cmd\":\"log\",\"which\":\"audit\"}\n{\"cmd\":\"debug\",\"subsystem\":\"hb\"}\n"
        "{\"cmd\":\"events\",\"limit\":-1}\n";
    ASSERT_EQ(::send(fd.get(), reqs.data(), reqs.size(), 0), static_cast<ssize_t>(reqs.size()));
    std::string out = read_lines(fd.get(), 7);
    std::vector<json> answers;
    std::size_t pos = 0;
    while (pos < out.size()) {
        auto nl = out.find('\n', pos);
        answers.push_back(json::parse(out.substr(pos, nl - pos)));
        pos = nl + 1;
    }
    ASSERT_EQ(answers.size(), 7u) << out;
    for (const auto& a : answers) EXPECT_EQ(a["ok"], false) << a;
    EXPECT_EQ(answers[0]["error"], "request is not a JSON object");
    EXPECT_EQ(answers[2]["error"], "request has no \"cmd\" string");
    EXPECT_EQ(answers[3]["error"], "unknown command 'frobnicate'");
    EXPECT_NE(answers[4]["error"].get<std::string>().find("\"audit\""), std::string::npos);
    EXPECT_EQ(answers[5]["error"], "debug: 'on' must be true or false");
    EXPECT_NE(answers[6]["error"].get<std::string>().find("'limit'"), std::string::npos);
    EXPECT_EQ(loop.handled(), 0u);
}

TEST(ControlServer, PipelinedRequestsAreAnsweredInOrder) {
    TempDir tmp;
    auto server = ControlServer::start(options_in(tmp));
    ASSERT_TRUE(server);
    FakeLoop loop(**server, echo);
    auto fd = raw_connect((*server)->socket_path());
    std::string reqs = "{\"cmd\":\"status\"}\n{\"cmd\":\"sync_status\"}\n{\"cmd\":\"switch\"}\n";
    ASSERT_EQ(::send(fd.get(), reqs.data(), reqs.size(), 0), static_cast<ssize_t>(reqs.size()));
    EXPECT_EQ(read_lines(fd.get(), 3),
              "{\"echo\":\"status\",\"ok\":true}\n{\"echo\":\"sync_status\",\"ok\":true}\n"
              "{\"echo\":\"switch\",\"ok\":true}\n");
}

TEST(ControlServer, OversizeRequestIsRefusedAndTheConnectionClosed) {
    TempDir tmp;
    auto opts = options_in(tmp);
    opts.max_request_bytes = 1024;
    auto server = ControlServer::start(opts);
    ASSERT_TRUE(server);
    FakeLoop loop(**server, echo);
    auto fd = raw_connect(opts.socket_path);
    std::string big(8192, 'x');
    ASSERT_EQ(::send(fd.get(), big.data(), big.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(big.size()));
    auto line = read_lines(fd.get(), 1);
    ASSERT_FALSE(line.empty());
    auto a = json::parse(line);
    EXPECT_EQ(a["error"], "request longer than 1024 bytes");
    EXPECT_TRUE(peer_closed(fd.get(), 5000ms));
    EXPECT_EQ(loop.handled(), 0u);
}

TEST(ControlServer, SlowClientNeitherBlocksOthersNorStaysForever) {
    TempDir tmp;
    auto opts = options_in(tmp);
    opts.client_timeout = 300ms;
    auto server = ControlServer::start(opts);
    ASSERT_TRUE(server);
    FakeLoop loop(**server, echo);
    auto slow = raw_connect(opts.socket_path);
    ASSERT_TRUE(slow.valid());
    std::string partial = "{\"cmd\":\"sta";
    ASSERT_EQ(::send(slow.get(), partial.data(), partial.size(), 0),
              static_cast<ssize_t>(partial.size()));
    auto answer = call(opts.socket_path, {{"cmd", "status"}}, 5000ms);
    ASSERT_TRUE(answer) << answer.error().message();
    EXPECT_EQ((*answer)["echo"], "status");
    EXPECT_TRUE(peer_closed(slow.get(), 5000ms));
}

TEST(ControlServer, UnresponsiveLoopGetsABusyAnswerAndTheLateAnswerIsDropped) {
    TempDir tmp;
    auto opts = options_in(tmp);
    opts.response_timeout = 200ms;
    auto server = ControlServer::start(opts);
    ASSERT_TRUE(server);
    // No loop yet: nobody drains.
    auto answer = call(opts.socket_path, {{"cmd", "status"}}, 5000ms);
    ASSERT_TRUE(answer) << answer.error().message();
    EXPECT_EQ((*answer)["ok"], false);
    EXPECT_NE((*answer)["error"].get<std::string>().find("agent busy"), std::string::npos);
    // The loop wakes up late: it answers the stale request (to nobody), then serves new ones.
    FakeLoop loop(**server, echo);
    auto next = call(opts.socket_path, {{"cmd", "switch"}}, 5000ms);
    ASSERT_TRUE(next) << next.error().message();
    EXPECT_EQ((*next)["echo"], "switch");
}

TEST(ControlServer, HandlerErrorsBecomeErrorAnswers) {
    TempDir tmp;
    auto server = ControlServer::start(options_in(tmp));
    ASSERT_TRUE(server);
    FakeLoop loop(**server, [](const json& req) -> json {
        // at(), not operator[]: a missing key through a const json& is undefined behaviour
        // (it read past the map's end and crashed the test now and then), at() throws.
        if (req["cmd"] == "status") return req.at("no").at("such").get<int>();
        return json::array();  // not an answer object
    });
    auto a = call((*server)->socket_path(), {{"cmd", "status"}}, 5000ms);
    ASSERT_TRUE(a);
    EXPECT_EQ((*a)["ok"], false);
    EXPECT_NE((*a)["error"].get<std::string>().find("bad request"), std::string::npos);
    auto b = call((*server)->socket_path(), {{"cmd", "switch"}}, 5000ms);
    ASSERT_TRUE(b);
    EXPECT_EQ((*b)["ok"], false);
    EXPECT_NE((*b)["error"].get<std::string>().find("internal error"), std::string::npos);
}

TEST(ControlServer, ReplacesAStaleSocketButNotALiveOne) {
    TempDir tmp;
    auto opts = options_in(tmp);
    std::filesystem::create_directories(tmp.path() + "/run/fcm-ha");
    {
        // A socket file left by a killed agent: bound, never unlinked, nobody listening.
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, opts.socket_path.data(), opts.socket_path.size());
        ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    }
    ASSERT_TRUE(std::filesystem::exists(opts.socket_path));
    auto first = ControlServer::start(opts);
    ASSERT_TRUE(first) << first.error().message();
    FakeLoop loop(**first, echo);

    auto second = ControlServer::start(opts);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().message().find("another fcm-ha-agent is running"), std::string::npos)
        << second.error().message();
    auto a = call(opts.socket_path, {{"cmd", "status"}}, 5000ms);
    ASSERT_TRUE(a) << a.error().message();
    EXPECT_EQ((*a)["ok"], true);
}

TEST(ControlServer, RefusesToReplaceSomethingThatIsNotASocket) {
    TempDir tmp;
    auto opts = options_in(tmp);
    std::filesystem::create_directories(tmp.path() + "/run/fcm-ha");
    { std::ofstream(opts.socket_path) << "precious"; }
    auto server = ControlServer::start(opts);
    ASSERT_FALSE(server);
    EXPECT_TRUE(std::filesystem::is_regular_file(opts.socket_path));
}

TEST(ControlServer, StopClosesClientsAndRemovesTheSocket) {
    TempDir tmp;
    auto opts = options_in(tmp);
    auto server = ControlServer::start(opts);
    ASSERT_TRUE(server);
    auto idle = raw_connect(opts.socket_path);
    ASSERT_TRUE(idle.valid());
    (*server)->stop();
    EXPECT_FALSE(std::filesystem::exists(opts.socket_path));
    EXPECT_TRUE(peer_closed(idle.get(), 5000ms));
    (*server)->stop();  // idempotent
    auto a = call(opts.socket_path, {{"cmd", "status"}}, 1000ms);
    ASSERT_FALSE(a);
    EXPECT_TRUE(is_not_running(a.error()));
    EXPECT_EQ(a.error().message().find("fcm-ha-agent is not running (no listener on " +
                                       opts.socket_path + ")"),
              0u)
        << a.error().message();
}

}  // namespace
}  // namespace ha::api
