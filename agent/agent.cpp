#include "agent/agent.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <systemd/sd-daemon.h>

#include "agent/api/control_server.hpp"
#include "agent/api/store_queries.hpp"
#include "agent/heartbeat.hpp"
#include "agent/io/ring.hpp"
#include "agent/metrics_server.hpp"
#include "agent/service/probe.hpp"
#include "agent/service/spawn.hpp"
#include "agent/service/supervisor.hpp"
#include "agent/store/event_store.hpp"
#include "agent/store/guide_format.hpp"
#include "agent/store/term_store.hpp"
#include "agent/sync_bridge.hpp"
#include "common/atomic_file.hpp"
#include "common/duration.hpp"
#include "common/keyfile.hpp"
#include "common/log.hpp"
#include "netlink/address_manager.hpp"
#include "netlink/announcer.hpp"
#include "netlink/carrier.hpp"
#include "netlink/link_monitor.hpp"
#include "netlink/napi.hpp"

namespace ha {

using nlohmann::json;

namespace {

// "0-1,4" for the CPUs in `set`.
std::string cpu_list(const cpu_set_t& set) {
    std::string out;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (!CPU_ISSET(c, &set)) continue;
        int last = c;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set)) ++last;
        out += fmt::format("{}{}", out.empty() ? "" : ",",
                           last == c ? fmt::format("{}", c) : fmt::format("{}-{}", c, last));
        c = last;
    }
    return out.empty() ? "none" : out;
}

// A one-shot readiness poll that re-arms itself until told to stop.
class PollOp final : public io::Completion {
  public:
    PollOp(io::Ring& ring, std::function<void(int)> fn) : ring_(ring), fn_(std::move(fn)) {}
    void arm(int fd, unsigned mask = POLLIN) {
        fd_ = fd;
        mask_ = mask;
        ring_.poll(fd, mask, this);
        armed_ = true;
    }
    void completed(int res, unsigned) override {
        armed_ = false;
        if (res == -ECANCELED || fd_ < 0) return;
        const int fd = fd_;
        fn_(res);
        if (rearm_ && fd_ == fd) arm(fd_, mask_);
    }
    void disarm() { fd_ = -1; }
    bool rearm_ = true;
    [[nodiscard]] bool armed() const { return armed_; }

  private:
    io::Ring& ring_;
    std::function<void(int)> fn_;
    int fd_ = -1;
    unsigned mask_ = POLLIN;
    bool armed_ = false;
};

std::uint32_t next_epoch(const std::string& state_dir) {
    // Heartbeat sequence epochs must grow across starts (replay protection on the peer).
    const std::string path = state_dir + "/hb-epoch";
    std::uint64_t prev = 0;
    if (auto text = read_file(path, 64)) prev = std::strtoull(text->c_str(), nullptr, 10);
    std::uint64_t now_s = static_cast<std::uint64_t>(wall_ms() / 1000);
    std::uint64_t epoch = std::max(prev + 1, now_s) & 0xffffffffULL;
    if (auto s = write_file_atomic(path, std::to_string(epoch) + "\n", 0644); !s)
        log::warn("agent", "cannot persist heartbeat epoch: {}", s.error().message());
    return static_cast<std::uint32_t>(epoch);
}

std::string role_text(core::State s) {
    switch (s) {
        case core::State::Active:
        case core::State::SwitchingOut:
            return "Active";
        case core::State::Standby:
        case core::State::HandingOff:
            return "Standby";
        case core::State::Booting:
        case core::State::Probing:
            return "Negotiating";
        case core::State::Off:
            return "Off";
    }
    return "?";
}

}  // namespace

struct Agent::Impl {
    core::Config cfg;
    std::string config_path;
    BuildInfo build;
    io::Ring ring;
    store::EventStore events;
    store::TermStore terms;
    Key key;
    std::optional<core::Machine> machine;
    std::unique_ptr<Heartbeat> hb;
    std::optional<nl::AddressManager> addrs;
    std::optional<nl::LinkMonitor> links;
    std::optional<nl::Announcer> ann;
    std::optional<nl::CarrierProbe> carrier;
    TimePoint next_carrier_poll{};
    // With ha.prober_cpu: the heartbeat and LAN NICs' NAPI threads, kept on the prober's CPU.
    std::optional<nl::NapiControl> napi;
    TimePoint next_napi_check{};
    // Per NIC: where its NAPI threads run, or why not (a lasting problem is logged once).
    json napi_status = json::object();
    // The cluster IP is added with a lifetime the loop keeps renewing (see renew_cluster_ip()).
    std::uint32_t addr_lifetime_s = 0;
    TimePoint next_addr_renew{};
    int lan_ifindex = 0;
    int hb_ifindex = 0;
    MacAddr own_mac;
    service::Supervisor svc;
    std::optional<service::LivenessProbe> probe;
    std::optional<service::CoreDumpWatch> cores;
    std::unique_ptr<api::ControlServer> ctl;
    std::unique_ptr<SyncBridge> sync;
    std::unique_ptr<MetricsServer> metrics;
    TimePoint next_metrics{};
    std::uint64_t failovers = 0;
    UniqueFd sigfd;
    std::unique_ptr<PollOp> sig_op, ctl_op, nl_op, ann_op, svc_op, sync_op, probe_op, core_op;
    std::deque<core::Event> pending;
    std::optional<core::AcCommandResult> last_command_result;
    bool restart_pending = false;  // a start arrived while the PBX was still stopping
    bool stopping = false;
    TimePoint started;
    TimePoint role_since;
    std::optional<TimePoint> takeover_at;  // decision to promote
    std::optional<TimePoint> ip_held_at;   // address added + first GARP burst
    // A promotion's failover record waits for the PBX to answer (service_ready), 30 s at most.
    std::optional<store::FailoverRecord> pending_failover;
    TimePoint pending_failover_since{};
    std::uint64_t watchdog_usec = 0;
    TimePoint next_watchdog{};
    std::uint64_t lost_count = 0;
    bool carrier_lan = true, carrier_hb = true;

    Impl(core::Config c, std::string path, BuildInfo b, io::Ring r, store::EventStore ev)
        : cfg(std::move(c)),
          config_path(std::move(path)),
          build(std::move(b)),
          ring(std::move(r)),
          events(std::move(ev)),
          terms(cfg.state_dir),
          svc(cfg.service) {}

