#include "loader.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "common/log.hpp"
#include "ha_xdp.skel.h"

namespace ha::bpf {
namespace {

constexpr std::string_view kLog = "bpf";
constexpr long kBpfFsMagic = 0xcafe4a11;  // BPF_FS_MAGIC, <linux/magic.h>
constexpr const char* kLinkPin = "link";
// The LAN egress fence (ha_tc_fence) is a tc filter on the clsact egress hook: no link to pin, it
// stays attached when the agent dies, and a new start replaces it by this handle and priority.
constexpr std::uint32_t kTcHandle = 0xfc4a;
constexpr std::uint32_t kTcPriority = 0xfc;
// Every map pin, plus names earlier versions pinned (ha_stats grew into ha_stats_v2), so a start,
// a replacement or an uninstall never leaves one behind.
constexpr std::array<const char*, 6> kMapPins{"ha_config", "ha_state",    "ha_fence",
                                              "ha_peer",   "ha_stats_v2", "ha_stats"};

// libbpf's chatter one level lower than it reports, so verifier noise only shows at debug.
int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
    const log::Level ours = level == LIBBPF_WARN ? log::Level::Info : log::Level::Debug;
    if (!log::enabled(ours, "libbpf")) return 0;
    std::array<char, 1024> buf{};
    const int n = std::vsnprintf(buf.data(), buf.size(), fmt, args);
    if (n <= 0) return 0;
    std::string_view line(buf.data(),
                          std::min<std::size_t>(static_cast<std::size_t>(n), buf.size() - 1));
    while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    log::write(ours, "libbpf", line);
    return 0;
}

void install_print_once() {
    static std::once_flag once;
    std::call_once(once, [] { libbpf_set_print(libbpf_print); });
}

// Map fd by typed skeleton member: never by string name.
int map_fd(const bpf_map* m) {
    return bpf_map__fd(m);
}

Status make_dir(const std::string& path) {
    if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) return {};
    return last_errno("mkdir " + path);
}

// flock on the pin folder while loading, so two agents (or an agent and `fcm-hactl`) cannot
// interleave adopt/replace on the same interface.
class PinDirLock {
  public:
    static Result<PinDirLock> lock(const std::string& dir) {
        UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) return last_errno("open " + dir);
        if (::flock(fd.get(), LOCK_EX) != 0) return last_errno("flock " + dir);
        PinDirLock l;
        l.fd_ = std::move(fd);
        return l;
    }

  private:
    UniqueFd fd_;  // closing releases the lock
};

std::string_view attach_mode_name(std::uint8_t xdp_attached) {
    switch (xdp_attached) {
        case XDP_ATTACHED_DRV:
            return "native";
        case XDP_ATTACHED_SKB:
            return "generic";
        case XDP_ATTACHED_HW:
            return "offload";
        default:
            return "none";
    }
}

Result<UniqueFd> link_create(int prog_fd, int ifindex, std::uint32_t flags) {
    bpf_link_create_opts o{};
    o.sz = sizeof(o);
    o.flags = flags;
    const int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &o);
    if (fd < 0)
        return errno_error(
            fd, fmt::format("bpf_link_create XDP ifindex={} flags={:#x}", ifindex, flags));
    return UniqueFd(fd);
}

// The ifindex an XDP link is attached to; 0 once its interface is gone (defunct link).
std::uint32_t link_ifindex(int link_fd) {
    bpf_link_info info{};
    std::uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0) return 0;
    return info.type == BPF_LINK_TYPE_XDP ? info.xdp.ifindex : 0;
}

bpf_tc_hook egress_hook(int ifindex) {
    bpf_tc_hook h{};
    h.sz = sizeof h;
    h.ifindex = ifindex;
    h.attach_point = BPF_TC_EGRESS;
    return h;
}

Status attach_tc_fence(int ifindex, int prog_fd) {
    bpf_tc_hook hook = egress_hook(ifindex);
    if (const int err = bpf_tc_hook_create(&hook); err != 0 && err != -EEXIST)
        return errno_error(err, fmt::format("tc clsact on ifindex {}", ifindex));
    bpf_tc_opts o{};
    o.sz = sizeof o;
    o.handle = kTcHandle;
    o.priority = kTcPriority;
    o.prog_fd = prog_fd;
    o.flags = BPF_TC_F_REPLACE;
    if (const int err = bpf_tc_attach(&hook, &o); err != 0)
        return errno_error(err, fmt::format("tc egress fence on ifindex {}", ifindex));
    return {};
}

