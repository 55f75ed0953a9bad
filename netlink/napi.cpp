#include "netlink/napi.hpp"

#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <sched.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "common/unique_fd.hpp"
#include "netlink/carrier.hpp"

namespace ha::nl {
namespace {

// From the kernel's include/uapi/linux/netdev.h (Linux 6.8); Debian 12's headers predate it.
constexpr const char* kNetdevFamily = "netdev";
constexpr std::uint8_t kNetdevVersion = 1;
constexpr std::uint8_t kCmdNapiGet = 11;   // NETDEV_CMD_NAPI_GET
constexpr std::uint16_t kNapiIfindex = 1;  // NETDEV_A_NAPI_IFINDEX
constexpr std::uint16_t kNapiId = 2;       // NETDEV_A_NAPI_ID
constexpr std::uint16_t kNapiPid = 4;      // NETDEV_A_NAPI_PID

nlmsghdr* put_genl(std::span<std::uint8_t> buf, std::uint16_t family, std::uint8_t cmd,
                   std::uint8_t version, std::uint32_t seq) {
    std::memset(buf.data(), 0, buf.size());
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = family;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr)));
    g->cmd = cmd;
    g->version = version;
    return nlh;
}

// The attributes of one generic netlink message, by type (nullptr where absent).
template <std::size_t N>
std::array<const nlattr*, N> genl_attrs(const nlmsghdr* nlh) {
    std::array<const nlattr*, N> tb{};
    mnl_attr_parse(
        nlh, sizeof(genlmsghdr),
        [](const nlattr* a, void* data) {
            auto& t = *static_cast<std::array<const nlattr*, N>*>(data);
            const auto type = mnl_attr_get_type(a);
            if (type < N) t[type] = a;
            return MNL_CB_OK;
        },
        &tb);
    return tb;
}

// A sysfs attribute's value, without its newline.
Result<std::string> read_attr(const std::string& path) {
    auto text = read_file(path, 4096);
    while (text && !text->empty() && text->back() == '\n') text->pop_back();
    return text;
}

// sysfs `threaded`: "0" or "1" (newer kernels may add modes; anything but "0" is threaded).
// The file of `ifname`, after checking that it is ours: sysfs shows the NICs of the network
// namespace it was mounted in, which need not be the caller's. Indexes repeat across namespaces
// (every fresh one numbers from 1), so the address is compared too.
Result<std::string> threaded_file(const std::string& ifname, int ifindex) {
    const std::string dir = fmt::format("/sys/class/net/{}", ifname);
    HA_TRY_CTX(index, read_attr(dir + "/ifindex"), ifname);
    HA_TRY_CTX(address, read_attr(dir + "/address"), ifname);
    UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) return last_errno("socket for SIOCGIFHWADDR");
    HA_TRY_CTX(mac, hw_address(sock.get(), ifname), ifname);
    if (index != std::to_string(ifindex) || address != mac.to_string())
        return fail(fmt::format("{}: {} is another network namespace's NIC (ifindex {}, address "
                                "{}; ours: {}, {}): mount this namespace's sysfs",
                                ifname, dir, index, address, ifindex, mac.to_string()),
                    std::errc::no_such_device);
    return dir + "/threaded";
}

Status write_flag(const std::string& ifname, const std::string& path, const char* value) {
    std::ofstream out(path);
    out << value;
    out.flush();
    // The kernel refuses (EIO, EOPNOTSUPP) a NIC without NAPI: a veth before XDP is attached.
    if (!out) return last_errno(fmt::format("{}: cannot write {} to {}", ifname, value, path));
    return {};
}

// Moves one NAPI thread to `cpu` at SCHED_FIFO `priority`; true when something changed.
Result<bool> place(const std::string& ifname, int pid, int cpu, int priority) {
    bool changed = false;
    cpu_set_t now;
    CPU_ZERO(&now);
    if (sched_getaffinity(pid, sizeof now, &now) != 0)
        return last_errno(fmt::format("{}: NAPI thread {}: sched_getaffinity", ifname, pid));
    if (CPU_COUNT(&now) != 1 || !CPU_ISSET(cpu, &now)) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(pid, sizeof one, &one) != 0)
            return last_errno(
                fmt::format("{}: NAPI thread {}: cannot pin it to CPU {}", ifname, pid, cpu));
        changed = true;
    }
    sched_param sp{};
    const int policy = sched_getscheduler(pid);
    if (policy < 0 || sched_getparam(pid, &sp) != 0)
        return last_errno(fmt::format("{}: NAPI thread {}: sched_getscheduler", ifname, pid));
    if (policy != SCHED_FIFO || sp.sched_priority != priority) {
        sp.sched_priority = priority;
        if (sched_setscheduler(pid, SCHED_FIFO, &sp) != 0)
            return last_errno(
                fmt::format("{}: NAPI thread {}: SCHED_FIFO {} refused", ifname, pid, priority));
        changed = true;
    }
    return changed;
}

}  // namespace