    void post(core::Event e) { pending.push_back(std::move(e)); }
    void dispatch(TimePoint now);
    void execute(const core::Actions& actions, TimePoint now);
    void run_actions(TimePoint now);
    void execute_one(const core::Action& act, TimePoint now);
    void start_persist(std::uint64_t term);
    void on_persist_done();
    std::deque<core::Action> action_queue;
    std::thread persist_thread;
    UniqueFd persist_efd;
    std::atomic<bool> persist_ok{false};
    std::string persist_error;
    std::unique_ptr<PollOp> persist_op;
    // Event records go to the page cache from the loop; this thread makes them durable.
    std::thread flusher;
    UniqueFd flusher_stop;
    // At most a second of events and HA log lines can be lost to a power cut; none is torn.
    void flush_logs() const {
        for (auto st : {store::Stream::Events, store::Stream::Backup, store::Stream::Failover}) {
            UniqueFd fd(::open(events.live_path(st).c_str(), O_RDONLY | O_CLOEXEC));
            if (fd) ::fdatasync(fd.get());
        }
    }
    void on_alert(const core::AcAlert& a);
    void on_log(const core::AcLog& l, TimePoint now);
    void finish_failover_record(TimePoint now);
    void persist_ha_disabled();
    void keep_standby_service(TimePoint now);
    TimePoint next_prestart{};
    json handle_request(const json& req);
    // Runs an operator command through the machine; its immediate answer, if it gave one.
    std::optional<core::AcCommandResult> run_command(core::Command c, TimePoint now);
    json status_json();
    std::string metrics_text();
    void on_link_event(const nl::MonitorEvent& ev);
    void on_carrier(int ifindex, bool up);
    void poll_carrier(TimePoint now);
    void place_napi(TimePoint now, bool at_once);
    void renew_cluster_ip(TimePoint now);
    void on_service_exit();
    int loop();
    void shutdown();
    void arm_service_poll();
};

Agent::Agent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Agent::~Agent() = default;

Result<std::unique_ptr<Agent>> Agent::create(core::Config cfg, std::string config_path,
                                             BuildInfo build) {
    if (auto s = make_dirs(cfg.state_dir, 0755); !s) return unexpected(s.error().wrap("state_dir"));
    auto ring = io::Ring::create(256);
    if (!ring) return unexpected(ring.error());
    store::StoreOptions so;
    so.dir = cfg.state_dir + "/log";
    so.sync = store::SyncPolicy::None;  // the flusher thread syncs; the loop never waits on disk
    auto ev = store::EventStore::open(so);
    if (!ev) return unexpected(ev.error().wrap("event store"));
    auto impl = std::make_unique<Impl>(std::move(cfg), std::move(config_path), std::move(build),
                                       std::move(*ring), std::move(*ev));
    Impl& a = *impl;
    a.started = Clock::now();
    a.role_since = a.started;

    if (a.cfg.enable) {
        auto key = load_key_file(a.cfg.key_file);
        if (!key) return unexpected(key.error());
        a.key = *key;
    }
    auto term = a.terms.load();
    if (!term) return unexpected(term.error());

    // Interfaces and the cluster IP.
    if (a.cfg.enable) {
        a.lan_ifindex = static_cast<int>(if_nametoindex(a.cfg.lan_interface.c_str()));
        if (a.lan_ifindex == 0)
            return fail("lan_interface " + a.cfg.lan_interface + " does not exist",
                        std::errc::no_such_device);
        a.hb_ifindex = static_cast<int>(if_nametoindex(a.cfg.heartbeat_interface.c_str()));
        if (a.hb_ifindex == 0)
            return fail("heartbeat_interface " + a.cfg.heartbeat_interface + " does not exist",
                        std::errc::no_such_device);
        if (a.cfg.prober_cpu >= 0) {
            cpu_set_t allowed;
            CPU_ZERO(&allowed);
            if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
                return last_errno("sched_getaffinity");
            if (!CPU_ISSET(a.cfg.prober_cpu, &allowed))
                return fail(fmt::format("ha.prober_cpu = {}: not a CPU this agent may run on "
                                        "(allowed: {})",
                                        a.cfg.prober_cpu, cpu_list(allowed)),
                            std::errc::invalid_argument);
            service::set_child_cpus(allowed);
        }
        auto am = nl::AddressManager::create();
        if (!am) return unexpected(am.error());
        a.addrs.emplace(std::move(*am));
        auto lm = nl::LinkMonitor::create();
        if (!lm) return unexpected(lm.error());
        a.links.emplace(std::move(*lm));
        auto an = nl::Announcer::create(a.lan_ifindex);
        if (!an) return unexpected(an.error().wrap("ARP announcer on " + a.cfg.lan_interface));
        a.own_mac = an->mac();
        a.ann.emplace(std::move(*an));
        auto cp = nl::CarrierProbe::create();
        if (!cp) return unexpected(cp.error());
        a.carrier.emplace(std::move(*cp));
        const auto lifetime =
            std::max<Duration>(std::chrono::seconds(3),
                               3 * std::chrono::duration_cast<Duration>(a.cfg.heartbeat_timeout));
        a.addr_lifetime_s =
            static_cast<std::uint32_t>(std::chrono::ceil<std::chrono::seconds>(lifetime).count());
        // A start is never serving yet: a cluster IP our kernel kept from a crashed run goes now.
        if (a.cfg.cluster_ip) {
            if (auto has = a.addrs->has(a.lan_ifindex, *a.cfg.cluster_ip); has && *has) {
                log::warn("agent", "removing cluster IP {} left from an earlier run",
                          a.cfg.cluster_ip->to_string());
                (void)a.addrs->remove(a.lan_ifindex, *a.cfg.cluster_ip);
            }
        }
    }
    // With HA off there is no announcer; status still shows this box's LAN MAC (the guide's
    // "MAC Address of Current UCM").
    if (!a.cfg.enable && !a.cfg.lan_interface.empty()) {
        if (auto cp = nl::CarrierProbe::create()) {
            if (auto m = cp->mac(a.cfg.lan_interface)) a.own_mac = *m;
        }
    }

    core::MachineConfig mc =
        core::MachineConfig::from(a.cfg, a.build.model, a.build.proto, a.build.version, a.own_mac);
    a.machine.emplace(mc, term->term, a.started);

    if (a.cfg.enable) {
        Heartbeat::Sink sink;
        Impl* self = &a;
        sink.seen = [self](core::Path p, const core::PeerStatus& s) {
            self->post(core::EvPeerSeen{p, s});
        };
        sink.lost = [self](core::Path p) {
            ++self->lost_count;
            self->post(core::EvPeerLost{p});
        };
        sink.control = [self](core::PeerMsg m, std::uint64_t t, std::uint64_t target) {
            self->post(core::EvPeerMessage{m, t, target});
        };
        sink.foreign_mac = [self]() { self->post(core::EvForeignPeer{MacAddr{}}); };
        auto hb =
            Heartbeat::create(a.cfg, a.key, next_epoch(a.cfg.state_dir), a.ring, std::move(sink));
        if (!hb) return unexpected(hb.error().wrap("heartbeat"));
        a.hb = std::move(*hb);
        a.hb->set_fence(false);

        auto sb = SyncBridge::create(a.cfg, a.key, a.events);
        if (!sb) return unexpected(sb.error().wrap("sync"));
        a.sync = std::move(*sb);
    }

    if (a.cfg.enable && a.cfg.service.probe != core::ProbeKind::None && a.cfg.cluster_ip) {
        auto pr = service::LivenessProbe::create(a.cfg.service, a.cfg.cluster_ip->addr);
        if (!pr) return unexpected(pr.error().wrap("PBX liveness probe"));
        a.probe.emplace(std::move(*pr));
    }
    if (!a.cfg.service.core_dump_dir.empty()) {
        if (auto s = make_dirs(a.cfg.service.core_dump_dir, 0755); !s) return unexpected(s.error());
        auto cw = service::CoreDumpWatch::create(a.cfg.service.core_dump_dir);
        if (!cw) return unexpected(cw.error());
        a.cores.emplace(std::move(*cw));
    }

    if (!a.cfg.metrics_listen.empty()) {
        auto ms = MetricsServer::start(a.cfg.metrics_listen);
        if (!ms) return unexpected(ms.error());
        a.metrics = std::move(*ms);
    }

    api::ServerOptions co;
    co.socket_path = a.cfg.control_socket;
    auto ctl = api::ControlServer::start(co);
    if (!ctl) return unexpected(ctl.error().wrap("control socket"));
    a.ctl = std::move(*ctl);

    a.persist_efd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    a.flusher_stop.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!a.persist_efd || !a.flusher_stop) return last_errno("eventfd");
    a.flusher = std::thread([p = &a] {
        for (;;) {
            pollfd pfd{p->flusher_stop.get(), POLLIN, 0};
            const int r = ::poll(&pfd, 1, 1000);
            p->flush_logs();  // a clean file costs next to nothing
            if (r > 0) return;
        }
    });

    // Signals arrive through a signalfd polled by the ring.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);  // main() blocked them before any thread started
    a.sigfd.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!a.sigfd) return last_errno("signalfd");
    signal(SIGPIPE, SIG_IGN);
    return std::unique_ptr<Agent>(new Agent(std::move(impl)));
}

