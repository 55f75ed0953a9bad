// Sync benchmark: replication lag (CDR appends, voicemail files, SQLite commits) and full-sync
// throughput between two engines in two network namespaces joined by a veth (198.18.7.0/24),
// beside the two limits measured in the same run (iperf3 over the same veth, a local cp of the
// same tree into the same filesystem). Needs root. Prints a table and writes JSON (--out).
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>

#include <poll.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "netns_util.hpp"
#include "sync/engine.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ha::sync::Engine;
using ha::sync::Mode;
using ha::sync::Role;
using ha::sync::SyncConfig;

namespace {

struct Options {
    int seconds = 5;
    int runs = 3;
    std::uint64_t tree_mib = 1024;
    bool full = true;
    bool lsyncd = true;
    bool settle = true;
    std::string workloads = "cdr,voicemail,sqlite";
    std::string out = "sync_bench.json";
    std::string base = "/var/tmp";
};

struct Dist {
    double p50 = 0, p99 = 0, p999 = 0, max = 0;
    std::size_t n = 0;
};
Dist dist(std::vector<double> v) {
    Dist d;
    d.n = v.size();
    if (v.empty()) return d;
    std::sort(v.begin(), v.end());
    auto q = [&](double p) {
        return v[std::min(v.size() - 1,
                          static_cast<std::size_t>(p * static_cast<double>(v.size())))];
    };
    d.p50 = q(0.50);
    d.p99 = q(0.99);
    d.p999 = q(0.999);
    d.max = v.back();
    return d;
}
double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
double mad(const std::vector<double>& v) {
    const double m = median(v);
    std::vector<double> dev;
    dev.reserve(v.size());
    for (double x : v) dev.push_back(std::abs(x - m));
    return median(dev);
}
double now_ms() {
    return static_cast<double>(ha::mono_ns()) / 1e6;
}

std::string read_first_line(const std::string& path) {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);
    return line;
}
std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.starts_with("model name")) return line.substr(line.find(':') + 2);
    }
    return "?";
}
// This process's engine threads (both engines): the "ha-sync" workers, their "ha-sync-fs"
// committers, and any io_uring worker ("iou-wrk-*") they started.
std::set<std::string> sync_threads() {
    std::set<std::string> tids;
    for (const auto& e : fs::directory_iterator("/proc/self/task")) {
        const auto comm = read_first_line(e.path().string() + "/comm");
        if (comm.starts_with("ha-sync") || comm.starts_with("iou-wrk"))
            tids.insert(e.path().filename().string());
    }
    return tids;
}
// CPU seconds of the engine threads; with `only`, of those threads, without, of all of them.
double sync_threads_cpu_s(const std::set<std::string>* only = nullptr) {
    double total = 0;
    for (const auto& tid : sync_threads()) {
        if (only != nullptr && !only->contains(tid)) continue;
        std::ifstream f("/proc/self/task/" + tid + "/stat");
        std::string stat((std::istreambuf_iterator<char>(f)), {});
        const auto rp = stat.rfind(')');
        std::istringstream in(stat.substr(rp + 2));
        std::string tok;
        std::vector<std::string> fields;
        while (in >> tok) fields.push_back(tok);
        if (fields.size() > 13)
            total += static_cast<double>(std::stoull(fields[11]) + std::stoull(fields[12]));
    }
    return total / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// What a workload needs from a mirror under test: where the active writes, where the standby's
// copy appears, how to wait until the mirror is idle, and the CPU seconds its machinery used (all
// of it, and the active's share).
struct Mirror {
    std::function<std::string(const std::string&)> A, S;
    std::function<bool()> settle;
    std::function<double()> cpu_s;
    std::function<double()> active_cpu_s;
};

// utime+stime (+ reaped children's) of one process, in seconds; 0 when it is gone.
double proc_cpu_s(pid_t pid, bool with_children) {
    std::ifstream f(fmt::format("/proc/{}/stat", pid));
    std::string stat((std::istreambuf_iterator<char>(f)), {});
    const auto rp = stat.rfind(')');
    if (rp == std::string::npos) return 0;
    std::istringstream in(stat.substr(rp + 2));
    std::string tok;
    std::vector<std::string> fields;
    while (in >> tok) fields.push_back(tok);
    if (fields.size() < 15) return 0;
    double t = static_cast<double>(std::stoull(fields[11]) + std::stoull(fields[12]));
    if (with_children) t += static_cast<double>(std::stoull(fields[13]) + std::stoull(fields[14]));
    return t / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A process this bench started (argv run through `ip netns exec <ns>`), ended by its PID.
class Proc {
  public:
    Proc(const std::string& netns, const std::vector<std::string>& argv, const std::string& log) {
        std::vector<std::string> full = {"ip", "netns", "exec", netns};
        full.insert(full.end(), argv.begin(), argv.end());
        std::vector<char*> args;
        args.reserve(full.size() + 1);
        for (auto& a : full) args.push_back(a.data());
        args.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        if (::posix_spawnp(&pid_, "ip", &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&fa);
    }
    ~Proc() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        for (int i = 0; i < 200; ++i) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
            std::this_thread::sleep_for(10ms);
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    Proc(const Proc&) = delete;
    Proc& operator=(const Proc&) = delete;
    [[nodiscard]] pid_t pid() const { return pid_; }
    [[nodiscard]] bool alive() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

  private:
    pid_t pid_ = -1;
};

constexpr std::uint16_t kRsyncPort = 8730;

// An rsync daemon in the standby's namespace writing into `dir` (module "stby"), TCP_NODELAY.
std::unique_ptr<Proc> start_rsyncd(const std::string& netns, const std::string& base,
                                   const std::string& dir) {
    const std::string conf = base + "/rsyncd.conf";
    std::ofstream(conf) << "use chroot = no\nuid = root\ngid = root\n"
                           "socket options = TCP_NODELAY\n[stby]\n    path = "
                        << dir << "\n    read only = false\n";
    auto p = std::make_unique<Proc>(
        netns,
        std::vector<std::string>{"rsync", "--daemon", "--no-detach", "--config=" + conf,
                                 "--address=198.18.7.2", fmt::format("--port={}", kRsyncPort)},
        base + "/rsyncd.log");
    // Ready when it accepts connections.
    for (int i = 0; i < 200 && p->alive(); ++i) {
        if (ha::sync::test::sh(fmt::format("ip netns exec {} rsync --contimeout=1 "
                                           "rsync://198.18.7.2:{}/",
                                           netns, kRsyncPort)) == 0)
            return p;
        std::this_thread::sleep_for(20ms);
    }
    return nullptr;
}

class Pair {
  public:
    Pair(const Options& o, bool tmpfs_standby, std::uint64_t tmpfs_mib) {
        char tmpl[256];
        std::snprintf(tmpl, sizeof tmpl, "%s/ha-sync-bench-XXXXXX", o.base.c_str());
        base_ = ::mkdtemp(tmpl);
        act_ = base_ + "/box";
        stby_ = base_ + "/stby";
        fs::create_directories(act_);
        fs::create_directories(stby_);
        if (tmpfs_standby) {
            const auto opts = fmt::format("size={}m", tmpfs_mib);
            tmpfs_ = ::mount("tmpfs", stby_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
        }
        ok_ = net_.ok();
    }
    ~Pair() {
        active_.reset();
        standby_.reset();
        if (tmpfs_) ::umount2(stby_.c_str(), MNT_DETACH);
        std::error_code ec;
        fs::remove_all(base_, ec);
    }
    SyncConfig config(const char* state, const char* peer, const char* listen) {
        SyncConfig c;
        c.roots = {{act_ + "/vm", Mode::File},
                   {act_ + "/cdr", Mode::Append},
                   {act_ + "/db", Mode::Sqlite}};
        c.key = ha::Key{0xbe0c4, 0x5eed};
        c.peer = *ha::IpAddr::parse(peer);
        c.listen = *ha::IpAddr::parse(listen);
        c.state_dir = base_ + "/" + state;
        c.full_backup_minute = -1;
        return c;
    }
    bool start_active() {
        const auto before = sync_threads();
        const bool ok = ha::sync::test::in_namespaces(
                            net_.a(), "", "",
                            [&] {
                                auto e =
                                    Engine::create(config("state-a", "198.18.7.2", "198.18.7.1"));
                                if (e) {
                                    active_ = std::move(*e);
                                    active_->set_role(Role::Active);
                                }
                            }) == "" &&
                        active_ != nullptr;
        for (const auto& t : sync_threads()) {
            if (!before.contains(t)) active_tids_.insert(t);
        }
        return ok;
    }
    bool start_standby() {
        return ha::sync::test::in_namespaces(
                   net_.b(), stby_, act_,
                   [&] {
                       auto e = Engine::create(config("state-b", "198.18.7.1", "198.18.7.2"));
                       if (e) {
                           standby_ = std::move(*e);
                           standby_->set_role(Role::Standby);
                       }
                   }) == "" &&
               standby_ != nullptr;
    }
    bool wait_drained(std::chrono::seconds limit) {
        // Only a status published after this call covers the changes made before it.
        const std::uint64_t since = ha::mono_ns();
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            active_->drain_events([](const auto&) {});
            if (standby_) standby_->drain_events([](const auto&) {});
            const auto s = active_->status();
            if (s.as_of_ns > since && s.drained()) return true;
            std::this_thread::sleep_for(1ms);
        }
        return false;
    }
    Mirror engines() {
        return Mirror{[this](const std::string& r) { return A(r); },
                      [this](const std::string& r) { return S(r); },
                      [this] { return wait_drained(10s); }, [] { return sync_threads_cpu_s(); },
                      [this] { return sync_threads_cpu_s(&active_tids_); }};
    }
    const std::string& base() const { return base_; }
    const std::string& act_dir() const { return act_; }
    const std::string& stby_dir() const { return stby_; }
    std::string A(const std::string& r) const { return act_ + "/" + r; }
    std::string S(const std::string& r) const { return stby_ + "/" + r; }
    [[nodiscard]] bool ok() const { return ok_ && !base_.empty(); }
    ha::sync::test::NetnsPair& net() { return net_; }
    std::unique_ptr<Engine> active_, standby_;

  private:
    std::set<std::string> active_tids_;
    ha::sync::test::NetnsPair net_;
    std::string base_, act_, stby_;
    bool tmpfs_ = false;
    bool ok_ = false;
};

// The comparison: lsyncd (default.rsync, delay 0, inotify on close-write or modify) in the
// active's namespace pushing through rsync (TCP_NODELAY) to an rsync daemon in the standby's
// namespace, over the same veth. Both processes are ended by PID when this goes away.
class LsyncdMirror {
  public:
    explicit LsyncdMirror(Pair& p) : p_(p) {
        daemon_ = start_rsyncd(p.net().b(), p.base(), p.stby_dir());
        if (!daemon_) return;
        const std::string conf = p.base() + "/lsyncd.conf.lua";
        std::ofstream(conf) << fmt::format(
            "settings {{ nodaemon = true, insist = true, inotifyMode = \"CloseWrite or Modify\",\n"
            "  logfile = \"{0}/lsyncd.log\", statusFile = \"{0}/lsyncd.status\" }}\n"
            "sync {{ default.rsync, source = \"{1}/\", target = \"rsync://198.18.7.2:{2}/stby/\",\n"
            "  delay = 0, rsync = {{ archive = true, _extra = {{ \"--sockopts=TCP_NODELAY\" }} }} "
            "}}\n",
            p.base(), p.act_dir(), kRsyncPort);
        lsyncd_ = std::make_unique<Proc>(p.net().a(), std::vector<std::string>{"lsyncd", conf},
                                         p.base() + "/lsyncd.out");
    }
    ~LsyncdMirror() {
        lsyncd_.reset();  // before the daemon it pushes to
        daemon_.reset();
    }
    LsyncdMirror(const LsyncdMirror&) = delete;
    LsyncdMirror& operator=(const LsyncdMirror&) = delete;
    [[nodiscard]] bool ok() const { return daemon_ && lsyncd_ && lsyncd_->alive(); }
    // Idle = a marker written now has arrived (lsyncd runs one rsync at a time, in event order).
    bool settle() {
        const std::string name = fmt::format(".settle-{}", marker_++);
        { std::ofstream(p_.A(name)) << name; }
        for (int i = 0; i < 30000; ++i) {
            if (fs::exists(p_.S(name))) return true;
            std::this_thread::sleep_for(1ms);
        }
        return false;
    }
    double cpu_s() const {
        return proc_cpu_s(lsyncd_->pid(), true) + proc_cpu_s(daemon_->pid(), true);
    }
    Mirror mirror() {
        return Mirror{[this](const std::string& r) { return p_.A(r); },
                      [this](const std::string& r) { return p_.S(r); }, [this] { return settle(); },
                      [this] { return cpu_s(); },
                      [this] { return proc_cpu_s(lsyncd_->pid(), true); }};
    }

  private:
    Pair& p_;
    std::unique_ptr<Proc> daemon_, lsyncd_;
    int marker_ = 0;
};

// Waits for inotify events on `path` and calls on_event() for each batch until `done`.
void observe(const std::string& path, std::uint32_t mask, std::atomic<bool>& done,
             const std::function<void(const inotify_event*)>& on_event) {
    const int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    inotify_add_watch(fd, path.c_str(), mask);
    alignas(inotify_event) char buf[16384];
    while (!done) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        const ssize_t n = ::read(fd, buf, sizeof buf);
        for (ssize_t off = 0; off < n;) {
            const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
            on_event(ev);
            off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        }
    }
    ::close(fd);
}

struct LagResult {
    Dist lag;
    double cpu_pct = 0;         // both sides
    double active_cpu_pct = 0;  // the active's share of it
    std::size_t lost = 0;
    std::size_t bad = 0;  // observations of a copy that could not be read (torn, mixed)
};

LagResult bench_cdr(Mirror& m, int seconds) {
    const std::string rel = "cdr/bench.csv";
    fs::create_directories(m.A("cdr"));
    { std::ofstream(m.A(rel)) << "start\n"; }
    for (int i = 0; i < 20000 && !fs::exists(m.S(rel)); ++i) std::this_thread::sleep_for(1ms);
    m.settle();
    const int n = seconds * 1000;
    std::vector<double> t_write(static_cast<std::size_t>(n));
    std::vector<std::uint64_t> end_off(static_cast<std::size_t>(n));
    std::vector<double> lags;
    std::atomic<int> written{0};
    std::atomic<bool> done{false};
    std::size_t next = 0;
    std::thread obs([&] {
        // The directory, not the file: a mirror that replaces the file by a rename keeps being
        // seen.
        observe(m.S("cdr"), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO, done,
                [&](const inotify_event*) {
                    const double t = now_ms();
                    struct stat st {};
                    if (::stat(m.S(rel).c_str(), &st) != 0) return;
                    while (next < static_cast<std::size_t>(written.load()) &&
                           end_off[next] <= static_cast<std::uint64_t>(st.st_size)) {
                        lags.push_back(t - t_write[next]);
                        ++next;
                    }
                });
    });
    const double cpu0 = m.cpu_s();
    const double act0 = m.active_cpu_s();
    const auto t0 = std::chrono::steady_clock::now();
    const int fd = ::open(m.A(rel).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    std::uint64_t size = 6;
    for (int i = 0; i < n; ++i) {
        std::this_thread::sleep_until(t0 + std::chrono::microseconds(1000 * i));
        const auto line =
            fmt::format("\"{}\",\"1001\",\"1002\",\"ANSWERED\",\"{:08}\"\n", i, i * 7);
        end_off[static_cast<std::size_t>(i)] = size + line.size();
        t_write[static_cast<std::size_t>(i)] = now_ms();
        written = i + 1;
        if (::write(fd, line.data(), line.size()) < 0) break;
        size += line.size();
    }
    ::close(fd);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (next < static_cast<std::size_t>(n) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
    const double cpu1 = m.cpu_s();
    const double act1 = m.active_cpu_s();
    done = true;
    obs.join();
    LagResult r;
    r.lost = static_cast<std::size_t>(n) - lags.size();
    r.lag = dist(lags);
    r.cpu_pct = 100.0 * (cpu1 - cpu0) / wall;
    r.active_cpu_pct = 100.0 * (act1 - act0) / wall;
    return r;
}

LagResult bench_voicemail(Mirror& m, int seconds) {
    fs::create_directories(m.A("vm/bench"));
    fs::create_directories(m.S("vm/bench"));
    const int n = seconds * 10;
    std::vector<double> t_close(static_cast<std::size_t>(n), 0);
    std::vector<double> lags;
    std::mutex mu;
    std::atomic<bool> done{false};
    std::atomic<int> arrived{0};
    std::thread obs([&] {
        observe(m.S("vm/bench"), IN_MOVED_TO, done, [&](const inotify_event* ev) {
            const double t = now_ms();
            int i = -1;
            struct stat st {};
            // Only a whole copy counts as arrived (a mirror may copy a file still being written).
            if (std::sscanf(ev->name, "msg%d.wav", &i) == 1 && i >= 0 && i < n &&
                ::stat(m.S(fmt::format("vm/bench/msg{}.wav", i)).c_str(), &st) == 0 &&
                st.st_size == off_t{200} * 1024) {
                std::lock_guard lk(mu);
                if (t_close[static_cast<std::size_t>(i)] > 0)
                    lags.push_back(t - t_close[static_cast<std::size_t>(i)]);
                ++arrived;
            }
        });
    });
    const double cpu0 = m.cpu_s();
    const double act0 = m.active_cpu_s();
    std::string data(std::size_t{200} * 1024, 'w');
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
        std::this_thread::sleep_until(t0 + std::chrono::milliseconds(100 * i));
        data[0] = static_cast<char>('a' + i % 26);
        const int fd = ::open(m.A(fmt::format("vm/bench/msg{}.wav", i)).c_str(),
                              O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (::write(fd, data.data(), data.size()) < 0) break;
        {
            std::lock_guard lk(mu);
            t_close[static_cast<std::size_t>(i)] = now_ms();
        }
        ::close(fd);
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (arrived < n && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
    const double cpu1 = m.cpu_s();
    const double act1 = m.active_cpu_s();
    done = true;
    obs.join();
    LagResult r;
    r.lost = static_cast<std::size_t>(n) - lags.size();
    r.lag = dist(lags);
    r.cpu_pct = 100.0 * (cpu1 - cpu0) / wall;
    r.active_cpu_pct = 100.0 * (act1 - act0) / wall;
    return r;
}

LagResult bench_sqlite(Mirror& m, int seconds) {
    fs::create_directories(m.A("db"));
    fs::create_directories(m.S("db"));
    const std::string db_rel = "db/bench.db";
    sqlite3* w = nullptr;
    sqlite3_open(m.A(db_rel).c_str(), &w);
    // A mirror's reader may hold a lock for a moment (as the PBX would, wait for it).
    sqlite3_busy_timeout(w, 5000);
    sqlite3_exec(
        w, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);",
        nullptr, nullptr, nullptr);
    m.settle();
    const int n = seconds * 50;
    std::vector<double> t_commit(static_cast<std::size_t>(n) + 1, 0);
    std::vector<double> lags;
    std::atomic<int> committed{0};
    std::atomic<bool> done{false};
    int seen = 0;
    std::size_t bad = 0;
    std::thread obs([&] {
        // A copy renamed into place (rsync, or the engine's first copy), or a snapshot applied
        // to the replica in place: the engine sets the replica's mtime right after the commit
        // (an mtime-only utimensat is reported as IN_MODIFY, not IN_ATTRIB).
        observe(m.S("db"), IN_MOVED_TO | IN_MODIFY, done, [&](const inotify_event* ev) {
            // The database or its -wal: a file-level mirror carries commits in the -wal. Writes
            // to the replica's -wal are a commit in progress: not a moment to look.
            const std::string_view name = ev->name;
            if (!name.starts_with("bench.db")) return;
            if ((ev->mask & IN_MODIFY) != 0 && name != "bench.db") return;
            const double t = now_ms();
            sqlite3* r = nullptr;
            if (sqlite3_open_v2(m.S(db_rel).c_str(), &r, SQLITE_OPEN_READONLY, nullptr) ==
                SQLITE_OK) {
                sqlite3_busy_timeout(r, 2000);
                sqlite3_stmt* st = nullptr;
                if (sqlite3_prepare_v2(r, "SELECT coalesce(max(id),0) FROM t", -1, &st, nullptr) ==
                        SQLITE_OK &&
                    sqlite3_step(st) == SQLITE_ROW) {
                    const int max_id = sqlite3_column_int(st, 0);
                    const int upto = std::min(max_id, committed.load());
                    while (seen < upto) {
                        ++seen;
                        lags.push_back(t - t_commit[static_cast<std::size_t>(seen)]);
                    }
                } else {
                    ++bad;
                    std::fprintf(stderr, "replica unreadable: %s\n", sqlite3_errmsg(r));
                }
                sqlite3_finalize(st);
            } else {
                ++bad;
                std::fprintf(stderr, "replica open failed: %s\n", sqlite3_errmsg(r));
            }
            sqlite3_close(r);
        });
    });
    const double cpu0 = m.cpu_s();
    const double act0 = m.active_cpu_s();
    const auto t0 = std::chrono::steady_clock::now();
    const int base_id = 0;
    sqlite3_exec(w, "DELETE FROM t", nullptr, nullptr, nullptr);
    for (int i = 1; i <= n; ++i) {
        std::this_thread::sleep_until(t0 + std::chrono::milliseconds(20 * i));
        const auto sql = fmt::format("INSERT INTO t(id, v) VALUES({}, 'call {}')", base_id + i, i);
        // Stamped before the commit starts (so the replica can never be seen "before" it): the
        // lag includes the commit itself.
        t_commit[static_cast<std::size_t>(i)] = now_ms();
        committed = i;
        if (sqlite3_exec(w, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) break;
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (seen < n && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
    const double cpu1 = m.cpu_s();
    const double act1 = m.active_cpu_s();
    done = true;
    obs.join();
    sqlite3_close(w);
    LagResult r;
    r.lost = static_cast<std::size_t>(n) - lags.size();
    r.bad = bad;
    r.lag = dist(lags);
    r.cpu_pct = 100.0 * (cpu1 - cpu0) / wall;
    r.active_cpu_pct = 100.0 * (act1 - act0) / wall;
    return r;
}

struct FullResult {
    std::string target;
    double tree_mb = 0;
    double sync_MBps = 0;
    double local_copy_MBps = 0;
    double tcp_MBps = 0;
    double rsync_MBps = 0;
    double sync_cpu_s = 0;  // both engines' threads, CPU seconds
    bool ok = false;
    bool rsync_ok = false;
};

std::uint64_t make_tree(const std::string& dir, std::uint64_t total) {
    fs::create_directories(dir);
    const std::uint64_t small_total = total / 4;
    const int small_n = 10000;
    const std::uint64_t small = std::max<std::uint64_t>(1, small_total / small_n);
    std::string buf(1 << 20, 's');
    std::uint64_t written = 0;
    for (int i = 0; i < small_n; ++i) {
        if (i % 100 == 0) fs::create_directories(fmt::format("{}/d{}", dir, i / 100));
        const int fd = ::open(fmt::format("{}/d{}/f{}.bin", dir, i / 100, i).c_str(),
                              O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        buf[0] = static_cast<char>(i);
        written += static_cast<std::uint64_t>(std::max<ssize_t>(0, ::write(fd, buf.data(), small)));
        ::close(fd);
    }
    const std::uint64_t large = (total - written) / 4;
    for (int i = 0; i < 4; ++i) {
        const int fd = ::open(fmt::format("{}/large{}.wav", dir, i).c_str(),
                              O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        for (std::uint64_t left = large; left > 0;) {
            const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
            buf[0] = static_cast<char>(left >> 20);
            const ssize_t w = ::write(fd, buf.data(), n);
            if (w <= 0) break;
            left -= static_cast<std::uint64_t>(w);
            written += static_cast<std::uint64_t>(w);
        }
        ::close(fd);
    }
    return written;
}

double iperf_MBps(Pair& p) {
    const std::string srv =
        fmt::format("ip netns exec {} iperf3 -s -1 -B 198.18.7.2 >/dev/null 2>&1 &", p.net().b());
    ha::sync::test::sh(srv);
    std::this_thread::sleep_for(300ms);  // let the one-shot server bind
    const std::string cli =
        fmt::format("ip netns exec {} iperf3 -c 198.18.7.2 -t 3 -J 2>/dev/null", p.net().a());
    FILE* f = ::popen(cli.c_str(), "r");
    if (f == nullptr) return 0;
    std::string out;
    char b[4096];
    while (std::fgets(b, sizeof b, f) != nullptr) out += b;
    ::pclose(f);
    const auto at = out.find("\"sum_received\"");
    if (at == std::string::npos) return 0;
    const auto bps = out.find("\"bits_per_second\"", at);
    if (bps == std::string::npos) return 0;
    return std::stod(out.substr(out.find(':', bps) + 1)) / 8 / 1e6;
}

// The three copies of a run (cp, engine, rsync) go to three directories, and nothing is deleted
// until the run is over: on an ext4 without a journal (this VM's disk) creating a file right after
// thousands were deleted scans past every inode deleted in the last 60-360 s ("recently_deleted"),
// which would slow down whichever copy comes after a delete.
FullResult bench_full(const Options& o, bool tmpfs) {
    FullResult r;
    r.target = tmpfs ? "tmpfs" : "disk";
    const std::uint64_t total = o.tree_mib << 20;
    if (!tmpfs && o.settle) {
        // Earlier deletes (lag workloads, a previous run) stop counting as "recent" once their
        // inode table blocks are clean and 60 s old.
        ::sync();
        std::this_thread::sleep_for(65s);
    }
    Pair p(o, tmpfs, o.tree_mib * 3 + 64);
    if (!p.ok()) return r;
    const auto bytes = make_tree(p.A("vm/tree"), total);
    r.tree_mb = static_cast<double>(bytes) / 1e6;
    ::sync();
    // Limit 1: a local copy of the same tree into the standby's filesystem, synced to disk.
    {
        const auto t0 = now_ms();
        ha::sync::test::sh(
            fmt::format("cp -a {} {} && sync -f {}", p.A("vm/tree"), p.S("copy"), p.S("copy")));
        r.local_copy_MBps = r.tree_mb / ((now_ms() - t0) / 1000);
        ::sync();
    }
    r.tcp_MBps = iperf_MBps(p);
    if (!p.start_active()) return r;
    const double cpu0 = sync_threads_cpu_s();
    const auto t0 = now_ms();
    if (!p.start_standby()) return r;
    r.ok = p.wait_drained(600s);
    ha::sync::test::sh(fmt::format("sync -f {}", p.S(".")));
    r.sync_MBps = r.tree_mb / ((now_ms() - t0) / 1000);
    r.sync_cpu_s = sync_threads_cpu_s() - cpu0;
    p.active_.reset();
    p.standby_.reset();
    if (!o.lsyncd) return r;
    // The comparison: rsync -a of the same tree (page cache as warm as for the engines) through
    // an rsync daemon in the standby's namespace, into the same filesystem, synced.
    fs::create_directories(p.S("rsync"));
    ::sync();
    const auto daemon = start_rsyncd(p.net().b(), p.base(), p.stby_dir());
    if (!daemon) return r;
    const auto t1 = now_ms();
    r.rsync_ok =
        ha::sync::test::sh(fmt::format("ip netns exec {} rsync -a --sockopts=TCP_NODELAY "
                                       "{}/ rsync://198.18.7.2:{}/stby/rsync/tree/ && "
                                       "sync -f {}",
                                       p.net().a(), p.A("vm/tree"), kRsyncPort, p.S("."))) == 0;
    r.rsync_MBps = r.tree_mb / ((now_ms() - t1) / 1000);
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto val = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
        if (a == "--seconds")
            o.seconds = std::stoi(val());
        else if (a == "--runs")
            o.runs = std::stoi(val());
        else if (a == "--tree-mib")
            o.tree_mib = std::stoull(val());
        else if (a == "--no-full")
            o.full = false;
        else if (a == "--no-lsyncd")
            o.lsyncd = false;
        else if (a == "--no-settle")
            o.settle = false;
        else if (a == "--workloads")
            o.workloads = val();
        else if (a == "--out")
            o.out = val();
        else if (a == "--base")
            o.base = val();
        else {
            std::fprintf(
                stderr,
                "usage: %s [--seconds N] [--runs N] [--tree-mib N] [--no-full] [--no-lsyncd] "
                "[--no-settle] [--workloads cdr,voicemail,sqlite] [--out F] [--base DIR]\n",
                argv[0]);
            return 2;
        }
    }
    if (::geteuid() != 0) {
        std::fprintf(stderr, "sync_bench needs root (network and mount namespaces)\n");
        return 2;
    }
    ha::log::set_level(ha::log::Level::Warn);
    utsname u{};
    ::uname(&u);
    const std::string governor =
        read_first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    std::printf("kernel %s, cpu %s, %ld cores, governor %s\n", u.release, cpu_model().c_str(),
                sysconf(_SC_NPROCESSORS_ONLN), governor.empty() ? "n/a" : governor.c_str());

    // mirror name -> workload -> one result per run
    std::map<std::string, std::map<std::string, std::vector<LagResult>>> lag_runs;
    auto run_workloads = [&](const std::string& mirror, Mirror m) {
        auto& w = lag_runs[mirror];
        auto want = [&](std::string_view name) {
            return o.workloads.find(name) != std::string::npos;
        };
        if (want("cdr")) w["cdr_append_1000_lines_per_s"].push_back(bench_cdr(m, o.seconds));
        if (want("voicemail"))
            w["voicemail_200KB_10_per_s"].push_back(bench_voicemail(m, o.seconds));
        if (want("sqlite")) w["sqlite_commit_50_per_s"].push_back(bench_sqlite(m, o.seconds));
    };
    for (int run = 0; run < o.runs; ++run) {
        {
            Pair p(o, false, 0);
            if (!p.ok() || !p.start_active() || !p.start_standby() || !p.wait_drained(20s)) {
                std::fprintf(stderr, "setup failed\n");
                return 1;
            }
            run_workloads("engine", p.engines());
        }
        if (o.lsyncd) {
            Pair p(o, false, 0);
            LsyncdMirror l(p);
            if (!p.ok() || !l.ok() || !l.settle()) {
                std::fprintf(stderr, "lsyncd setup failed (see %s/lsyncd.log)\n", p.base().c_str());
                return 1;
            }
            run_workloads("lsyncd_rsync", l.mirror());
        }
    }
    std::string json = "{\n  \"env\": {" +
                       fmt::format("\"kernel\": \"{}\", \"cpu\": \"{}\", \"cores\": {}", u.release,
                                   cpu_model(), sysconf(_SC_NPROCESSORS_ONLN)) +
                       "},\n  \"lag_ms\": {\n";
    std::printf("\n%-13s %-28s %12s %12s %10s %10s %7s %7s %5s %4s\n", "mirror", "workload (runs)",
                "p50 ms", "p99 ms", "p99.9 ms", "max ms", "cpu %", "act %", "lost", "bad");
    bool first_mirror = true;
    for (const auto& [mirror, workloads] : lag_runs) {
        json += fmt::format("{}    \"{}\": {{\n", first_mirror ? "" : ",\n", mirror);
        first_mirror = false;
        bool first = true;
        for (const auto& [name, runs] : workloads) {
            std::vector<double> p50, p99, p999, mx, cpu, act;
            std::size_t lost = 0, bad = 0;
            for (const auto& r : runs) {
                p50.push_back(r.lag.p50);
                p99.push_back(r.lag.p99);
                p999.push_back(r.lag.p999);
                mx.push_back(r.lag.max);
                cpu.push_back(r.cpu_pct);
                act.push_back(r.active_cpu_pct);
                lost += r.lost;
                bad += r.bad;
            }
            std::printf(
                "%-13s %-28s %7.3f±%-4.2f %7.3f±%-4.2f %10.3f %10.3f %7.1f %7.1f %5zu %4zu\n",
                mirror.c_str(), name.c_str(), median(p50), mad(p50), median(p99), mad(p99),
                median(p999), median(mx), median(cpu), median(act), lost, bad);
            json += fmt::format(
                "{}      \"{}\": {{\"p50_median\": {:.4f}, \"p50_mad\": {:.4f}, \"p99_median\": "
                "{:.4f}, \"p99_mad\": {:.4f}, \"p999_median\": {:.4f}, \"max_median\": {:.4f}, "
                "\"cpu_pct\": {:.2f}, \"active_cpu_pct\": {:.2f}, \"lost\": {}, \"unreadable\": "
                "{}, "
                "\"runs\": {}}}",
                first ? "" : ",\n", name, median(p50), mad(p50), median(p99), mad(p99),
                median(p999), median(mx), median(cpu), median(act), lost, bad, runs.size());
            first = false;
        }
        json += "\n    }";
    }
    json += "\n  },\n  \"full_sync\": [\n";
    if (o.full) {
        std::printf("\n%-8s %10s %12s %14s %12s %10s %12s %10s\n", "target", "tree MB", "sync MB/s",
                    "local cp MB/s", "tcp MB/s", "ratio", "rsync MB/s", "sync cpu s");
        bool first = true;
        for (bool tmpfs : {false, true}) {
            const auto r = bench_full(o, tmpfs);
            const double limit = std::min(r.local_copy_MBps, r.tcp_MBps);
            std::printf("%-8s %10.0f %12.1f %14.1f %12.1f %9.0f%% %12.1f %10.2f%s%s\n",
                        r.target.c_str(), r.tree_mb, r.sync_MBps, r.local_copy_MBps, r.tcp_MBps,
                        limit > 0 ? 100 * r.sync_MBps / limit : 0, r.rsync_MBps, r.sync_cpu_s,
                        r.ok ? "" : " (FAILED)", !o.lsyncd || r.rsync_ok ? "" : " (rsync FAILED)");
            json += fmt::format(
                "{}    {{\"target\": \"{}\", \"tree_mb\": {:.1f}, \"sync_MBps\": {:.1f}, "
                "\"local_copy_MBps\": {:.1f}, \"tcp_MBps\": {:.1f}, \"rsync_MBps\": {:.1f}, "
                "\"sync_cpu_s\": {:.2f}, \"ok\": {}, \"rsync_ok\": {}}}",
                first ? "" : ",\n", r.target, r.tree_mb, r.sync_MBps, r.local_copy_MBps, r.tcp_MBps,
                r.rsync_MBps, r.sync_cpu_s, r.ok, r.rsync_ok);
            first = false;
        }
    }
    json += "\n  ]\n}\n";
    std::ofstream(o.out) << json;
    std::printf("\nwrote %s\n", o.out.c_str());
    return 0;
}
