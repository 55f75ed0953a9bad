#!/usr/bin/env python3
"""bench/takeover/run.py — fault → first ARP reply for the cluster IP from the NEW active's MAC.

  sudo bench/takeover/run.py [--quick] [--readme] [--only fcm|keepalived] [--out FILE]

On the two-box lab of tools/lab (namespaces, heartbeat veth, LAN bridge, client phone1), a client
asks "who has 198.18.1.100" every 100 µs (build/tests/netlink/ha_arp_watch, pinned to one CPU).
For each fault on the active box — agent killed (kill -9), box powered off (agent killed, then its LAN
port and heartbeat link down, back to back through pre-opened netlink sockets), LAN carrier lost
(hardware fault switch on) — it times fault → first reply carrying the other box's MAC, and counts
the rounds in which two MACs answered (dual-active instants). fcm-ha runs with the guide's default
7 s timeout and with "1ms"; keepalived (VRRPv3, unicast peers) runs on the same topology with the
smallest advert interval it accepts (10 ms) and a stable one (50 ms). Then each setting sits idle
for a fixed period and the false takeovers are counted.

Prints the environment and a table; writes JSON (default bench/takeover/results.json) and, with
--readme, the table into the "## Takeover" section of bench/README.md. Needs root and a build in
$BUILD_DIR (default build/). Stops itself after --max-minutes; always removes its namespaces,
pins and processes (it ends only processes it started, by PID / process group).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.machinery
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
_loader = importlib.machinery.SourceFileLoader("lab", str(TOP / "tools" / "lab"))
labmod = _loader.load_module()  # noqa: the lab is a script without .py; SourceFileLoader is the way

CLUSTER_IP = labmod.CLUSTER_IP
MACS = labmod.MACS
LAN_NET = labmod.LAN_NET
PROBE_US = 100  # the client probing interval
IDLE_PROBE_US = 500  # idle watch: a dual answer lasting > 0.5 ms is still seen, at 1/5 the load

# --------------------------------------------------------------------------------------------
# Link faults through rtnetlink sockets opened inside each namespace beforehand: a fault made of
# several steps (power off) lands within microseconds instead of one `ip` process (~5 ms) per step.
# --------------------------------------------------------------------------------------------
NsLinks = labmod.NsLinks  # rtnetlink sockets opened in each namespace beforehand


class AddrEvents:
    """When the cluster IP is added to / removed from a box's lan0, stamped on CLOCK_MONOTONIC by
    a thread reading RTNLGRP_IPV4_IFADDR in that namespace. It splits a takeover into decision
    (fault → address on the new box) and announcement (address → the client's first reply)."""

    RTM_NEWADDR, RTM_DELADDR, IFA_LOCAL, RTMGRP_IPV4_IFADDR = 20, 21, 2, 0x10

    def __init__(self, netns: str):
        self.sock = labmod.netns_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, self.RTMGRP_IPV4_IFADDR))
        self.sock.settimeout(0.1)
        self.want = socket.inet_aton(CLUSTER_IP)
        self.events: list[tuple[int, str]] = []  # (mono_us, "add" | "del")
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            now = time.monotonic_ns() // 1000
            off = 0
            while off + 16 <= len(data):
                ln, typ = struct.unpack_from("=IH", data, off)
                if ln < 16:
                    break
                if typ in (self.RTM_NEWADDR, self.RTM_DELADDR):
                    a = off + 16 + 8  # nlmsghdr + ifaddrmsg
                    while a + 4 <= off + ln:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype == self.IFA_LOCAL and data[a + 4:a + alen] == self.want:
                            self.events.append((now, "add" if typ == self.RTM_NEWADDR else "del"))
                        a += (alen + 3) & ~3
                off += (ln + 3) & ~3

    def first(self, kind: str, since_us: int) -> int | None:
        return next((t for t, k in list(self.events) if k == kind and t >= since_us), None)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=1)
        self.sock.close()