void detach_tc_fence(int ifindex) {
    bpf_tc_hook hook = egress_hook(ifindex);
    bpf_tc_opts o{};
    o.sz = sizeof o;
    o.handle = kTcHandle;
    o.priority = kTcPriority;
    if (const int err = bpf_tc_detach(&hook, &o); err != 0 && err != -ENOENT && err != -EINVAL)
        log::warn(kLog, "ifindex={} tc egress fence detach: {}", ifindex, std::strerror(-err));
}

void unlink_quiet(const std::string& path) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        log::warn(kLog, "unlink {} failed: {}", path, std::strerror(errno));
}

}  // namespace

Result<Responder> Responder::create(const ResponderOptions& opts) {
    install_print_once();
    if (opts.ifindex != 0 && opts.ifname.empty())
        return fail(fmt::format("responder for ifindex {} has no ifname", opts.ifindex));
    if (opts.ifname.find('/') != std::string::npos || opts.ifname == "." || opts.ifname == "..")
        return fail(fmt::format("interface name '{}' is not a valid pin folder name", opts.ifname));
    if (opts.port == 0) return fail("heartbeat port 0");

    Responder r;
    r.ifname_ = opts.ifname;
    r.ifindex_ = opts.ifindex;
    r.cfg_.key_k0 = opts.key.k0;
    r.cfg_.key_k1 = opts.key.k1;
    r.cfg_.key_set = opts.key_set ? 1 : 0;
    if (opts.peer_mac) std::memcpy(r.cfg_.peer_mac, opts.peer_mac->bytes.data(), 6);
    r.cfg_.lifeline_port = htons(opts.lifeline_port);
    if (opts.cluster_ip) {
        if (!opts.cluster_ip->is_v4())
            return fail(fmt::format("cluster IP {} for the XDP fence: only IPv4 is supported",
                                    opts.cluster_ip->to_string()));
        r.cfg_.cluster_ip4 = opts.cluster_ip->v4_be();
    }

    std::optional<PinDirLock> lock;
    if (opts.ifindex != 0 && !opts.pin_root.empty()) {
        struct statfs fs {};
        if (auto st = make_dir(opts.pin_root); !st) return unexpected(st.error());
        if (::statfs(opts.pin_root.c_str(), &fs) != 0) return last_errno("statfs " + opts.pin_root);
        if (static_cast<long>(fs.f_type) != kBpfFsMagic)
            return fail(fmt::format("pin root {} is not on a bpf filesystem (mount -t bpf)",
                                    opts.pin_root));
        r.pin_dir_ = opts.pin_root + "/" + opts.ifname;
        if (auto st = make_dir(r.pin_dir_); !st) return unexpected(st.error());
        auto l = PinDirLock::lock(r.pin_dir_);
        if (!l) return unexpected(l.error());
        lock.emplace(std::move(*l));
    }
    if (auto st = r.load_and_attach(opts); !st)
        return unexpected(st.error().wrap(fmt::format("XDP responder on {}", opts.ifname)));
    return r;
}

