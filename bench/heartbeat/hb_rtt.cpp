// hb_rtt: the probing side of the heartbeat benchmark. Sends signed heartbeat requests at a fixed
// interval and times each reply with CLOCK_MONOTONIC (send and receive stamps taken here).
//
// RTT mode (default): a warm-up, then --runs runs of --count probes; p50/p99/p99.9/max per run,
// median and MAD of those across runs, and percentiles pooled over every probe.
// Loss mode (--loss-seconds): probes for a fixed time and feeds two loss detectors with a
// --timeout-us timeout; the responder answers throughout, so every loss either reports is false.
//   wall clock: a timer at "last reply + timeout" (BFD-style): at each wake-up, before queued
//               replies are read, lost if now - last reply > timeout.
//   evidence:   ha::core::Liveness, as the agent uses it: lost only if requests actually sent got
//               no reply within the timeout, judged after queued replies are read.
//
// Measuring thread: pinned (--cpu), SCHED_FIFO + mlockall unless --rt-prio 0. Output: a table on
// stdout and a JSON file (--json).
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/core/liveness.hpp"
#include "bench_util.hpp"
#include "common/clock.hpp"
#include "common/keyfile.hpp"
#include "common/unique_fd.hpp"
#include "loader.hpp"
#include "wire_util.hpp"

namespace {

using ha::mono_ns;
using json = nlohmann::json;

struct Options {
    std::string target;
    std::uint16_t port = HA_HB_DEFAULT_PORT;
    std::string key_file;
    std::uint64_t interval_us = 100;
    std::uint64_t count = 20'000;
    std::uint64_t runs = 5;
    std::uint64_t warmup = 2'000;
    int cpu = 1;  // -1: not pinned
    int rt_prio = 50;
    std::string xdp_pass_if;
    std::string label = "probe";
    std::string json_path;
    std::uint64_t loss_seconds = 0;  // 0: RTT mode
    std::uint64_t timeout_us = 1000;
};

void usage() {
    std::fprintf(stderr,
                 "usage: hb_rtt --target IPV4 --key-file F [--port P] [--interval-us N]\n"
                 "              [--count N] [--runs N] [--warmup N] [--cpu N|-1] [--rt-prio 0-99]\n"
                 "              [--xdp-pass IFACE] [--label S] [--json FILE]\n"
                 "              [--loss-seconds S [--timeout-us N]]\n");
}

ha::Result<Options> parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (i + 1 >= argc) return ha::fail(std::string(a) + ": missing value");
        const std::string v = argv[++i];
        auto num = [&](std::uint64_t lo, std::uint64_t hi) {
            return ha::bench::parse_uint(a, v, lo, hi);
        };
        ha::Result<std::uint64_t> n = std::uint64_t{0};
        if (a == "--target")
            o.target = v;
        else if (a == "--key-file")
            o.key_file = v;
        else if (a == "--xdp-pass")
            o.xdp_pass_if = v;
        else if (a == "--label")
            o.label = v;
        else if (a == "--json")
            o.json_path = v;
        else if (a == "--cpu" && v == "-1")
            o.cpu = -1;
        else {
            struct Num {
                std::string_view flag;
                std::uint64_t lo, hi;
            };
            static constexpr Num kNums[] = {
                {"--port", 1, 65535},
                {"--interval-us", 20, 1'000'000},
                {"--count", 100, 100'000'000},
                {"--runs", 1, 1000},
                {"--warmup", 0, 10'000'000},
                {"--rt-prio", 0, 99},
                {"--loss-seconds", 1, 86'400},
                {"--timeout-us", 50, 10'000'000},
                {"--cpu", 0, 4095},
            };
            const auto* spec = std::find_if(std::begin(kNums), std::end(kNums),
                                            [&](const Num& x) { return x.flag == a; });
            if (spec == std::end(kNums)) return ha::fail("unknown option '" + std::string(a) + "'");
            n = num(spec->lo, spec->hi);
            if (!n) return ha::unexpected(n.error());
            if (a == "--port")
                o.port = static_cast<std::uint16_t>(*n);
            else if (a == "--interval-us")
                o.interval_us = *n;
            else if (a == "--count")
                o.count = *n;
            else if (a == "--runs")
                o.runs = *n;
            else if (a == "--warmup")
                o.warmup = *n;
            else if (a == "--rt-prio")
                o.rt_prio = static_cast<int>(*n);
            else if (a == "--loss-seconds")
                o.loss_seconds = *n;
            else if (a == "--timeout-us")
                o.timeout_us = *n;
            else
                o.cpu = static_cast<int>(*n);
        }
    }
    if (o.target.empty()) return ha::fail("--target is required");
    if (o.key_file.empty()) return ha::fail("--key-file is required");
    return o;
}