# --------------------------------------------------------------------------------------------
# The client: one ha_arp_watch per repetition, its log parsed afterwards.
# --------------------------------------------------------------------------------------------
class Watch:
    def __init__(self, lab, path: Path, interval_us: int, duration_ms: int, cpu: int | None):
        self.path = path
        cmd = ["ip", "netns", "exec", lab.ns("phone1")]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        cmd += [str(labmod.binary("ha_arp_watch")), "eth0", CLUSTER_IP, str(interval_us),
                str(duration_ms)]
        self.out = open(path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.lines: list[str] = []

    def read(self) -> list[str]:
        return self.path.read_text().splitlines()

    def wait_first(self, mac: str | None, since_us: int, deadline: float) -> int | None:
        """mono_us of the first reply from mac (any MAC when None) at or after since_us."""
        while time.monotonic() < deadline:
            for line in self.read():
                if line.startswith("reply "):
                    kv = kvs(line)
                    if (mac is None or kv["mac"] == mac) and int(kv["mono_us"]) >= since_us:
                        return int(kv["mono_us"])
            if self.proc.poll() is not None:
                return None
            time.sleep(0.002)
        return None

    def stop(self) -> list[str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.lines = self.read()
        return self.lines


def kvs(line: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)


def watch_facts(lines: list[str], t0_us: int, new_mac: str) -> dict:
    all_conflicts = [kvs(x) for x in lines if x.startswith("conflict ")]
    conflicts = [c for c in all_conflicts if int(c["mono_us"]) >= t0_us]
    changes = [kvs(x) for x in lines if x.startswith("reply ")]
    after = [c for c in changes if int(c["mono_us"]) >= t0_us]
    first_new = next((int(c["mono_us"]) for c in after if c["mac"] == new_mac), None)
    summary = next((kvs(x) for x in lines if x.startswith("summary ")), {})
    return {
        "takeover_ms": None if first_new is None else (first_new - t0_us) / 1000.0,
        "conflicts": len(conflicts),
        # Two MACs answering in the steady state before the fault (a false takeover).
        "conflicts_before_fault": len(all_conflicts) - len(conflicts),
        "first_conflict_ms": (int(conflicts[0]["mono_us"]) - t0_us) / 1000.0 if conflicts else None,
        # MAC changes after the fault beyond the one expected: the address flapped back and forth.
        "mac_changes_after_fault": len(after),
        "rounds": int(summary.get("rounds", 0)),
    }


# --------------------------------------------------------------------------------------------
# The two systems under test, behind one small interface.
# --------------------------------------------------------------------------------------------
def other(box: str) -> str:
    return "b" if box == "a" else "a"


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class System:
    name = ""
    lab = None
    started = False  # down() once, and only for what up() began: PIDs are never reused blindly

    def open_links(self) -> None:
        self.links = {"lan": NsLinks(self.lab.ns("lan"), ["pa", "pb"]),
                      "a": NsLinks(self.lab.ns("a"), ["hb0"]),
                      "b": NsLinks(self.lab.ns("b"), ["hb0"])}
        self.addr = {box: AddrEvents(self.lab.ns(box)) for box in ("a", "b")}

    def close_links(self) -> None:
        for nl in getattr(self, "links", {}).values():
            nl.close()
        for ae in getattr(self, "addr", {}).values():
            ae.close()
        self.links, self.addr = {}, {}

    def kill_box(self, box: str) -> None:
        raise NotImplementedError

    def lan_drops(self, box: str) -> dict:
        """What the box's LAN program dropped for the cluster IP so far (fcm-ha only)."""
        return {}

    def fault(self, kind: str, box: str) -> int:
        """Inflict the fault on box; returns CLOCK_MONOTONIC µs just before the first step."""
        t0 = time.monotonic_ns() // 1000
        if kind == "kill":
            self.kill_box(box)
        elif kind == "power":
            # The agent dies first, as with a real power cut: killed last, it could still see its
            # LAN carrier drop and hand over cleanly, which a box without power never does.
            self.kill_box(box)
            self.links["lan"].send_link(f"p{box}", False)
            self.links[box].send_link("hb0", False)
            self.links["lan"].check()
            self.links[box].check()
        elif kind == "lan":
            self.links["lan"].send_link(f"p{box}", False)
            self.links["lan"].check()
        else:
            raise ValueError(kind)
        return t0

    def links_up(self, box: str) -> None:
        self.links["lan"].send_link(f"p{box}", True)
        self.links[box].send_link("hb0", True)
        self.links["lan"].check()
        self.links[box].check()


class Fcm(System):
    def __init__(self, lab_id: str, timeout: str, label: str, deadline_s: float):
        self.lab = labmod.Lab(lab_id)
        self.timeout = timeout
        self.name = label
        self.deadline_s = deadline_s  # fault → new MAC must happen within this

    def up(self) -> None:
        self.started = True
        self.lab.up(timeout=self.timeout, sw_switch=True, hw_switch=True)
        self.open_links()

    def down(self) -> None:
        if not self.started:
            return
        self.started = False
        self.close_links()
        self.lab.down()

    def active(self) -> str | None:
        return self.lab.active_box()

    def kill_box(self, box: str) -> None:
        pid = self.lab.agent_pid(box)
        if pid:
            os.kill(pid, signal.SIGKILL)

    def lan_drops(self, box: str) -> dict:
        r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned",
                            f"{self.lab.pin_root(box)}/lan0/ha_stats_v2"],
                           capture_output=True, text=True)
        try:
            total: dict = {}
            for cpu in json.loads(r.stdout)[0]["formatted"]["values"]:
                for k, v in cpu["value"].items():
                    total[k] = total.get(k, 0) + v
            return {k: total.get(k, 0) for k in ("fence_arp", "fence_ip4")}
        except (ValueError, LookupError, TypeError):
            return {}

    def after_fault(self, kind: str, box: str) -> None:
        if kind in ("kill", "power"):
            pid = self.lab.state["pids"].get(box)
            if pid:
                reap(pid)

    def restore(self, kind: str, box: str) -> None:
        """Repair box (the old active) and wait for a Dual pair. Normally the repaired box is the
        standby, but when no takeover happened it may still be the active: either is accepted
        (the next repetition faults whichever box is active) and the run goes on."""
        if kind in ("power", "lan"):
            self.links_up(box)
        if kind in ("kill", "power"):
            self.lab.start_agent(box)

        def paired() -> bool:
            st = {b: self.lab.status(b) or {} for b in ("a", "b")}
            roles = sorted(st[b].get("role", "") for b in st)
            return roles == ["Active", "Standby"] and all(
                st[b].get("ha_status") == "Dual" for b in st)
        self.lab.wait("a Dual pair after the repair", paired, 60, 0.02)

    def log_marks(self) -> dict:
        out = {}
        for box in ("a", "b"):
            p = self.lab.box_dir(box) / "agent.log"
            text = p.read_text(errors="replace") if p.exists() else ""
            out[box] = {"to_active": len(re.findall(r"to=Active\b", text)),
                        "to_probing": len(re.findall(r"to=Probing\b", text))}
        return out

    def logs(self) -> dict:
        return {box: str(self.lab.box_dir(box) / "agent.log") for box in ("a", "b")}