void Agent::Impl::arm_service_poll() {
    if (svc.pidfd() < 0) return;
    if (!svc_op) {
        svc_op = std::make_unique<PollOp>(ring, [this](int) { on_service_exit(); });
        svc_op->rearm_ = false;
    }
    svc_op->arm(svc.pidfd());
}

void Agent::Impl::on_service_exit() {
    auto info = svc.reap();
    if (!info) {
        arm_service_poll();
        return;
    }
    if (info->expected) {
        post(core::EvService{core::ServiceState::Stopped, info->describe()});
        if (restart_pending) {
            restart_pending = false;
            if (auto s = svc.start(); !s) {
                post(core::EvService{core::ServiceState::Failed, s.error().message()});
            } else {
                arm_service_poll();
                post(core::EvService{core::ServiceState::Running, "restarted"});
            }
        }
        return;
    }
    // The PBX died on its own: a software fault (crash, core dump).
    post(core::EvService{core::ServiceState::Failed, "PBX " + info->describe()});
}

void Agent::Impl::on_carrier(int ifindex, bool up) {
    if (ifindex == lan_ifindex) {
        if (up == carrier_lan) return;
        carrier_lan = up;
        // Carrier loss on the LAN/WAN NIC is a hardware fault (the guide's Table 1).
        post(core::EvFault{core::FaultKind::Hardware, !up,
                           fmt::format("{} carrier {}", cfg.lan_interface, up ? "up" : "down")});
    } else if (ifindex == hb_ifindex) {
        if (up == carrier_hb) return;
        carrier_hb = up;
        post(core::EvFault{
            core::FaultKind::HeartbeatLink, !up,
            fmt::format("{} carrier {}", cfg.heartbeat_interface, up ? "up" : "down")});
        // No carrier: the direct path is gone now, not after a timeout. Promotion still needs
        // the LAN path lost too, and the ARP probe.
        if (!up) post(core::EvPeerLost{core::Path::Direct});
    }
}

// The carrier flags themselves, on the heartbeat cadence: netlink reports a carrier change
// through linkwatch, up to a second late (see netlink/carrier.hpp).
void Agent::Impl::poll_carrier(TimePoint now) {
    if (!carrier || now < next_carrier_poll) return;
    // Two ioctls per NIC: cheap enough to read often whatever the heartbeat timeout.
    next_carrier_poll =
        now + std::min<Duration>(std::chrono::duration_cast<Duration>(cfg.effective_interval()),
                                 std::chrono::milliseconds(10));
    for (const auto& [ifindex, name] : {std::pair{lan_ifindex, cfg.lan_interface},
                                        std::pair{hb_ifindex, cfg.heartbeat_interface}}) {
        if (auto up = carrier->running(name)) on_carrier(ifindex, *up);
    }
}

// The NICs' receive processing on the prober's CPU (see netlink/napi.hpp): checked every few
// seconds, and at once when a NIC comes up (a veth's NAPI instances and their threads are new
// after every down and up). One priority above the prober, as softirq was above every thread:
// a prober iteration takes a millisecond or more at times (a carrier ioctl waiting for the
// kernel's rtnl lock, time the VM did not run us), and replies must not wait behind it. A
// flood stays bounded by NAPI's budget and the kernel's real-time throttling, as in softirq.
void Agent::Impl::place_napi(TimePoint now, bool at_once) {
    if (!napi || (!at_once && now < next_napi_check)) return;
    next_napi_check = now + std::chrono::seconds(2);
    const int prio = std::min(99, cfg.prober_rt_priority + 1);
    for (const auto& [ifindex, name] : {std::pair{hb_ifindex, cfg.heartbeat_interface},
                                        std::pair{lan_ifindex, cfg.lan_interface}}) {
        if (ifindex == 0 || name.empty()) continue;
        auto r = napi->pin_threads(name, ifindex, cfg.prober_cpu, prio);
        if (!r) {
            const std::string now_status = "softirq: " + r.error().message();
            if (napi_status.value(name, "") != now_status)
                log::warn("agent", "{}; its receive processing stays in softirq",
                          r.error().message());
            napi_status[name] = now_status;
            continue;
        }
        napi_status[name] = fmt::format("threads on CPU {} at SCHED_FIFO {}", cfg.prober_cpu, prio);
        if (*r > 0)
            log::info("agent", "{}: NAPI threads on CPU {} at SCHED_FIFO {} ({} moved)", name,
                      cfg.prober_cpu, prio, *r);
    }
}