// ---- environment ----

std::string read_first_line(const std::string& path) {
    std::ifstream f(path);
    std::string line;
    if (!f || !std::getline(f, line)) return "n/a";
    return line;
}

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) {
            auto p = line.find(':');
            return p == std::string::npos ? line : line.substr(p + 2);
        }
    return "n/a";
}

// Host steal and total ticks from /proc/stat (USER_HZ): a VM that was stopped shows steal.
std::pair<std::uint64_t, std::uint64_t> steal_ticks() {
    std::ifstream f("/proc/stat");
    std::string cpu;
    std::uint64_t v[8]{}, total = 0;
    f >> cpu;
    for (auto& x : v) {
        f >> x;
        total += x;
    }
    return {v[7], total};
}

json environment(const Options& o) {
    utsname u{};
    ::uname(&u);
    json e;
    e["kernel"] = std::string(u.release);
    e["cpu_model"] = cpu_model();
    e["governor"] = read_first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    e["clocksource"] =
        read_first_line("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    e["cores"] = ::sysconf(_SC_NPROCESSORS_ONLN);
    e["prober_cpu"] = o.cpu;
    e["prober_sched"] =
        o.rt_prio > 0 ? fmt::format("SCHED_FIFO {} + mlockall", o.rt_prio) : "SCHED_OTHER nice 0";
    e["interval_us"] = o.interval_us;
    return e;
}

// ---- statistics ----

// Nearest-rank percentile of a sorted sample.
std::uint64_t pct(const std::vector<std::uint64_t>& sorted, double p) {
    if (sorted.empty()) return 0;
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double mad(const std::vector<double>& v) {
    const double m = median(v);
    std::vector<double> d;
    for (double x : v) d.push_back(std::fabs(x - m));
    return median(d);
}

double us(std::uint64_t ns) {
    return static_cast<double>(ns) / 1000.0;
}

json summarize(std::vector<std::uint64_t> rtt_ns, std::uint64_t sent) {
    std::sort(rtt_ns.begin(), rtt_ns.end());
    json j;
    j["sent"] = sent;
    j["answered"] = rtt_ns.size();
    j["lost"] = sent - rtt_ns.size();
    j["p50_us"] = us(pct(rtt_ns, 50));
    j["p99_us"] = us(pct(rtt_ns, 99));
    j["p99_9_us"] = us(pct(rtt_ns, 99.9));
    j["p99_99_us"] = us(pct(rtt_ns, 99.99));
    j["max_us"] = us(rtt_ns.empty() ? 0 : rtt_ns.back());
    return j;
}

// ---- the prober ----

class Prober {
  public:
    static ha::Result<Prober> create(const Options& o, const ha::Key& key) {
        auto ip = ha::bench::parse_ip4("--target", o.target);
        if (!ip) return ha::unexpected(ip.error());
        Prober p(key);
        p.sock_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!p.sock_) return ha::last_errno("socket");
        int prio = 6;  // as the agent's heartbeat socket
        ::setsockopt(p.sock_.get(), SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(o.port);
        sin.sin_addr = *ip;
        // Connected: only datagrams from the responder's address and port are delivered.
        if (::connect(p.sock_.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0)
            return ha::last_errno("connect " + o.target);
        ha::bpf::NodeState ns;
        ns.station = HA_STATION_SECONDARY;
        ns.ha_enabled = true;
        ns.healthy = true;
        ns.proto_version = 1;
        ns.model = "bench";
        p.self_ = *ha::bpf::to_wire(ns);
        // Grows between invocations of one benchmark run, so the responder's replay window
        // (seq > last accepted) accepts every new prober.
        timespec rt{};
        ::clock_gettime(CLOCK_REALTIME, &rt);
        p.epoch_ = static_cast<std::uint32_t>((static_cast<std::uint64_t>(rt.tv_sec) * 1000 +
                                               static_cast<std::uint64_t>(rt.tv_nsec) / 1'000'000) &
                                              0xffffffffULL);
        return p;
    }

    // Sends request number `counter`; returns its send stamp, or nullopt if it did not leave.
    std::optional<std::uint64_t> send(std::uint32_t counter) {
        const std::uint64_t t = mono_ns();
        auto bytes = ha::bpf::build_request(self_, key_, ha::bpf::make_seq(epoch_, counter), t);
        if (::send(sock_.get(), bytes.data(), bytes.size(), MSG_DONTWAIT) !=
            static_cast<ssize_t>(bytes.size())) {
            ++send_errors_;
            return std::nullopt;
        }
        return t;
    }

    // Sleeps until `deadline_ns` or until a datagram is readable.
    void wait(std::uint64_t deadline_ns) {
        const std::uint64_t now = mono_ns();
        const std::uint64_t d = deadline_ns > now ? deadline_ns - now : 0;
        timespec ts{static_cast<time_t>(d / 1'000'000'000ULL),
                    static_cast<long>(d % 1'000'000'000ULL)};
        pollfd pfd{sock_.get(), POLLIN, 0};
        ::ppoll(&pfd, 1, &ts, nullptr);
    }

    // Reads every queued datagram; calls on_reply(counter, recv_ns) for each valid reply of ours.
    template <typename F>
    void drain(F&& on_reply) {
        for (;;) {
            const ssize_t n = ::recv(sock_.get(), buf_.data(), buf_.size(), MSG_DONTWAIT);
            if (n < 0) return;
            const std::uint64_t t = mono_ns();
            auto m = ha::bpf::parse_message(
                std::span<const std::uint8_t>(buf_.data(), static_cast<std::size_t>(n)), key_);
            if (!m || m->type != ha::bpf::MsgType::Reply || (m->seq >> 32) != epoch_) {
                ++bad_;
                continue;
            }
            on_reply(static_cast<std::uint32_t>(m->seq & 0xffffffffULL), t);
        }
    }

    [[nodiscard]] std::uint64_t bad() const { return bad_; }
    [[nodiscard]] std::uint64_t send_errors() const { return send_errors_; }
    [[nodiscard]] std::uint32_t epoch() const { return epoch_; }

  private:
    explicit Prober(const ha::Key& k) : key_(k) {}
    ha::Key key_;
    ha::UniqueFd sock_;
    ha_node_state self_{};
    std::uint32_t epoch_ = 0;
    std::uint64_t bad_ = 0, send_errors_ = 0;
    std::array<std::uint8_t, 512> buf_{};
};

constexpr std::uint64_t kStragglerWaitNs = 100'000'000;  // after a run's last send

// One run of `count` probes starting at request number `first`; returns the RTTs of the answered.
std::vector<std::uint64_t> rtt_run(Prober& p, std::uint32_t first, std::uint64_t count,
                                   std::uint64_t interval_ns, std::uint64_t& sent) {
    std::vector<std::uint64_t> sent_at(count, 0), rtt;
    rtt.reserve(count);
    std::vector<bool> got(count, false);
    auto on_reply = [&](std::uint32_t c, std::uint64_t t) {
        if (c < first || c - first >= count) return;  // a straggler from an earlier run
        const std::uint32_t i = c - first;
        if (got[i] || sent_at[i] == 0) return;
        got[i] = true;
        rtt.push_back(t - sent_at[i]);
    };
    std::uint64_t next = mono_ns();
    for (std::uint64_t i = 0; i < count; ++i) {
        while (mono_ns() < next) {
            p.wait(next);
            p.drain(on_reply);
        }
        if (auto t = p.send(first + static_cast<std::uint32_t>(i))) {
            sent_at[i] = *t;
            ++sent;
        }
        p.drain(on_reply);
        // Fixed cadence; after a stall, no burst to catch up.
        next += interval_ns;
        if (const std::uint64_t now = mono_ns(); next <= now) next = now + interval_ns;
    }
    const std::uint64_t end = mono_ns() + kStragglerWaitNs;
    while (rtt.size() < sent && mono_ns() < end) {
        p.wait(end);
        p.drain(on_reply);
    }
    return rtt;
}

json rtt_mode(const Options& o, Prober& p) {
    const std::uint64_t interval_ns = o.interval_us * 1000;
    std::uint32_t counter = 1;
    if (o.warmup > 0) {
        std::uint64_t s = 0;
        (void)rtt_run(p, counter, o.warmup, interval_ns, s);
        counter += static_cast<std::uint32_t>(o.warmup);
    }
    json runs = json::array();
    std::vector<std::uint64_t> pooled;
    std::uint64_t pooled_sent = 0;
    std::vector<double> p50, p99, p999, mx;
    for (std::uint64_t r = 0; r < o.runs; ++r) {
        std::uint64_t sent = 0;
        auto rtt = rtt_run(p, counter, o.count, interval_ns, sent);
        counter += static_cast<std::uint32_t>(o.count);
        json j = summarize(rtt, sent);
        p50.push_back(j["p50_us"]);
        p99.push_back(j["p99_us"]);
        p999.push_back(j["p99_9_us"]);
        mx.push_back(j["max_us"]);
        runs.push_back(j);
        pooled.insert(pooled.end(), rtt.begin(), rtt.end());
        pooled_sent += sent;
    }
    json out;
    out["runs"] = runs;
    out["pooled"] = summarize(pooled, pooled_sent);
    auto mm = [](const std::vector<double>& v) {
        return json{{"median", median(v)}, {"mad", mad(v)}};
    };
    out["across_runs_us"] = {
        {"p50", mm(p50)}, {"p99", mm(p99)}, {"p99_9", mm(p999)}, {"max", mm(mx)}};
    return out;
}

json loss_mode(const Options& o, Prober& p) {
    const std::uint64_t interval_ns = o.interval_us * 1000;
    const std::uint64_t timeout_ns = o.timeout_us * 1000;
    const auto timeout =
        std::chrono::duration_cast<ha::Duration>(std::chrono::nanoseconds(timeout_ns));
    // As the agent: a pause in our own sending longer than half the timeout restarts the watch.
    ha::core::Liveness live(timeout);
    std::vector<std::uint64_t> sent_at;  // index = counter - 1
    sent_at.reserve(o.loss_seconds * 1'000'000'000ULL / interval_ns + 16);
    std::vector<std::uint64_t> rtt;
    rtt.reserve(sent_at.capacity());
    std::uint64_t last_reply = 0, sent = 0;
    bool wall_alive = false;
    std::uint64_t wall_losses = 0, ev_losses = 0, max_wake_gap = 0, stalls_over_timeout = 0;
    json wall_events = json::array(), ev_events = json::array();
    constexpr std::size_t kMaxEvents = 200;

    const std::uint64_t start = mono_ns();
    const std::uint64_t end = start + o.loss_seconds * 1'000'000'000ULL;
    std::vector<bool> got;
    got.reserve(sent_at.capacity());
    auto on_reply = [&](std::uint32_t c, std::uint64_t t) {
        if (c == 0 || c > sent_at.size() || got[c - 1] || sent_at[c - 1] == 0) return;
        got[c - 1] = true;
        rtt.push_back(t - sent_at[c - 1]);
        (void)live.replied(ha::bpf::make_seq(p.epoch(), c), ha::from_mono_ns(t));
        last_reply = t;
    };
    std::uint64_t next = start, prev_wake = start;
    std::uint32_t counter = 0;
    while (true) {
        std::uint64_t now = mono_ns();
        if (now >= end) break;
        const std::uint64_t gap = now - prev_wake;
        prev_wake = now;
        max_wake_gap = std::max(max_wake_gap, gap);
        if (gap > timeout_ns) ++stalls_over_timeout;
        // Wall clock: the timer fires before the queued replies are looked at.
        if (wall_alive && now - last_reply > timeout_ns) {
            wall_alive = false;
            ++wall_losses;
            if (wall_events.size() < kMaxEvents)
                wall_events.push_back({{"at_s", us(now - start) / 1e6},
                                       {"since_reply_us", us(now - last_reply)},
                                       {"wake_gap_us", us(gap)}});
        }
        p.drain(on_reply);
        if (!wall_alive && last_reply != 0 && mono_ns() - last_reply <= timeout_ns)
            wall_alive = true;
        now = mono_ns();
        if (now >= next) {
            if (auto t = p.send(++counter)) {
                sent_at.push_back(*t);
                got.push_back(false);
                live.sent(ha::bpf::make_seq(p.epoch(), counter), ha::from_mono_ns(*t));
                ++sent;
            } else {
                sent_at.push_back(0);
                got.push_back(false);
            }
            next += interval_ns;
            if (next <= now) next = now + interval_ns;
        }
        // Evidence: after the queue is drained, as liveness.hpp requires.
        if (auto changed = live.update(ha::from_mono_ns(mono_ns())); changed && !*changed) {
            ++ev_losses;
            if (ev_events.size() < kMaxEvents)
                ev_events.push_back({{"at_s", us(now - start) / 1e6}, {"wake_gap_us", us(gap)}});
        }
        std::uint64_t deadline = next;
        if (auto c = live.next_check(ha::from_mono_ns(mono_ns())))
            deadline = std::min(deadline, ha::to_mono_ns(*c));
        p.wait(std::min(deadline, end));
    }
    json out;
    out["seconds"] = o.loss_seconds;
    out["timeout_us"] = o.timeout_us;
    out["rtt"] = summarize(rtt, sent);
    out["false_losses_wall_clock"] = wall_losses;
    out["false_losses_evidence"] = ev_losses;
    out["prober_max_wake_gap_us"] = us(max_wake_gap);
    out["prober_stalls_over_timeout"] = stalls_over_timeout;
    out["wall_clock_events"] = wall_events;
    out["evidence_events"] = ev_events;
    return out;
}

void print_table(const Options& o, const json& env, const json& res) {
    std::printf("\n== %s ==  kernel %s | %s | %lld cores | governor %s | prober %s on cpu %d\n",
                o.label.c_str(), env["kernel"].get<std::string>().c_str(),
                env["cpu_model"].get<std::string>().c_str(), env["cores"].get<long long>(),
                env["governor"].get<std::string>().c_str(),
                env["prober_sched"].get<std::string>().c_str(), o.cpu);
    auto row = [](const char* name, const json& j) {
        std::printf("%-10s %9llu %6llu %9.1f %9.1f %9.1f %9.1f %10.1f\n", name,
                    j["sent"].get<unsigned long long>(), j["lost"].get<unsigned long long>(),
                    j["p50_us"].get<double>(), j["p99_us"].get<double>(),
                    j["p99_9_us"].get<double>(), j["p99_99_us"].get<double>(),
                    j["max_us"].get<double>());
    };
    std::printf("%-10s %9s %6s %9s %9s %9s %9s %10s   (RTT, us)\n", "run", "probes", "lost", "p50",
                "p99", "p99.9", "p99.99", "max");
    if (res.contains("runs")) {
        int i = 1;
        for (const auto& r : res["runs"]) row(fmt::format("run {}", i++).c_str(), r);
        row("pooled", res["pooled"]);
        const auto& a = res["across_runs_us"];
        std::printf(
            "across runs, median (MAD): p50 %.1f (%.1f)  p99 %.1f (%.1f)  p99.9 %.1f (%.1f)  max "
            "%.1f (%.1f)\n",
            a["p50"]["median"].get<double>(), a["p50"]["mad"].get<double>(),
            a["p99"]["median"].get<double>(), a["p99"]["mad"].get<double>(),
            a["p99_9"]["median"].get<double>(), a["p99_9"]["mad"].get<double>(),
            a["max"]["median"].get<double>(), a["max"]["mad"].get<double>());
    } else {
        row("loss run", res["rtt"]);
        std::printf(
            "timeout %llu us over %llu s: false losses wall-clock %llu, evidence %llu; "
            "prober max wake gap %.1f us, wakes late by > timeout %llu\n",
            res["timeout_us"].get<unsigned long long>(), res["seconds"].get<unsigned long long>(),
            res["false_losses_wall_clock"].get<unsigned long long>(),
            res["false_losses_evidence"].get<unsigned long long>(),
            res["prober_max_wake_gap_us"].get<double>(),
            res["prober_stalls_over_timeout"].get<unsigned long long>());
    }
}

}  // namespace

int main(int argc, char** argv) {
    auto o = parse(argc, argv);
    if (!o) {
        std::fprintf(stderr, "hb_rtt: %s\n", o.error().message().c_str());
        usage();
        return 2;
    }
    auto key = ha::load_key_file(o->key_file);
    if (!key) {
        std::fprintf(stderr, "hb_rtt: %s\n", key.error().message().c_str());
        return 2;
    }
    // XDP_TX replies on a veth are only delivered into an XDP-enabled receiver: hold a pass
    // program on our end for the run (owned: detached when we exit).
    std::optional<ha::bpf::PassProgram> pass;
    if (!o->xdp_pass_if.empty()) {
        const unsigned idx = if_nametoindex(o->xdp_pass_if.c_str());
        if (idx == 0) {
            std::fprintf(stderr, "hb_rtt: --xdp-pass: no interface '%s'\n", o->xdp_pass_if.c_str());
            return 2;
        }
        auto pp = ha::bpf::PassProgram::attach(static_cast<int>(idx));
        if (!pp) {
            std::fprintf(stderr, "hb_rtt: %s\n", pp.error().message().c_str());
            return 1;
        }
        pass.emplace(std::move(*pp));
    }
    if (o->cpu >= 0) {
        if (auto s = ha::bench::pin_to_cpu(o->cpu); !s) {
            std::fprintf(stderr, "hb_rtt: %s\n", s.error().message().c_str());
            return 1;
        }
    }
    if (auto s = ha::bench::make_realtime(o->rt_prio); !s) {
        std::fprintf(stderr, "hb_rtt: %s\n", s.error().message().c_str());
        return 1;
    }
    auto p = Prober::create(*o, *key);
    if (!p) {
        std::fprintf(stderr, "hb_rtt: %s\n", p.error().message().c_str());
        return 1;
    }
    const json env = environment(*o);
    const auto steal0 = steal_ticks();
    json res = o->loss_seconds > 0 ? loss_mode(*o, *p) : rtt_mode(*o, *p);
    const auto steal1 = steal_ticks();
    const std::uint64_t total = steal1.second - steal0.second;
    res["host_steal_pct"] = total ? 100.0 * static_cast<double>(steal1.first - steal0.first) /
                                        static_cast<double>(total)
                                  : 0.0;
    res["bad_datagrams"] = p->bad();
    res["send_errors"] = p->send_errors();
    print_table(*o, env, res);
    std::printf("host steal during the run: %.2f %% of CPU time\n",
                res["host_steal_pct"].get<double>());
    if (!o->json_path.empty()) {
        json doc{{"label", o->label}, {"environment", env}, {"result", res}};
        const std::string tmp = o->json_path + ".tmp";
        {
            std::ofstream f(tmp);
            f << doc.dump(2) << '\n';
            if (!f) {
                std::fprintf(stderr, "hb_rtt: cannot write %s\n", tmp.c_str());
                return 1;
            }
        }
        if (std::rename(tmp.c_str(), o->json_path.c_str()) != 0) {
            std::perror("hb_rtt: rename");
            return 1;
        }
    }
    // A run in which nothing came back measured nothing: fail so the driver notices.
    const json& base = res.contains("pooled") ? res["pooled"] : res["rtt"];
    return base["answered"].get<std::uint64_t>() == 0 ? 1 : 0;
}
