// Announcer: ARP/ND on the LAN interface through an AF_PACKET socket. It probes whether anyone
// else holds the cluster IP (RFC 5227 ARP probe, or an RFC 4862 DAD neighbour solicitation for
// IPv6) and, after a takeover, announces the IP (gratuitous ARP / unsolicited NA) in bursts so
// switches and phones move to our MAC at once.
//
// Loop thread only, no threads, no sleeps. The loop polls fd() for POLLIN and calls
// on_readable(now); it arms its timer for next_deadline() and calls on_deadline(now) when it
// fires. Both return the probe's result once, when it is known.
//
// Probe timing: RFC 5227 §2.1.1 spaces 3 probes 1-2 s apart and then waits 2 s, because it
// protects hosts that may sleep; here the box that might hold the IP is our peer, whose kernel
// answers ARP within microseconds (XDP drops the answer only when it fenced itself). We default to
// 3 probes 1 ms apart and a 1 ms wait after the last (about 3 ms in all); ProbeOptions makes it
// longer on LANs with slow switches. A conflict ends the probe at once.
//
// The socket receives nothing while idle (bound with protocol 0); probing binds it to ARP or IPv6,
// behind a classic BPF filter that lets only ARP and ND messages through, and ignores our own
// outgoing frames (PACKET_IGNORE_OUTGOING).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/clock.hpp"
#include "common/net_types.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::nl {

struct ProbeOptions {
    unsigned count = 3;
    std::chrono::microseconds interval{1000};
    std::chrono::microseconds wait_after_last{1000};
};

struct AnnounceOptions {
    // Frames per burst: two back to back, so one lost frame does not leave a switch on the old
    // port for a whole repeat interval.
    unsigned burst = 2;
    // Repeats after the first burst (keepalived sends a second burst too; phones that missed
    // the first, e.g. while their port renegotiated, catch a later one).
    std::vector<std::chrono::milliseconds> repeats{
        std::chrono::milliseconds(100), std::chrono::milliseconds(500),
        std::chrono::milliseconds(1000), std::chrono::milliseconds(2000)};
};

struct ProbeResult {
    IpAddr ip;
    bool conflict = false;
    MacAddr by;  // the other MAC, when conflict
};

class Announcer {
  public:
    // Reads the interface's MAC address (SIOCGIFHWADDR). Errors: ENODEV, EPERM without
    // CAP_NET_RAW, EINVAL for an interface without an Ethernet address.
    static Result<Announcer> create(int ifindex);

    // Borrowed: owned by the announcer; poll it for POLLIN, never close it.
    [[nodiscard]] int fd() const { return sock_.get(); }
    [[nodiscard]] const MacAddr& mac() const { return mac_; }
    [[nodiscard]] int ifindex() const { return ifindex_; }

    // Starts a probe for ip (IPv4: ARP probe; IPv6: DAD NS) and sends the first frame now.
    // Replaces a probe already running. Errors: the first send failed (ENETDOWN, ENXIO...).
    Status probe(const IpAddr& ip, TimePoint now, const ProbeOptions& opts = {});
    [[nodiscard]] bool probing() const { return probe_.has_value(); }
    void cancel_probe();

    // Sends a burst now and schedules the repeats. mac is the address to announce (ours by
    // default). Replaces an announcement already scheduled. Errors: the first burst failed.
    Status announce(const IpAddr& ip, TimePoint now, const AnnounceOptions& opts = {});
    Status announce(const IpAddr& ip, const MacAddr& mac, TimePoint now,
                    const AnnounceOptions& opts = {});
    // Stops scheduled repeats (call when releasing the IP: a repeat after release would pull
    // traffic back to us).
    void cancel_announce() { announce_.reset(); }

    // Earliest time on_deadline() has work; nullopt when idle.
    [[nodiscard]] std::optional<TimePoint> next_deadline() const;
    // Sends due probes and repeats. Returns the result once the probe window ended with no
    // conflict. A probe during which any frame failed to send ends in an error instead: "nobody
    // answered" proves nothing if we did not ask. Failed repeats are counted and logged only.
    Result<std::optional<ProbeResult>> on_deadline(TimePoint now);
    // Reads every queued frame. Returns the result when a conflicting claim ended the probe.
    Result<std::optional<ProbeResult>> on_readable(TimePoint now);

    struct Counters {
        std::uint64_t frames_sent = 0;
        std::uint64_t send_errors = 0;
        std::uint64_t frames_seen = 0;
        std::uint64_t conflicts = 0;
    };
    [[nodiscard]] const Counters& counters() const { return counters_; }

  private:
    Announcer(UniqueFd sock, int ifindex, MacAddr mac)
        : sock_(std::move(sock)), ifindex_(ifindex), mac_(mac) {}
    struct Probe {
        IpAddr ip;
        ProbeOptions opts;
        unsigned sent = 0;
        unsigned failed = 0;
        int last_errno = 0;
        TimePoint next_send;
        TimePoint end;
    };
    struct Announce {
        IpAddr ip;
        MacAddr mac;
        AnnounceOptions opts;
        TimePoint start;
        std::size_t next_repeat = 0;
    };
    Status bind_protocol(std::uint16_t eth_proto);
    Status send_frame(std::span<const std::uint8_t> frame, std::uint16_t eth_proto);
    Status send_probe_frame(Probe& p, TimePoint now);
    Status send_burst(const Announce& a);
    ProbeResult finish_probe(bool conflict, const MacAddr& by);

    UniqueFd sock_;
    int ifindex_ = 0;
    MacAddr mac_;
    std::optional<Probe> probe_;
    std::optional<Announce> announce_;
    Counters counters_;
};

}  // namespace ha::nl