class Keepalived(System):
    def __init__(self, lab_id: str, advert_s: float, label: str, workdir: Path):
        self.lab = labmod.Lab(lab_id)
        self.advert = advert_s
        self.name = label
        self.work = workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.deadline_s = 5.0
        self.starts = {"a": 0, "b": 0}

    def conf(self, box: str) -> Path:
        text = (HERE / "keepalived.conf.in").read_text()
        subst = {"BOX": box, "PRIORITY": "150" if box == "a" else "100",
                 "ADVERT": f"{self.advert:g}", "SRC": LAN_NET[box], "PEER": LAN_NET[other(box)],
                 "VIP": f"{CLUSTER_IP}/24"}
        for k, v in subst.items():
            text = text.replace(f"@{k}@", v)
        p = self.work / f"keepalived-{box}.conf"
        p.write_text(text)
        return p

    def log_path(self, box: str) -> Path:
        return self.work / f"keepalived-{box}.{self.starts[box]}.log"

    def start(self, box: str) -> None:
        self.starts[box] += 1
        for f in (f"ka-{box}.pid", f"ka-{box}-vrrp.pid"):
            (self.work / f).unlink(missing_ok=True)
        conf = self.conf(box)
        log = open(self.log_path(box), "w")
        cmd = ["ip", "netns", "exec", self.lab.ns(box), "keepalived", "--dont-fork",
               "--log-console", "--log-detail", "--no-syslog", "--vrrp", "-f", str(conf),
               "-p", str(self.work / f"ka-{box}.pid"), "-r", str(self.work / f"ka-{box}-vrrp.pid"),
               "-i", f"fcmbench_{box}"]
        self.procs[box] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        log.close()
        self.lab.state["extra_pids"].append(self.procs[box].pid)
        self.lab.save()

    def has_vip(self, box: str) -> bool:
        out = self.lab.exec_in(box, "ip", "-4", "-o", "addr", "show", "dev", "lan0", capture=True)
        return f" {CLUSTER_IP}/" in out

    def entered(self, box: str, state: str) -> int:
        p = self.log_path(box)
        return p.read_text(errors="replace").count(f"Entering {state} STATE") if p.exists() else 0

    def up(self) -> None:
        self.started = True
        self.lab.dir.mkdir(parents=True, exist_ok=True)
        self.lab.save()
        self.lab.create_topology()
        self.open_links()
        self.start("a")
        self.lab.wait("keepalived a MASTER", lambda: self.has_vip("a"), 30, 0.02)
        self.start("b")
        self.lab.wait("keepalived b BACKUP", lambda: self.entered("b", "BACKUP") > 0, 30, 0.02)
        self.settle()

    def down(self) -> None:
        if not self.started:
            return
        self.started = False
        for box, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.close_links()
        self.lab.down()

    def active(self) -> str | None:
        held = [b for b in ("a", "b") if self.has_vip(b)]
        return held[0] if len(held) == 1 else None

    def kill_box(self, box: str) -> None:
        # The parent and its VRRP child at once: a crash of the daemon, not a clean stop. The
        # child may leave our process group, so it is named by /proc (children of our PID only).
        pid = self.procs[box].pid
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        for k in kids:
            try:
                os.kill(int(k), signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.kill(pid, signal.SIGKILL)

    def after_fault(self, kind: str, box: str) -> None:
        if kind in ("kill", "power"):
            self.procs[box].wait()

    def restore(self, kind: str, box: str) -> None:
        """The repair of every fault is the same: stop keepalived on the box (after a LAN cut it
        is still running and, seen here, still MASTER), remove the VIP a killed daemon leaves
        behind, links up, start it again as BACKUP and wait for one stable master."""
        p = self.procs[box]
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill_box(box)
                p.wait()
        if self.has_vip(box):
            self.lab.exec_in(box, "ip", "addr", "del", f"{CLUSTER_IP}/24", "dev", "lan0")
        if kind in ("power", "lan"):
            self.links_up(box)
        self.start(box)
        self.lab.wait(f"keepalived {box} BACKUP", lambda: self.entered(box, "BACKUP") > 0, 30, 0.02)
        self.settle()

    def settle(self, hold_s: float = 0.5, timeout: float = 30) -> str:
        """Wait until one box alone has held the VIP for hold_s. At 10 ms adverts the pair may
        flap on this machine (false takeovers), so either box may end up the master."""
        end = time.monotonic() + timeout
        held, since = None, time.monotonic()
        while time.monotonic() < end:
            now_held = self.active()
            if now_held != held:
                held, since = now_held, time.monotonic()
            elif held and time.monotonic() - since >= hold_s:
                return held
            time.sleep(0.02)
        raise TimeoutError(f"keepalived: no stable master within {timeout:.0f} s")

    def log_marks(self) -> dict:
        return {box: {"to_master": self.entered(box, "MASTER")} for box in ("a", "b")}

    def logs(self) -> dict:
        return {box: str(self.log_path(box)) for box in ("a", "b")}


# --------------------------------------------------------------------------------------------
# Measurement loop
# --------------------------------------------------------------------------------------------
FAULTS = {"kill": "agent killed (kill -9)", "power": "box powered off", "lan": "LAN carrier lost"}


@dataclass
class Cell:
    system: str
    fault: str
    samples: list = field(default_factory=list)  # per repetition: watch_facts + box
    error: str = ""


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile (with few samples p99 is the max, as it should read)."""
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def summarize(cell: Cell) -> dict:
    t = sorted(s["takeover_ms"] for s in cell.samples if s["takeover_ms"] is not None)
    out = {"n": len(cell.samples), "answered": len(t),
           "conflicts": sum(s["conflicts"] for s in cell.samples),
           "conflicts_before_fault": sum(s["conflicts_before_fault"] for s in cell.samples),
           "reps_with_conflict": sum(1 for s in cell.samples if s["conflicts"])}
    ad = sorted(s["addr_added_ms"] for s in cell.samples if s.get("addr_added_ms") is not None)
    if ad:
        out["addr_added_p50_ms"] = statistics.median(ad)
    if t:
        med = statistics.median(t)
        out |= {"p50_ms": med, "p99_ms": pct(t, 99), "max_ms": t[-1], "min_ms": t[0],
                "mad_ms": statistics.median(abs(x - med) for x in t)}
    return out


def run_cell(sysm: System, kind: str, reps: int, work: Path, cpu: int | None, end_by: float,
             dwell_s: float, log) -> Cell:
    cell = Cell(sysm.name, kind)
    for i in range(reps):
        if time.monotonic() > end_by:
            log(f"  {sysm.name} {kind}: time budget spent after {i} repetitions")
            break
        wpath = work / f"watch-{sysm.name}-{kind}-{i}.log".replace(" ", "_")
        w = Watch(sysm.lab, wpath, PROBE_US, int((sysm.deadline_s + dwell_s + 30) * 1000), cpu)
        try:
            if w.wait_first(None, 0, time.monotonic() + 5) is None:
                raise RuntimeError("the client gets no answer for the cluster IP before the fault")
            time.sleep(0.2)  # the client's steady state before the fault
            # Asked last: a false takeover during the warm-up must not make us fault the standby.
            box = sysm.lab.wait("an active box", sysm.active, 30, 0.02)
            new_mac = MACS[other(box)]["lan0"]
            drops_before = sysm.lan_drops(other(box))
            fault_wall = datetime.datetime.now().strftime("%H:%M:%S.%f")  # one clock reading
            t0 = sysm.fault(kind, box)
            got = w.wait_first(new_mac, t0, time.monotonic() + sysm.deadline_s)
            time.sleep(dwell_s)  # keep watching: the old box must stay silent afterwards
        finally:
            lines = w.stop()
        sysm.after_fault(kind, box)
        drops_after = sysm.lan_drops(other(box))
        facts = watch_facts(lines, t0, new_mac) | {"rep": i, "faulted_box": box, "watch_log": str(wpath),
                                                   "fault_wall": fault_wall}
        # Cluster-IP frames the new active's own fence dropped during the repetition: the new
        # active must never fence itself.
        facts["new_active_fence_drops"] = {k: drops_after[k] - drops_before.get(k, 0)
                                           for k in drops_after}
        added = sysm.addr[other(box)].first("add", t0)
        removed = sysm.addr[box].first("del", t0)
        facts["addr_added_ms"] = None if added is None else (added - t0) / 1000.0
        facts["addr_removed_old_ms"] = None if removed is None else (removed - t0) / 1000.0
        cell.samples.append(facts)
        ms = "none" if got is None else f"{facts['takeover_ms']:.2f} ms"
        ad = facts["addr_added_ms"]
        ms += f" (address added at {'–' if ad is None else f'{ad:.2f}'} ms)"
        log(f"  {sysm.name:16s} {kind:5s} #{i:<2d} box {box}: new MAC after {ms}, "
            f"conflicts {facts['conflicts']} (before fault {facts['conflicts_before_fault']}), "
            f"MAC changes {facts['mac_changes_after_fault']}"
            + (f", new active's fence dropped {facts['new_active_fence_drops']}"
               if any(facts["new_active_fence_drops"].values()) else ""))
        try:
            sysm.restore(kind, box)
        except (TimeoutError, RuntimeError) as e:
            cell.error = f"repair after repetition {i} failed: {e}"
            log(f"  {sysm.name}: {cell.error}; the remaining cells of this system are skipped")
            break
    return cell


def idle_check(sysm: System, seconds: float, work: Path, cpu: int | None, log) -> dict:
    box = sysm.lab.wait("an active box", sysm.active, 30, 0.02)
    before = sysm.log_marks()
    wpath = work / f"idle-{sysm.name}.log".replace(" ", "_")
    w = Watch(sysm.lab, wpath, IDLE_PROBE_US, int(seconds * 1000), cpu)
    w.proc.wait(timeout=seconds + 30)
    lines = w.stop()
    after = sysm.log_marks()
    changes = [x for x in lines if x.startswith("reply ")]
    res = {"seconds": seconds, "probe_us": IDLE_PROBE_US, "active_at_start": box,
           # the first reply line is the client learning the MAC; every later one is a move
           "mac_moves": max(0, len(changes) - 1),
           "conflicts": sum(1 for x in lines if x.startswith("conflict ")),
           "log_transitions": {b: {k: after[b][k] - before[b][k] for k in after[b]} for b in after}}
    log(f"  {sysm.name:16s} idle {seconds:.0f} s: cluster IP moved {res['mac_moves']} times, "
        f"conflicts {res['conflicts']}, log transitions {res['log_transitions']}")
    return res


# --------------------------------------------------------------------------------------------
# Environment, report, README
# --------------------------------------------------------------------------------------------
def environment() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    ka = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
    rev = subprocess.run(["git", "-C", str(TOP), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return {"kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
            "governor": gov.read_text().strip() if gov.exists() else "n/a (VM)",
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
            "keepalived": (ka.stdout + ka.stderr).splitlines()[0] if ka.returncode == 0 else "absent",
            "git": rev.stdout.strip(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "probe_us": PROBE_US}


def fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table(results: dict) -> str:
    rows = ["| system | fault | n | p50 ms | p99 ms | max ms | MAD ms | address added p50 ms | dual-answer rounds after fault (reps) | before fault |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        s = c["summary"]
        n = f"{s['answered']}/{s['n']}" if s["answered"] != s["n"] else str(s["n"])
        rows.append(f"| {c['system']} | {FAULTS[c['fault']]} | {n} | {fmt(s.get('p50_ms'))} | "
                    f"{fmt(s.get('p99_ms'))} | {fmt(s.get('max_ms'))} | {fmt(s.get('mad_ms'))} | "
                    f"{fmt(s.get('addr_added_p50_ms'))} | "
                    f"{s['conflicts']} ({s['reps_with_conflict']}) | {s['conflicts_before_fault']} |")
    if results.get("idle"):
        rows += ["", "| system | idle period | false takeovers (cluster IP moved) | dual-answer rounds | log transitions |",
                 "|---|---|---|---|---|"]
        for name, r in results["idle"].items():
            tr = "; ".join(f"{b}: " + ", ".join(f"{k} {v}" for k, v in d.items())
                           for b, d in r["log_transitions"].items())
            rows.append(f"| {name} | {r['seconds']:.0f} s | {r['mac_moves']} | {r['conflicts']} | {tr} |")
    for err in results.get("errors", []):
        rows += ["", f"Error: {err}"]
    e = results["env"]
    rows += ["", f"Environment: kernel {e['kernel']}, {e['cpu']}, {e['cores']} cores, governor "
                 f"{e['governor']}, load {' '.join(e['loadavg_start'])} at start; {e['keepalived']}; "
                 f"git {e['git']}; {e['date_utc']} UTC; client probe every {e['probe_us']} µs."]
    return "\n".join(rows)


INTRO = """# Benchmarks

Each folder under bench/ answers one question with a distribution (p50/p99/max, several runs),
prints the environment next to the numbers and writes a machine-readable file beside this table.
The machine the numbers below come from is a shared, noisy 2-core VM: compare rows of one run
with each other, not with another machine or another day.
"""

BEGIN = "<!-- takeover-results:begin (bench/takeover/run.py --readme) -->"
END = "<!-- takeover-results:end -->"


def update_readme(path: Path, tbl: str) -> None:
    """Replace only the generated block inside our section; others' sections stay as they are."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{tbl}\n{END}"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        text = pre + block + rest.split(END, 1)[1]
    elif "## Takeover" in text:
        head, tail = text.split("## Takeover", 1)
        nxt = re.search(r"^## ", tail, re.M)
        sect, after = (tail[:nxt.start()], tail[nxt.start():]) if nxt else (tail, "")
        text = head + "## Takeover" + sect.rstrip("\n") + "\n\n" + block + "\n\n" + after
    else:
        if not text:
            text = INTRO
        text = text.rstrip("\n") + "\n\n## Takeover\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2/1 repetitions, 5 s idle")
    ap.add_argument("--reps-fast", type=int, default=10, help="repetitions per cell, 1 ms / VRRP")
    ap.add_argument("--reps-slow", type=int, default=3, help="repetitions per cell, 7 s timeout")
    ap.add_argument("--idle", type=float, default=45, help="idle seconds for false takeovers")
    ap.add_argument("--only", choices=["fcm", "keepalived"], help="run one system only")
    ap.add_argument("--faults", default="kill,power,lan", help="comma list of kill,power,lan")
    ap.add_argument("--timeouts", default="1ms,7", help="fcm-ha settings to run: comma list of 1ms,7")
    ap.add_argument("--cpu", type=int, default=1, help="CPU for the client prober (-1: no pin)")
    ap.add_argument("--stable-advert", type=float, default=0.05, help="keepalived stable advert s")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    ap.add_argument("--max-minutes", type=float, default=15, help="hard budget for the run")
    ap.add_argument("--keep-logs", action="store_true", help="keep the work dir (watch/agent logs)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("run.py: needs root (network namespaces, XDP)", file=sys.stderr)
        return 2
    faults = [f for f in a.faults.split(",") if f]
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        print(f"run.py: unknown fault '{bad[0]}' (kill, power, lan)", file=sys.stderr)
        return 2
    if a.quick:
        a.reps_fast, a.reps_slow, a.idle = 2, 1, 5
    if a.reps_fast < 1 or a.reps_slow < 1 or a.idle < 0:
        print("run.py: repetitions must be >= 1 and --idle >= 0", file=sys.stderr)
        return 2
    cpu = None if a.cpu < 0 else a.cpu
    start = time.monotonic()
    end_by = start + a.max_minutes * 60

    def log(msg: str) -> None:
        print(f"{time.monotonic() - start:7.1f}s {msg}", flush=True)

    # SIGTERM/SIGHUP unwind through the finally blocks like Ctrl-C does.
    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    env = environment()
    print("takeover benchmark — environment:")
    for k, v in env.items():
        print(f"  {k:14s} {v}")
    work = Path(tempfile.mkdtemp(prefix="fcm-takeover-"))
    tag = f"{os.getpid() % 100000}"
    systems: list[tuple[System, int]] = []
    timeouts = [t for t in a.timeouts.split(",") if t]
    if any(t not in ("1ms", "7") for t in timeouts):
        print(f"run.py: --timeouts takes 1ms and/or 7, not '{a.timeouts}'", file=sys.stderr)
        return 2
    if a.only in (None, "fcm"):
        if "1ms" in timeouts:
            systems.append((Fcm(f"tk{tag}f1", '"1ms"', "fcm-ha 1 ms", 3.0), a.reps_fast))
        if "7" in timeouts:
            systems.append((Fcm(f"tk{tag}f7", "7", "fcm-ha 7 s", 25.0), a.reps_slow))
    if a.only in (None, "keepalived"):
        systems += [(Keepalived(f"tk{tag}k1", 0.01, "keepalived 10 ms", work), a.reps_fast),
                    (Keepalived(f"tk{tag}k5", a.stable_advert,
                                f"keepalived {a.stable_advert * 1000:g} ms", work), a.reps_fast)]
    results = {"env": env, "cells": [], "idle": {}, "complete": False, "errors": [],
               "args": {k: str(v) for k, v in vars(a).items()}}
    rc = 0
    try:
        for sysm, reps in systems:
            log(f"{sysm.name}: bringing up the lab")
            sysm.up()
            try:
                for kind in faults:
                    cell = run_cell(sysm, kind, reps, work, cpu, end_by, 0.3, log)
                    results["cells"].append({"system": cell.system, "fault": kind,
                                             "summary": summarize(cell), "samples": cell.samples,
                                             "error": cell.error})
                    if cell.error:
                        results["errors"].append(f"{cell.system}: {cell.error}")
                        break
                # The 7 s setting can't flap at idle the way 1 ms can; its idle time goes elsewhere.
                if (a.idle > 0 and sysm.name != "fcm-ha 7 s" and time.monotonic() + a.idle < end_by
                        and not (results["cells"] and results["cells"][-1]["error"])):
                    results["idle"][sysm.name] = idle_check(sysm, a.idle, work, cpu, log)
            except BaseException:
                keep = work / f"logs-{sysm.name}".replace(" ", "_")
                for box, p in sysm.logs().items():
                    if Path(p).exists():
                        keep.mkdir(exist_ok=True)
                        shutil.copy(p, keep / f"{box}.log")
                log(f"{sysm.name}: failed; box logs copied to {keep}")
                a.keep_logs = True
                raise
            finally:
                if isinstance(sysm, Fcm) and a.keep_logs:
                    keep = work / f"logs-{sysm.name}".replace(" ", "_")
                    keep.mkdir(exist_ok=True)
                    for box, p in sysm.logs().items():
                        if Path(p).exists():
                            shutil.copy(p, keep / f"{box}.log")
                sysm.down()
        results["complete"] = time.monotonic() < end_by and not results["errors"]
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        rc = 130
    except Exception as e:  # noqa: report, clean up, keep whatever was measured
        log(f"error: {e}")
        rc = 1
    finally:
        for sysm, _ in systems:
            try:
                sysm.down()
            except Exception:
                pass
        env["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        env["wall_s"] = round(time.monotonic() - start, 1)
        if results["cells"]:
            tbl = table(results)
            print("\n" + tbl)
            a.out.write_text(json.dumps(results, indent=1))
            print(f"\nJSON: {a.out}")
            if a.readme and rc == 0:
                update_readme(TOP / "bench" / "README.md", tbl)
                print(f"table written into {TOP / 'bench' / 'README.md'}")
        if a.keep_logs:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    # Any dual-answering instant of fcm-ha fails the run: the benchmark doubles as a check.
    fcm_conflicts = sum(c["summary"]["conflicts"] + c["summary"]["conflicts_before_fault"]
                        for c in results["cells"]
                        if c["system"].startswith("fcm-ha"))
    fcm_conflicts += sum(r["conflicts"] for n, r in results["idle"].items() if n.startswith("fcm-ha"))
    if rc == 0 and fcm_conflicts:
        print(f"FAIL: fcm-ha had {fcm_conflicts} dual-answering rounds")
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