Status Responder::load_and_attach(const ResponderOptions& opts) {
    // Two attempts: a pinned map whose layout no longer matches (an upgrade that forgot the _v2
    // suffix) makes the load fail; its pins are then removed and the load retried once.
    for (int attempt = 0;; ++attempt) {
        skel_ = ha_xdp::open();
        if (!skel_) return last_errno("open skeleton ha_xdp");
        skel_->rodata->hb_port = opts.port;
        skel_->rodata->is_lan = opts.is_lan ? 1 : 0;
        const std::array<bpf_map*, 5> pinned{skel_->maps.ha_config, skel_->maps.ha_state,
                                             skel_->maps.ha_fence, skel_->maps.ha_peer,
                                             skel_->maps.ha_stats_v2};
        if (!pin_dir_.empty()) {
            for (bpf_map* m : pinned) {
                const std::string path = pin_dir_ + "/" + bpf_map__name(m);
                if (const int err = bpf_map__set_pin_path(m, path.c_str()); err != 0)
                    return errno_error(err, "bpf_map__set_pin_path " + path);
            }
        }
        const int err = ha_xdp::load(skel_);
        if (err == 0) break;
        ha_xdp::destroy(skel_);
        skel_ = nullptr;
        if (attempt > 0 || pin_dir_.empty()) return errno_error(err, "load ha_xdp");
        log::warn(kLog, "ifname={} pinned maps incompatible, replacing them err={}", ifname_, err);
        for (const char* name : kMapPins) unlink_quiet(pin_dir_ + "/" + name);
    }
    if (auto st = write_config(); !st) return st;
    if (ifindex_ == 0) return {};

    const int prog_fd = bpf_program__fd(skel_->progs.ha_xdp_hb);
    const std::string link_path = pin_dir_.empty() ? "" : pin_dir_ + "/" + kLinkPin;
    if (!link_path.empty()) {
        const int old = bpf_obj_get(link_path.c_str());
        if (old >= 0) {
            UniqueFd old_link(old);
            const std::uint32_t at = link_ifindex(old_link.get());
            if (at == static_cast<std::uint32_t>(ifindex_) &&
                bpf_link_update(old_link.get(), prog_fd, nullptr) == 0) {
                link_ = std::move(old_link);
                adopted_ = true;
            } else {
                log::warn(kLog, "ifname={} pinned link not reusable (ifindex {} vs {}), replacing",
                          ifname_, at, ifindex_);
                if (at != 0) bpf_link_detach(old_link.get());
                unlink_quiet(link_path);
            }
        }
    }
    if (!adopted_) {
        Result<UniqueFd> link = fail("unreachable");
        if (opts.attach_mode != AttachMode::Generic) {
            link = link_create(prog_fd, ifindex_, XDP_FLAGS_DRV_MODE);
            if (!link && opts.attach_mode == AttachMode::Auto)
                log::warn(kLog, "ifname={} native XDP failed ({}), falling back to generic XDP",
                          ifname_, link.error().message());
        }
        if (opts.attach_mode == AttachMode::Generic ||
            (!link && opts.attach_mode == AttachMode::Auto))
            link = link_create(prog_fd, ifindex_, XDP_FLAGS_SKB_MODE);
        if (!link) return unexpected(link.error());
        link_ = std::move(*link);
        if (!link_path.empty()) {
            if (const int err = bpf_obj_pin(link_.get(), link_path.c_str()); err != 0) {
                const Error e = errno_error(err, "bpf_obj_pin " + link_path).error;
                bpf_link_detach(link_.get());
                return unexpected(e);
            }
        }
    }
    if (opts.is_lan) {
        if (auto st = attach_tc_fence(ifindex_, bpf_program__fd(skel_->progs.ha_tc_fence)); !st)
            return st;
        tc_fence_ = true;
    }
    bpf_xdp_query_opts q{};
    q.sz = sizeof(q);
    if (bpf_xdp_query(ifindex_, 0, &q) == 0) mode_ = attach_mode_name(q.attach_mode);
    log::info(kLog, "ifname={} ifindex={} xdp responder {} mode={} port={} lan={}", ifname_,
              ifindex_, adopted_ ? "re-adopted" : "attached", mode_, opts.port, opts.is_lan);
    return {};
}

Status Responder::remove_pins(const std::string& pin_root, const std::string& ifname) {
    if (ifname.empty() || ifname.find('/') != std::string::npos)
        return fail(fmt::format("interface name '{}' is not a valid pin folder name", ifname));
    const std::string dir = pin_root + "/" + ifname;
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0)
        return errno == ENOENT ? Status{} : last_errno("stat " + dir);
    auto lock = PinDirLock::lock(dir);
    if (!lock) return unexpected(lock.error());
    if (const unsigned ifindex = if_nametoindex(ifname.c_str()); ifindex != 0)
        detach_tc_fence(static_cast<int>(ifindex));
    const std::string link_path = dir + "/" + kLinkPin;
    const int link = bpf_obj_get(link_path.c_str());
    if (link >= 0) {
        UniqueFd fd(link);
        bpf_link_detach(fd.get());
    }
    unlink_quiet(link_path);
    for (const char* name : kMapPins) unlink_quiet(dir + "/" + name);
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return last_errno("rmdir " + dir);
    return {};
}

Responder::Responder(Responder&& o) noexcept {
    *this = std::move(o);
}

Responder& Responder::operator=(Responder&& o) noexcept {
    if (this != &o) {
        reset();
        skel_ = std::exchange(o.skel_, nullptr);
        link_ = std::move(o.link_);
        ifname_ = std::move(o.ifname_);
        pin_dir_ = std::move(o.pin_dir_);
        ifindex_ = std::exchange(o.ifindex_, 0);
        mode_ = std::exchange(o.mode_, "none");
        adopted_ = std::exchange(o.adopted_, false);
        tc_fence_ = std::exchange(o.tc_fence_, false);
        cfg_ = o.cfg_;
    }
    return *this;
}