// The kernel's own dead man's switch for the cluster IP: the address carries a lifetime of a few
// heartbeat timeouts (3 s at least) that only a living agent renews. A box whose agent died or
// hangs drops the address by itself even where no BPF fence runs (the user-space responder), so
// the peer's ARP probe finds it free and the peer takes over.
void Agent::Impl::renew_cluster_ip(TimePoint now) {
    if (!addrs || !cfg.cluster_ip || now < next_addr_renew || !machine->serving()) return;
    next_addr_renew = now + std::chrono::seconds(addr_lifetime_s) / 3;
    if (auto s = addrs->renew(lan_ifindex, *cfg.cluster_ip, "fcmha", addr_lifetime_s); !s)
        log::warn("netlink", "renew cluster IP lifetime: {}", s.error().message());
}

void Agent::Impl::on_link_event(const nl::MonitorEvent& ev) {
    if (const auto* le = std::get_if<nl::LinkEvent>(&ev)) {
        const auto& l = le->link;
        on_carrier(l.ifindex, l.running() && !l.removed);
        if (l.running() && !l.removed && (l.ifindex == hb_ifindex || l.ifindex == lan_ifindex))
            place_napi(Clock::now(), true);
    } else if (const auto* ae = std::get_if<nl::AddrEvent>(&ev)) {
        if (ae->addr.removed && ae->addr.ifindex == lan_ifindex && cfg.cluster_ip &&
            ae->addr.prefix.addr == cfg.cluster_ip->addr && machine->serving()) {
            post(core::EvClusterIpRemoved{});
        }
    }
}

void Agent::Impl::on_alert(const core::AcAlert& a) {
    store::SystemEvent e;
    e.raised = a.raised;
    e.key = std::string(core::to_string(a.kind));
    if (a.kind == core::AlertKind::Heartbeat) {
        auto snap = machine->snapshot();
        std::string mac = cfg.peer_mac ? cfg.peer_mac->to_string()
                          : snap.peer  ? snap.peer->mac.to_string()
                                       : std::string("unknown");
        e.content =
            store::heartbeat_alert_content(mac, store::local_time_text(wall_ms()), a.raised);
    } else {
        e.content = a.content;
    }
    log::warn("event", "{} {}: {}", e.name, store::event_type_text(a.raised), e.content);
    if (auto s = events.append(e, wall_ms()); !s)
        log::error("event", "cannot store event: {}", s.error().message());
}

void Agent::Impl::on_log(const core::AcLog& l, TimePoint now) {
    if (l.kind == core::LogKind::Backup) {
        store::BackupRecord r;
        r.error = l.text;
        (void)events.append(r, wall_ms());
        return;
    }
    store::FailoverRecord r;
    r.from = role_text(l.from);
    r.to = role_text(l.to);
    r.cause = l.text;
    r.term = l.term;
    r.detection = l.detection;
    if (l.to == core::State::Active && takeover_at) r.takeover = now - *takeover_at;
    log::info("failover", "{} -> {}: {}", r.from, r.to, r.cause);
    if (l.to == core::State::Active) ++failovers;
    if (l.to == core::State::Active && svc.configured()) {
        pending_failover = r;  // completed when the PBX answers (finish_failover_record)
        pending_failover_since = takeover_at.value_or(now);
        return;
    }
    if (auto s = events.append(r, wall_ms()); !s)
        log::error("failover", "cannot store failover log: {}", s.error().message());
}

// HA was disabled (here, or on the active and replicated to us): the guide expects HA Off after
// the next reboot too, so the configuration file says so.
void Agent::Impl::persist_ha_disabled() {
    cfg.enable = false;
    auto text = read_file(config_path);
    if (!text) {
        log::error("agent", "HA disabled but {} unreadable: {}", config_path,
                   text.error().message());
        return;
    }
    auto updated = core::set_config_value(*text, "ha.enable", "false");
    if (!updated) {
        log::error("agent", "HA disabled but cannot update {}: {}", config_path,
                   updated.error().message());
        return;
    }
    if (auto s = write_file_atomic(config_path, *updated, 0644); !s)
        log::error("agent", "HA disabled but cannot write {}: {}", config_path,
                   s.error().message());
    else
        log::info("agent", "HA disabled: {} now has ha.enable = false", config_path);
}

// service.prestart_on_standby: the standby keeps its PBX running (it never holds the cluster IP,
// so it cannot answer for it), making a takeover a warm start. Restarts are at most one a second.
void Agent::Impl::keep_standby_service(TimePoint now) {
    if (!cfg.service.prestart_on_standby || !svc.configured() || svc.running()) return;
    if (machine->state() != core::State::Standby || now < next_prestart) return;
    next_prestart = now + std::chrono::seconds(1);
    if (auto s = svc.start(); !s) {
        log::warn("service", "pre-start on the standby: {}", s.error().message());
        return;
    }
    arm_service_poll();
}

void Agent::Impl::finish_failover_record(TimePoint now) {
    if (!pending_failover) return;
    const bool ready = probe ? probe->answers() > 0 : svc.running();
    const bool gave_up = now - pending_failover_since > std::chrono::seconds(30);
    if (!ready && !gave_up && machine->serving()) return;
    if (ready)
        pending_failover->service_ready = now - pending_failover_since;
    else
        pending_failover->cause += "; PBX not answering 30 s after the takeover";
    if (auto s = events.append(*pending_failover, wall_ms()); !s)
        log::error("failover", "cannot store failover log: {}", s.error().message());
    pending_failover.reset();
}

// Actions run in the machine's order. A durable term write must finish before the promotion's
// next action (the address) runs, but the loop must not block on the disk meanwhile (its
// alive-until stamp would go stale and the peer, or our own fence, would act on it): the write
// runs on a worker thread and the queue holds the actions behind it until it is durable.
void Agent::Impl::execute(const core::Actions& actions, TimePoint now) {
    for (const auto& a : actions) action_queue.push_back(a);
    run_actions(now);
}

void Agent::Impl::run_actions(TimePoint now) {
    while (!persist_thread.joinable() && !action_queue.empty()) {
        core::Action act = std::move(action_queue.front());
        action_queue.pop_front();
        if (auto* p = std::get_if<core::AcPersistTerm>(&act)) {
            start_persist(p->term);
            return;
        }
        execute_one(act, now);
    }
}