Result<NapiControl> NapiControl::open() {
    HA_TRY_CTX(sock, MnlSocket::open(0, NETLINK_GENERIC), "generic netlink");
    // Every family, then pick ours: a dump needs no request-with-reply exchange.
    std::vector<std::uint8_t> buf(MNL_SOCKET_BUFFER_SIZE);
    const std::uint32_t seq = sock.next_seq();
    nlmsghdr* nlh = put_genl(buf, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, seq);
    std::uint16_t family = 0;
    Status st = sock.dump({buf.data(), nlh->nlmsg_len}, seq, [&](const nlmsghdr* m) {
        auto tb = genl_attrs<CTRL_ATTR_MAX + 1>(m);
        if (tb[CTRL_ATTR_FAMILY_NAME] == nullptr || tb[CTRL_ATTR_FAMILY_ID] == nullptr) return;
        if (std::strcmp(mnl_attr_get_str(tb[CTRL_ATTR_FAMILY_NAME]), kNetdevFamily) == 0)
            family = mnl_attr_get_u16(tb[CTRL_ATTR_FAMILY_ID]);
    });
    if (!st) return unexpected(st.error().wrap("generic netlink families"));
    if (family == 0)
        return fail("the kernel has no \"netdev\" generic netlink family (Linux 6.3 or later)",
                    std::errc::function_not_supported);
    return NapiControl(std::move(sock), family);
}

Result<std::vector<NapiInstance>> NapiControl::list(int ifindex) {
    std::vector<std::uint8_t> buf(MNL_SOCKET_BUFFER_SIZE);
    const std::uint32_t seq = sock_.next_seq();
    nlmsghdr* nlh = put_genl(buf, family_, kCmdNapiGet, kNetdevVersion, seq);
    mnl_attr_put_u32(nlh, kNapiIfindex, static_cast<std::uint32_t>(ifindex));
    std::vector<NapiInstance> out;
    Status st = sock_.dump({buf.data(), nlh->nlmsg_len}, seq, [&](const nlmsghdr* m) {
        auto tb = genl_attrs<kNapiPid + 1>(m);
        if (tb[kNapiIfindex] == nullptr || tb[kNapiId] == nullptr) return;
        if (static_cast<int>(mnl_attr_get_u32(tb[kNapiIfindex])) != ifindex) return;
        NapiInstance n;
        n.id = mnl_attr_get_u32(tb[kNapiId]);
        if (tb[kNapiPid] != nullptr) n.pid = static_cast<int>(mnl_attr_get_u32(tb[kNapiPid]));
        out.push_back(n);
    });
    if (!st)
        return unexpected(st.error().wrap(fmt::format("NAPI instances of ifindex {}", ifindex)));
    return out;
}

Result<int> NapiControl::pin_threads(const std::string& ifname, int ifindex, int cpu,
                                     int priority) {
    HA_TRY_CTX(napis, list(ifindex), ifname);
    if (napis.empty())
        return fail(fmt::format("{}: no NAPI instance (link down, or no native XDP)", ifname),
                    std::errc::no_such_device);
    HA_TRY_CTX(path, threaded_file(ifname, ifindex), ifname);
    auto flag = read_attr(path);
    if (!flag) return unexpected(flag.error().wrap(ifname));
    const bool switched = flag->starts_with('0');
    if (switched) {
        if (auto w = write_flag(ifname, path, "1"); !w) return unexpected(w.error());
        // The threads exist from now on: ask again for their ids.
        HA_TRY_CTX(threaded, list(ifindex), ifname);
        napis = std::move(threaded);
    }
    int changed = 0;
    for (const auto& n : napis) {
        if (n.pid == 0) {
            // Threads we cannot find cannot be placed, and unplaced ones run behind any load:
            // softirq is the better place then.
            if (switched) (void)write_flag(ifname, path, "0");
            return fail(fmt::format("{}: NAPI {} has no thread the kernel reports (Linux 6.8 or "
                                    "later reports them)",
                                    ifname, n.id),
                        std::errc::function_not_supported);
        }
        auto did = place(ifname, n.pid, cpu, priority);
        if (!did) return unexpected(did.error());
        changed += *did ? 1 : 0;
    }
    return changed;
}

}  // namespace ha::nl