Responder::~Responder() {
    reset();
}

void Responder::reset() {
    // Closing our link fd does not detach a pinned link: the pin holds a reference. The tc
    // filter stays too, unless nothing was pinned (then the attachment ends with us).
    if (tc_fence_ && pin_dir_.empty()) detach_tc_fence(ifindex_);
    tc_fence_ = false;
    link_.reset();
    if (skel_) ha_xdp::destroy(skel_);
    skel_ = nullptr;
}

std::string_view Responder::mode() const {
    return mode_;
}

Status Responder::write_config() {
    const std::uint32_t key = 0;
    if (bpf_map_update_elem(map_fd(skel_->maps.ha_config), &key, &cfg_, BPF_ANY) != 0)
        return last_errno("update ha_config");
    return {};
}

Status Responder::set_state(const ha_agent_state& state) {
    const std::uint32_t key = 0;
    if (bpf_map_update_elem(map_fd(skel_->maps.ha_state), &key, &state, BPF_ANY) != 0)
        return last_errno("update ha_state ifname=" + ifname_);
    return {};
}

Status Responder::set_key(const Key& k) {
    cfg_.key_k0 = k.k0;
    cfg_.key_k1 = k.k1;
    cfg_.key_set = 1;
    return write_config();
}

Status Responder::set_peer_mac(const std::optional<MacAddr>& mac) {
    std::memset(cfg_.peer_mac, 0, sizeof(cfg_.peer_mac));
    if (mac) std::memcpy(cfg_.peer_mac, mac->bytes.data(), sizeof(cfg_.peer_mac));
    return write_config();
}

Status Responder::set_cluster_ip(const std::optional<IpAddr>& ip) {
    if (ip && !ip->is_v4())
        return fail(fmt::format("cluster IP {} for the XDP fence: only IPv4 is supported",
                                ip->to_string()));
    cfg_.cluster_ip4 = ip ? ip->v4_be() : 0;
    return write_config();
}

Status Responder::set_fence(bool fenced) {
    const std::uint32_t key = 0;
    ha_fence_val v{};
    v.fenced = fenced ? 1 : 0;
    if (bpf_map_update_elem(map_fd(skel_->maps.ha_fence), &key, &v, BPF_ANY) != 0)
        return last_errno("update ha_fence ifname=" + ifname_);
    return {};
}

Result<bool> Responder::fenced() const {
    const std::uint32_t key = 0;
    ha_fence_val v{};
    if (bpf_map_lookup_elem(map_fd(skel_->maps.ha_fence), &key, &v) != 0)
        return last_errno("lookup ha_fence ifname=" + ifname_);
    return v.fenced != 0;
}

Result<ha_counters> Responder::counters() const {
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return errno_error(ncpu, "libbpf_num_possible_cpus");
    std::vector<ha_counters> per_cpu(static_cast<std::size_t>(ncpu));
    const std::uint32_t key = 0;
    if (bpf_map_lookup_elem(map_fd(skel_->maps.ha_stats_v2), &key, per_cpu.data()) != 0)
        return last_errno("lookup ha_stats_v2 ifname=" + ifname_);
    std::array<std::uint64_t, HA_CNT_MAX> sum{};
    for (const ha_counters& c : per_cpu) {
        std::array<std::uint64_t, HA_CNT_MAX> v{};
        std::memcpy(v.data(), &c, sizeof(c));
        for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += v[i];
    }
    ha_counters out{};
    std::memcpy(&out, sum.data(), sizeof(out));
    return out;
}

Result<std::optional<PeerSeen>> Responder::last_request() const {
    const std::uint32_t key = 0;
    ha_peer_val v{};
    // The program writes seq_end, body, seq_begin in that order; a torn copy shows begin != end.
    for (int tries = 0;; ++tries) {
        if (bpf_map_lookup_elem(map_fd(skel_->maps.ha_peer), &key, &v) != 0)
            return last_errno("lookup ha_peer ifname=" + ifname_);
        if (v.seq_begin == v.seq_end) break;
        if (tries == 8)
            return fail("ha_peer kept changing while read",
                        std::errc::resource_unavailable_try_again);
    }
    if (v.last_request_ns == 0 && v.last_control_ns == 0) return std::optional<PeerSeen>{};
    PeerSeen p;
    p.last_seq = v.last_seq;
    p.last_request_ns = v.last_request_ns;
    p.peer_sent_ns = v.peer_sent_ns;
    p.last_control_ns = v.last_control_ns;
    p.last_control = v.last_control;
    p.state = from_wire(v.state);
    std::memcpy(p.src_mac.bytes.data(), v.src_mac, 6);
    p.src_ip4_be = v.src_ip4;
    return std::optional<PeerSeen>(std::move(p));
}