void Agent::Impl::start_persist(std::uint64_t term) {
    persist_ok.store(false);
    persist_thread = std::thread([this, term] {
        service::use_child_cpus();  // not the prober's CPU (its SCHED_FIFO does not pass on)
        auto s = terms.save({term, "Active"});
        if (!s) {
            persist_error = s.error().message();
            log::error("agent", "cannot persist term {}: {}", term, persist_error);
        }
        persist_ok.store(s.has_value());
        std::uint64_t one = 1;
        (void)!::write(persist_efd.get(), &one, sizeof one);
    });
}

void Agent::Impl::on_persist_done() {
    std::uint64_t v = 0;
    (void)!::read(persist_efd.get(), &v, sizeof v);
    if (!persist_thread.joinable()) return;
    persist_thread.join();
    if (!persist_ok.load()) {
        post(core::EvFault{core::FaultKind::Hardware, true,
                           "disk: cannot persist the HA term: " + persist_error});
    }
    const TimePoint now = Clock::now();
    run_actions(now);
    dispatch(now);
}

void Agent::Impl::execute_one(const core::Action& act, TimePoint now) {
    {
        log::debug("core", "action {}", core::describe(act));
        std::visit(
            [&](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, core::AcProbeClusterIp>) {
                    takeover_at = now;
                    if (!ann || !cfg.cluster_ip) {
                        post(core::EvArpProbeDone{true, {}});
                        return;
                    }
                    // RFC 5227 asks for a few probes; with a millisecond timeout a takeover's
                    // must take milliseconds too. A box deciding alone at boot is in no hurry.
                    nl::ProbeOptions po;
                    if (x.careful) {
                        po.count = 3;
                        po.interval = std::chrono::milliseconds(50);
                        po.wait_after_last = std::chrono::milliseconds(100);
                    } else if (cfg.heartbeat_timeout < std::chrono::milliseconds(10)) {
                        po.count = 2;
                        po.interval = std::chrono::microseconds(500);
                        po.wait_after_last = std::chrono::microseconds(500);
                    }
                    if (auto s = ann->probe(cfg.cluster_ip->addr, now, po); !s) {
                        // Cannot prove the address is free: do not promote.
                        log::error("netlink", "ARP probe failed: {}", s.error().message());
                        post(core::EvArpProbeDone{true, {}});
                    }
                } else if constexpr (std::is_same_v<T, core::AcAcquireClusterIp>) {
                    if (!addrs || !cfg.cluster_ip) return;
                    if (auto s = addrs->add(lan_ifindex, *cfg.cluster_ip, "fcmha", addr_lifetime_s);
                        !s) {
                        log::error("netlink", "add cluster IP: {}", s.error().message());
                        post(core::EvFault{core::FaultKind::Hardware, true,
                                           "cannot add cluster IP: " + s.error().message()});
                        return;
                    }
                    if (auto s = ann->announce(cfg.cluster_ip->addr, Clock::now()); !s)
                        log::warn("netlink", "gratuitous ARP: {}", s.error().message());
                    ip_held_at = Clock::now();
                    next_addr_renew = *ip_held_at + std::chrono::seconds(addr_lifetime_s) / 3;
                    log::info("netlink", "cluster IP {} added on {}; announced",
                              cfg.cluster_ip->to_string(), cfg.lan_interface);
                } else if constexpr (std::is_same_v<T, core::AcReleaseClusterIp>) {
                    if (!addrs || !cfg.cluster_ip) return;
                    ann->cancel_announce();
                    if (auto s = addrs->remove(lan_ifindex, *cfg.cluster_ip); !s)
                        log::error("netlink", "remove cluster IP: {}", s.error().message());
                    else
                        log::info("netlink", "cluster IP {} removed", cfg.cluster_ip->to_string());
                } else if constexpr (std::is_same_v<T, core::AcStartService>) {
                    if (svc.stopping()) {
                        // Stop then start (a restart): start again once the old one is reaped.
                        restart_pending = true;
                        return;
                    }
                    restart_pending = false;
                    if (auto s = svc.start(); !s) {
                        log::error("service", "start: {}", s.error().message());
                        post(core::EvService{core::ServiceState::Failed, s.error().message()});
                    } else {
                        arm_service_poll();
                        if (svc.configured())
                            post(core::EvService{core::ServiceState::Running, ""});
                    }
                } else if constexpr (std::is_same_v<T, core::AcStopService>) {
                    restart_pending = false;
                    if (!svc.running()) {
                        post(core::EvService{core::ServiceState::Stopped, "not running"});
                    } else if (auto s = svc.stop(); !s) {
                        log::error("service", "stop: {}", s.error().message());
                    }
                } else if constexpr (std::is_same_v<T, core::AcPersistTerm>) {
                    HA_ASSERT(false);  // run_actions() hands these to the persist worker
                } else if constexpr (std::is_same_v<T, core::AcSendPeer>) {
                    // The kernel answers with our new state before the peer acts on this.
                    if (hb) {
                        hb->publish(machine->own_status(), now);
                        hb->send_control(x.msg, x.target_term);
                    }
                } else if constexpr (std::is_same_v<T, core::AcAlert>) {
                    on_alert(x);
                } else if constexpr (std::is_same_v<T, core::AcLog>) {
                    on_log(x, now);
                } else if constexpr (std::is_same_v<T, core::AcRequestFullSync>) {
                    if (sync) sync->request_full_sync();
                } else if constexpr (std::is_same_v<T, core::AcQuarantineData>) {
                    if (sync) sync->quarantine(x.term);
                } else if constexpr (std::is_same_v<T, core::AcReboot>) {
                    log::error("agent", "fault_action = reboot: rebooting the box");
                    if (std::system("systemctl reboot") != 0) log::error("agent", "reboot failed");
                } else if constexpr (std::is_same_v<T, core::AcCommandResult>) {
                    log::info("agent", "command result ok={} {}", x.ok, x.message);
                    last_command_result = x;
                } else if constexpr (std::is_same_v<T, core::AcFenceSelf>) {
                    if (hb) hb->set_fence(x.on);
                } else {
                    static_assert(sizeof(T) == 0, "unhandled action");
                }
            },
            act);
    }
}

void Agent::Impl::dispatch(TimePoint now) {
    const core::State before = machine->state();
    // Adapters post while actions run; drain until quiet.
    for (int guard = 0; !pending.empty() && guard < 10000; ++guard) {
        core::Event e = std::move(pending.front());
        pending.pop_front();
        execute(machine->handle(e, now), now);
    }
    if (machine->state() != before) {
        role_since = now;
        if (machine->state() == core::State::Off && cfg.enable) persist_ha_disabled();
        if (sync) sync->set_role(machine->state());
        sd_notifyf(0, "STATUS=%s (%s)", role_text(machine->state()).c_str(),
                   std::string(core::to_string(machine->ha_status())).c_str());
    }
}

json Agent::Impl::status_json() {
    const auto snap = machine->snapshot();
    const TimePoint now = Clock::now();
    json s;
    s["ha_status"] = std::string(core::to_string(snap.ha_status));
    s["role"] = role_text(snap.state);
    s["state"] = std::string(core::to_string(snap.state));
    s["station"] = cfg.station_type ? std::string(core::to_string(*cfg.station_type)) : "";
    s["node"] = cfg.node_name;
    s["mac"] = own_mac.to_string();
    s["term"] = snap.term;
    s["serving"] = snap.serving;
    s["healthy"] = snap.healthy;
    s["model"] = build.model;
    s["version"] = build.version;
    s["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(now - started).count();
    s["role_since_s"] = std::chrono::duration_cast<std::chrono::seconds>(now - role_since).count();
    s["last_reason"] = snap.last_reason;
    s["cluster_ip"] = cfg.cluster_ip ? cfg.cluster_ip->to_string() : "";
    s["config_restricted"] = machine->config_restriction();
    json peer = json::object();
    if (snap.peer) {
        peer["address"] = cfg.peer_ip ? cfg.peer_ip->to_string() : "";
        peer["mac"] =
            snap.peer->mac.is_zero() ? std::string("unknown") : snap.peer->mac.to_string();
        peer["role"] = role_text(snap.peer->state);
        peer["state"] = std::string(core::to_string(snap.peer->state));
        peer["station"] = std::string(core::to_string(snap.peer->station));
        peer["term"] = snap.peer->term;
        peer["version"] = snap.peer->version;
        peer["healthy"] = snap.peer->healthy;
        peer["agent_stale"] = snap.peer->agent_stale;
        peer["synced"] = snap.peer->synced;
        peer["direct"] = snap.peer_direct;
        peer["lan"] = snap.peer_lan;
        if (snap.peer_last_seen)
            peer["last_seen_ms"] =
                std::chrono::duration_cast<std::chrono::milliseconds>(now - *snap.peer_last_seen)
                    .count();
        if (hb && hb->rtt(core::Path::Direct).count())
            peer["rtt_us"] = hb->rtt(core::Path::Direct).percentile_us(0.5);
    }
    s["peer"] = peer;
    if (hb) {
        json h;
        h["mode"] = hb->mode();
        h["interface"] = cfg.heartbeat_interface;
        if (cfg.prober_cpu >= 0) h["prober_cpu"] = cfg.prober_cpu;
        if (napi) h["napi"] = napi_status;
        h["interval_us"] =
            std::chrono::duration_cast<std::chrono::microseconds>(cfg.effective_interval()).count();
        h["timeout_us"] =
            std::chrono::duration_cast<std::chrono::microseconds>(cfg.heartbeat_timeout).count();
        const auto& r = hb->rtt(core::Path::Direct);
        h["rtt_us"] = {{"p50", r.percentile_us(0.5)},
                       {"p99", r.percentile_us(0.99)},
                       {"p999", r.percentile_us(0.999)},
                       {"max", r.max_us()},
                       {"count", r.count()}};
        h["lost"] = lost_count;
        h["sent"] = hb->counters().sent;
        h["replies"] = hb->counters().replies;
        h["send_errors"] = hb->counters().send_errors;
        h["refused"] = hb->counters().refused;
        if (hb->mode() != "native XDP")
            h["warning"] =
                hb->mode() == "user space"
                    ? "XDP unavailable: heartbeats answered in user space (slower under load)"
                    : "native XDP unavailable on this NIC: generic XDP in use";
        if (auto kc = hb->kernel_counters()) {
            h["kernel"] = {{"rx_request", kc->rx_request},       {"tx_stale", kc->tx_stale},
                           {"drop_bad_mac", kc->drop_bad_mac},   {"drop_replay", kc->drop_replay},
                           {"drop_peer_mac", kc->drop_peer_mac}, {"drop_version", kc->drop_version},
                           {"drop_short", kc->drop_short},       {"fence_arp", kc->fence_arp}};
        }
        s["heartbeat"] = h;
    }
    if (sync) {
        s["sync"] = sync->status_json();
        s["backup_status"] = sync->backup_in_progress() ? "In progress" : "Idle";
        s["backup"] = sync->backup_json();
    } else {
        s["backup_status"] = "Idle";
    }
    json service = {{"configured", svc.configured()}, {"running", svc.running()}};
    if (svc.running()) service["pid"] = svc.pid();
    if (probe) {
        service["probe"] = {{"kind", std::string(core::to_string(cfg.service.probe))},
                            {"enabled", probe->enabled()},
                            {"sent", probe->probes_sent()},
                            {"consecutive_failures", probe->consecutive_failures()}};
    }
    s["service"] = service;
    json faults = json::array();
    if (!snap.healthy) faults.push_back({{"kind", "fault"}, {"detail", snap.last_reason}});
    s["faults"] = faults;
    return s;
}

std::optional<core::AcCommandResult> Agent::Impl::run_command(core::Command c, TimePoint now) {
    last_command_result.reset();
    post(core::EvCommand{c});
    dispatch(now);
    return last_command_result;
}

std::string Agent::Impl::metrics_text() {
    const auto snap = machine->snapshot();
    std::string m;
    auto gauge = [&](const char* name, const char* help, double v) {
        m += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, v);
    };
    gauge("fcmha_active", "1 when this box holds the cluster IP and serves", snap.serving ? 1 : 0);
    gauge("fcmha_ha_dual", "1 while the peer answers (HA Status Dual)",
          snap.ha_status == core::HaStatus::Dual ? 1 : 0);
    gauge("fcmha_term", "HA term (bumped on every promotion)", static_cast<double>(snap.term));
    gauge("fcmha_healthy", "1 when no local fault is raised", snap.healthy ? 1 : 0);
    m += fmt::format(
        "# HELP fcmha_failovers_total Promotions of this box\n"
        "# TYPE fcmha_failovers_total counter\nfcmha_failovers_total {}\n",
        failovers);
    if (hb) {
        m += "# HELP fcmha_heartbeat_rtt_seconds Heartbeat round trip on the direct link\n"
             "# TYPE fcmha_heartbeat_rtt_seconds histogram\n";
        const auto& h = hb->rtt(core::Path::Direct);
        h.for_each_bucket([&](double le_us, std::uint64_t cum) {
            m += fmt::format("fcmha_heartbeat_rtt_seconds_bucket{{le=\"{:.6f}\"}} {}\n",
                             le_us / 1e6, cum);
        });
        m += fmt::format("fcmha_heartbeat_rtt_seconds_bucket{{le=\"+Inf\"}} {}\n", h.count());
        m += fmt::format(
            "fcmha_heartbeat_rtt_seconds_sum {:.6f}\nfcmha_heartbeat_rtt_seconds_count {}\n",
            h.sum_us() / 1e6, h.count());
        m += fmt::format(
            "# TYPE fcmha_heartbeat_lost_total counter\nfcmha_heartbeat_lost_total {}\n",
            lost_count);
    }
    if (sync) {
        const json st = sync->status_json();
        gauge("fcmha_sync_lag_bytes", "Bytes sent or queued, not yet acknowledged by the standby",
              st.value("lag_bytes", 0.0));
        gauge("fcmha_sync_oldest_unacked_seconds", "Age of the oldest unacknowledged change",
              st.value("oldest_unacked_ms", 0.0) / 1000.0);
        gauge("fcmha_sync_connected", "1 while the sync stream is up",
              st.value("connected", false) ? 1 : 0);
        m += fmt::format(
            "# TYPE fcmha_sync_sent_bytes_total counter\nfcmha_sync_sent_bytes_total {}\n",
            st.value("bytes_sent", std::uint64_t{0}));
    }
    return m;
}