Status Responder::detach_and_unpin() {
    if (tc_fence_) {
        detach_tc_fence(ifindex_);
        tc_fence_ = false;
    }
    if (link_) {
        if (const int err = bpf_link_detach(link_.get()); err != 0 && err != -ENOLINK)
            log::warn(kLog, "ifname={} bpf_link_detach: {}", ifname_, std::strerror(-err));
        link_.reset();
    }
    if (!pin_dir_.empty()) {
        auto lock = PinDirLock::lock(pin_dir_);
        if (!lock) return unexpected(lock.error());
        unlink_quiet(pin_dir_ + "/" + kLinkPin);
        for (const char* name : kMapPins) unlink_quiet(pin_dir_ + "/" + name);
        if (::rmdir(pin_dir_.c_str()) != 0 && errno != ENOENT)
            return last_errno("rmdir " + pin_dir_);
    }
    log::info(kLog, "ifname={} xdp responder detached", ifname_);
    mode_ = "none";
    return {};
}

Result<TestRunResult> Responder::run_once(std::span<const std::uint8_t> frame) const {
    TestRunResult res;
    res.frame.resize(frame.size() + 256);
    bpf_test_run_opts o{};
    o.sz = sizeof(o);
    o.data_in = frame.data();
    o.data_size_in = static_cast<std::uint32_t>(frame.size());
    o.data_out = res.frame.data();
    o.data_size_out = static_cast<std::uint32_t>(res.frame.size());
    o.repeat = 1;
    if (const int err = bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.ha_xdp_hb), &o);
        err != 0)
        return errno_error(err, "bpf_prog_test_run_opts ha_xdp_hb");
    res.verdict = o.retval;
    res.frame.resize(o.data_size_out);
    return res;
}

Result<std::uint32_t> Responder::run_tc_once(std::span<const std::uint8_t> frame) const {
    bpf_test_run_opts o{};
    o.sz = sizeof(o);
    o.data_in = frame.data();
    o.data_size_in = static_cast<std::uint32_t>(frame.size());
    o.repeat = 1;
    if (const int err = bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.ha_tc_fence), &o);
        err != 0)
        return errno_error(err, "bpf_prog_test_run_opts ha_tc_fence");
    return o.retval;
}

// ---- PassProgram ----

namespace {

Result<UniqueFd> load_pass_program() {
    install_print_once();
    // r0 = XDP_PASS; exit. Too small to deserve an object file and a skeleton.
    std::array<bpf_insn, 2> insns{};
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[0].imm = XDP_PASS;
    insns[1].code = BPF_JMP | BPF_EXIT;
    const int fd =
        bpf_prog_load(BPF_PROG_TYPE_XDP, "ha_xdp_pass", "GPL", insns.data(), insns.size(), nullptr);
    if (fd < 0) return errno_error(fd, "bpf_prog_load ha_xdp_pass");
    return UniqueFd(fd);
}

}  // namespace

Result<PassProgram> PassProgram::attach(int ifindex) {
    auto prog = load_pass_program();
    if (!prog) return unexpected(prog.error());
    auto link = link_create(prog->get(), ifindex, 0);
    if (!link) return unexpected(link.error());
    PassProgram p;
    p.link_ = std::move(*link);
    return p;
}

Status PassProgram::attach_persistent(int ifindex) {
    auto prog = load_pass_program();
    if (!prog) return unexpected(prog.error());
    if (const int err = bpf_xdp_attach(ifindex, prog->get(), 0, nullptr); err != 0)
        return errno_error(err, fmt::format("bpf_xdp_attach ifindex={}", ifindex));
    return {};
}

Status PassProgram::detach_persistent(int ifindex) {
    if (const int err = bpf_xdp_detach(ifindex, 0, nullptr); err != 0)
        return errno_error(err, fmt::format("bpf_xdp_detach ifindex={}", ifindex));
    return {};
}

}  // namespace ha::bpf