json Agent::Impl::handle_request(const json& req) {
    const std::string cmd = req.value("cmd", "");
    const TimePoint now = Clock::now();
    if (cmd == "status") {
        json r = status_json();
        r["ok"] = true;
        return r;
    }
    if (cmd == "switch") {
        auto result = run_command(core::Command::Switch, now);
        if (result && !result->ok) return api::error_response(result->message);
        return api::ok_response({{"message",
                                  "force switch started: stopping the PBX, draining sync, "
                                  "then handing the cluster IP to the peer"},
                                 {"state", std::string(core::to_string(machine->state()))}});
    }
    if (cmd == "config_show") {
        return api::ok_response({{"path", config_path}, {"toml", core::to_toml(cfg)}});
    }
    if (cmd == "config_set") {
        if (auto why = machine->config_restriction(); !why.empty()) return api::error_response(why);
        const std::string name = req.value("key", "");
        const std::string value = req.value("value", "");
        auto text = read_file(config_path);
        if (!text) return api::error_response(text.error().message());
        auto updated = core::set_config_value(*text, name, value);
        if (!updated) return api::error_response(updated.error().message());
        auto parsed = core::parse_config(*updated);
        if (!parsed.config) return api::error_response("refused: the new configuration has issues");
        if (name == "ha.enable" && !parsed.config->enable) {
            auto result = run_command(core::Command::DisableHa, now);
            if (result && !result->ok) return api::error_response(result->message);
        }
        if (auto s = write_file_atomic(config_path, *updated, 0644); !s)
            return api::error_response(s.error().message());
        // Fault switches and the peer MAC apply at once; the rest at the next start, as the
        // guide's "HA configuration requires the FCM to reboot".
        cfg.software_fault_switch = parsed.config->software_fault_switch;
        cfg.hardware_fault_switch = parsed.config->hardware_fault_switch;
        if (!(cfg.peer_mac == parsed.config->peer_mac)) {
            cfg.peer_mac = parsed.config->peer_mac;
            if (hb) hb->set_peer_mac(cfg.peer_mac);
        }
        machine->reconfigure(
            core::MachineConfig::from(cfg, build.model, build.proto, build.version, own_mac));
        dispatch(now);
        return api::ok_response(
            {{"message", fmt::format("{} = {} saved to {}", name, value, config_path)}});
    }
    if (cmd == "log" || cmd == "events") return api::answer_store_query(events, req);
    if (cmd == "sync_status") {
        if (!sync) return api::error_response("sync is not running (HA disabled)");
        json r = sync->status_json();
        r["ok"] = true;
        return r;
    }
    if (cmd == "sync_full") {
        if (!sync) return api::error_response("sync is not running (HA disabled)");
        auto why = sync->start_full_backup(machine->state());
        if (!why.empty()) return api::error_response(why);
        return api::ok_response({{"message", "full backup started"}});
    }
    if (cmd == "debug") {
        log::set_debug(req.value("subsystem", ""), req.value("on", true));
        return api::ok_response();
    }
    return api::error_response("unknown command '" + cmd + "'");
}

void Agent::Impl::shutdown() {
    log::info("agent", "stopping: releasing the cluster IP and the PBX");
    sd_notify(0, "STOPPING=1");
    auto snap = machine->snapshot();
    if (snap.serving && addrs && cfg.cluster_ip) (void)addrs->remove(lan_ifindex, *cfg.cluster_ip);
    // A planned stop of the active hands over at once (address already released), rather than
    // leaving the standby to wait a whole heartbeat timeout.
    if (snap.serving && hb && snap.ha_status == core::HaStatus::Dual)
        hb->send_control(core::PeerMsg::TakeoverNow, snap.peer ? snap.peer->term : 0);
    if (svc.running()) {
        (void)svc.stop();
        for (int i = 0; i < 100 && svc.running(); ++i) {
            if (svc.reap()) break;
            usleep(50000);
            svc.on_deadline(Clock::now());
        }
    }
    if (hb) hb->detach();
    if (sync) sync->stop();
    if (ctl) ctl->stop();
    if (persist_thread.joinable()) persist_thread.join();
    if (flusher.joinable()) {
        std::uint64_t one = 1;
        (void)!::write(flusher_stop.get(), &one, sizeof one);
        flusher.join();
    }
    flush_logs();
}

int Agent::Impl::loop() {
    if (cfg.prober_rt_priority > 0 && cfg.enable) {
        // The prober is the weak side under CPU load: a nice-0 thread waits a scheduler tick.
        sched_param sp{};
        sp.sched_priority = cfg.prober_rt_priority;
        // RESET_ON_FORK: threads and processes started from this thread run SCHED_OTHER.
        if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) != 0)
            log::warn("agent", "SCHED_FIFO {} not permitted: {}", cfg.prober_rt_priority,
                      std::strerror(errno));
        // MCL_ONFAULT: lock pages as they are touched instead of populating every mapping (the
        // threads' 8 MiB stacks, the rings) up front. A fully populated agent had ~55 MB resident
        // and its exit (kill -9 included) took milliseconds longer to unmap, delaying the moment
        // its kernel closes the heartbeat socket and the peer learns it is gone.
        if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0)
            log::warn("agent", "mlockall failed: {}", std::strerror(errno));
    }
    if (cfg.prober_cpu >= 0 && cfg.enable) {
        // A heartbeat's round trip runs through NIC receive processing (NAPI) on the CPU that
        // took the NIC's interrupt, and on veth on the CPU of the sender. Processing queued for
        // a CPU that stalls (a hypervisor's steal, a hog of the softirq thread) waits with it;
        // a prober on another CPU keeps sending and sees silence: a false loss. On the same CPU
        // the prober stalls with it, sends nothing meanwhile, and core::Liveness counts no
        // evidence; its own sends also run the CPU's pending softirq work.
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cfg.prober_cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            log::warn("agent", "cannot pin the prober to CPU {}: {}", cfg.prober_cpu,
                      std::strerror(errno));
        else
            log::info("agent", "prober pinned to CPU {}", cfg.prober_cpu);
        if (cfg.prober_rt_priority > 0) {
            if (auto n = nl::NapiControl::open())
                napi.emplace(std::move(*n));
            else
                log::warn("agent", "NAPI threads stay where they are: {}", n.error().message());
            place_napi(Clock::now(), true);
        }
    }
    sig_op = std::make_unique<PollOp>(ring, [this](int) {
        signalfd_siginfo si{};
        while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
            if (si.ssi_signo == SIGHUP) {
                log::info("agent", "SIGHUP: configuration is read at start; restart to apply");
            } else {
                stopping = true;
            }
        }
    });
    sig_op->arm(sigfd.get());
    ctl_op = std::make_unique<PollOp>(
        ring, [this](int) { ctl->drain([this](const json& req) { return handle_request(req); }); });
    ctl_op->arm(ctl->event_fd());
    if (links) {
        nl_op = std::make_unique<PollOp>(ring, [this](int) {
            if (auto s =
                    links->on_readable([this](const nl::MonitorEvent& e) { on_link_event(e); });
                !s)
                log::warn("netlink", "{}", s.error().message());
        });
        nl_op->arm(links->fd());
        (void)links->resync([this](const nl::MonitorEvent& e) { on_link_event(e); });
    }
    if (ann) {
        ann_op = std::make_unique<PollOp>(ring, [this](int) {
            auto r = ann->on_readable(Clock::now());
            if (r && *r) post(core::EvArpProbeDone{(*r)->conflict, (*r)->by});
        });
        ann_op->arm(ann->fd());
    }
    persist_op = std::make_unique<PollOp>(ring, [this](int) { on_persist_done(); });
    persist_op->arm(persist_efd.get());
    if (probe && probe->fd() >= 0) {
        probe_op = std::make_unique<PollOp>(ring, [this](int) {
            if (auto v = probe->on_readable(Clock::now()))
                post(core::EvFault{core::FaultKind::Software, v->fault, v->detail});
        });
        probe_op->arm(probe->fd());
    }
    if (cores) {
        core_op = std::make_unique<PollOp>(ring, [this](int) {
            for (const auto& name : cores->drain()) {
                // A core dump is a software fault even when the PBX restarted by itself.
                post(
                    core::EvFault{core::FaultKind::Software, true,
                                  fmt::format("core dump {}/{}", cfg.service.core_dump_dir, name)});
            }
        });
        core_op->arm(cores->fd());
    }
    if (sync && sync->event_fd() >= 0) {
        sync_op = std::make_unique<PollOp>(ring, [this](int) { sync->drain(); });
        sync_op->arm(sync->event_fd());
    }

    const TimePoint t0 = Clock::now();
    execute(machine->start(t0), t0);
    dispatch(t0);
    if (sync) sync->set_role(machine->state());
    if (sd_watchdog_enabled(0, &watchdog_usec) <= 0) watchdog_usec = 0;
    sd_notifyf(0, "READY=1\nSTATUS=%s (%s)", role_text(machine->state()).c_str(),
               std::string(core::to_string(machine->ha_status())).c_str());
    log::info("agent", "running: station={} state={} term={} heartbeat={} cluster_ip={}",
              cfg.station_type ? std::string(core::to_string(*cfg.station_type)) : "-",
              core::to_string(machine->state()), machine->term(), hb ? hb->mode() : "off",
              cfg.cluster_ip ? cfg.cluster_ip->to_string() : "-");

    while (!stopping) {
        TimePoint now = Clock::now();
        if (hb) {
            hb->publish(machine->own_status(), now);
            hb->on_timer(now);
        }
        if (ann) {
            if (auto d = ann->next_deadline(); d && now >= *d) {
                auto r = ann->on_deadline(now);
                if (r && *r) post(core::EvArpProbeDone{(*r)->conflict, (*r)->by});
            }
        }
        poll_carrier(now);
        place_napi(now, false);
        renew_cluster_ip(now);
        if (auto d = svc.kill_deadline(); d && now >= *d) svc.on_deadline(now);
        keep_standby_service(now);
        if (probe) {
            // Probe the PBX only where it should answer: on the active, while it runs.
            probe->enable(machine->serving() && svc.running(), now);
            if (auto d = probe->next_deadline(); d && now >= *d) {
                if (auto v = probe->on_deadline(now))
                    post(core::EvFault{core::FaultKind::Software, v->fault, v->detail});
            }
        }
        if (sync) sync->poll(pending, now);
        finish_failover_record(now);
        if (metrics && now >= next_metrics) {
            metrics->publish(metrics_text());
            next_metrics = now + std::chrono::seconds(1);
        }
        if (auto d = machine->next_deadline(); d && now >= *d) post(core::EvTick{});
        dispatch(now);
        if (watchdog_usec && now >= next_watchdog) {
            sd_notify(0, "WATCHDOG=1");
            next_watchdog = now + std::chrono::microseconds(watchdog_usec / 2);
        }

        std::optional<TimePoint> deadline = machine->next_deadline();
        auto consider = [&](std::optional<TimePoint> d) {
            if (d && (!deadline || *d < *deadline)) deadline = d;
        };
        if (hb) consider(hb->next_deadline(now));
        if (ann) consider(ann->next_deadline());
        if (carrier) consider(next_carrier_poll);
        if (napi) consider(next_napi_check);
        if (addrs && machine->serving()) consider(next_addr_renew);
        consider(svc.kill_deadline());
        if (probe) consider(probe->next_deadline());
        if (pending_failover && !probe) consider(now + std::chrono::milliseconds(100));
        if (cfg.service.prestart_on_standby && !svc.running() &&
            machine->state() == core::State::Standby)
            consider(next_prestart);
        if (sync) consider(sync->next_deadline());
        if (watchdog_usec) consider(next_watchdog);
        if (metrics) consider(next_metrics);
        // The BPF alive-until stamp must be refreshed well within the timeout even when idle.
        consider(now +
                 std::min<Duration>(std::chrono::duration_cast<Duration>(cfg.heartbeat_timeout) / 4,
                                    std::chrono::seconds(1)));
        if (auto r = ring.run_once(deadline); !r) {
            log::error("agent", "event loop: {}", r.error().message());
            break;
        }
    }
    shutdown();
    return 0;
}

int Agent::run() {
    return impl_->loop();
}

}  // namespace ha
