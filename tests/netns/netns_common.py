"""Shared helpers of the netns integration tests: the tools/lab loader, the root/CI gate, status and
events with short timeouts, the client's ARP watcher and the "N passed, N failed" runner."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent.parent
LOG_KEEP_DIR = Path(os.environ.get("FCMHA_NETNS_LOGS", "/tmp/fcmha-netns-logs"))


def load_lab():
    loader = importlib.machinery.SourceFileLoader("lab", str(TOP / "tools" / "lab"))
    spec = importlib.util.spec_from_loader("lab", loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lab"] = mod
    loader.exec_module(mod)
    return mod


lab_mod = load_lab()
MAC_A = lab_mod.MACS["a"]["lan0"]
MAC_B = lab_mod.MACS["b"]["lan0"]

_counter = 0


def new_lab_id(prefix: str) -> str:
    global _counter
    _counter += 1
    # Namespace names carry the id (fcmha<id>-phone2): keep it short.
    return f"{prefix}{os.getpid() % 100000}{_counter}"


def note(msg: str) -> None:
    print(f"    {msg}", flush=True)


def now_mono_us() -> int:
    return time.monotonic_ns() // 1000


def poll(pred, timeout: float, interval: float = 0.005):
    """Polls pred until it returns something truthy; returns (value, seconds waited) or
    (None, seconds waited) at the timeout."""
    t0 = time.monotonic()
    end = t0 + timeout
    while True:
        v = pred()
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() >= end:
            return None, time.monotonic() - t0
        time.sleep(interval)


class ArpWatch:
    """The LAN client asking "who has the cluster IP" every interval_us for the whole test."""

    def __init__(self, lab, phone: str = "phone1", interval_us: int = 500):
        self.lab = lab
        self.phone = phone
        self.path = lab.dir / f"arpwatch-{phone}.log"
        self.proc = lab.start_arp_watch(phone, interval_us=interval_us, duration_ms=600000)
        self.rc: int | None = None
        # The watcher prints "start" once its socket is bound; later checks rely on it running.
        poll(lambda: self.path.exists() and "start " in self.path.read_text(), 5, 0.01)

    def lines(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def replies(self) -> list[tuple[int, str]]:
        """(mono_us, mac) of every change of the answering MAC."""
        out = []
        for line in self.lines():
            if line.startswith("reply "):
                kv = dict(f.split("=", 1) for f in line.split()[1:])
                out.append((int(kv["mono_us"]), kv["mac"]))
        return out

    def conflicts(self) -> list[str]:
        return [line for line in self.lines() if line.startswith("conflict ")]

    def last_mac(self) -> str | None:
        r = self.replies()
        return r[-1][1] if r else None

    def first_answer_after(self, mac: str, mono_us: int) -> int | None:
        for t, m in self.replies():
            if m == mac and t >= mono_us:
                return t
        return None

    def macs_answering_since(self, mono_us: int) -> set[str]:
        """MACs that answered after mono_us, including the one already answering then."""
        before = [m for t, m in self.replies() if t < mono_us]
        macs = {m for t, m in self.replies() if t >= mono_us}
        if before:
            macs.add(before[-1])
        return macs

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.rc = self.proc.returncode
        summary = [line for line in self.lines() if line.startswith("summary ")]
        return summary[-1] if summary else "(no summary)"


class LabTestCase(unittest.TestCase):
    """One fresh lab per test, always torn down; agent logs kept when the test fails."""

    lab_prefix = "n"

    def setUp(self) -> None:
        self.lab = lab_mod.Lab(new_lab_id(self.lab_prefix))
        self.watch: ArpWatch | None = None
        self._children: list[subprocess.Popen] = []
        print(f"\n[{self.id().split('.')[-1]}] lab {self.lab.id}", flush=True)

    def tearDown(self) -> None:
        for p in self._children:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)  # a group we created with start_new_session
                    p.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if self.watch is not None:
            self.watch.stop()
        # Never leave a stopped agent behind: stop_agent sends SIGCONT before SIGTERM.
        if self._failed() or os.environ.get("FCMHA_KEEP_LOGS") == "1":
            dst = LOG_KEEP_DIR / f"{self.id().split('.')[-1]}-{self.lab.id}"
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True, exist_ok=True)
            for box in ("a", "b"):
                for name in ("agent.log", "ha.toml"):
                    src = self.lab.box_dir(box) / name
                    if src.exists():
                        shutil.copy(src, dst / f"{box}-{name}")
            for src in self.lab.dir.glob("arpwatch-*.log"):
                shutil.copy(src, dst / src.name)
            print(f"    logs kept in {dst}", flush=True)
        self.lab.down()

    def _failed(self) -> bool:
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in result.failures + result.errors)

    def start_child(self, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        self._children.append(p)
        return p

    # -- the agent's view ----------------------------------------------------------------------
    def status(self, box: str, timeout: float = 2) -> dict | None:
        """Status with a short timeout: a stopped agent must not stall the test for 10 s."""
        try:
            r = self.lab.hactl(box, "--timeout", str(timeout), "--json", "status")
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError:
            return None

    def events(self, box: str) -> list[dict]:
        r = self.lab.hactl(box, "--timeout", "2", "--limit", "10000", "--json", "events")
        self.assertEqual(r.returncode, 0, f"box {box}: fcm-hactl events: {r.stderr.strip()}")
        return json.loads(r.stdout).get("records", [])

    def probe_once(self, phone: str = "phone2", ms: int = 300) -> dict[str, int]:
        """A second client asks for the cluster IP for ms milliseconds; returns replies per MAC.
        (The long-running watcher prints only changes of the answering MAC.)"""
        r = subprocess.run(["ip", "netns", "exec", self.lab.ns(phone),
                            str(lab_mod.binary("ha_arp_watch")), "eth0", lab_mod.CLUSTER_IP, "1000",
                            str(ms)], capture_output=True, text=True, timeout=ms / 1000 + 10)
        out: dict[str, int] = {}
        for line in r.stdout.splitlines():
            if line.startswith("mac "):
                kv = dict(f.split("=", 1) for f in line.split()[1:])
                out[kv["mac"]] = int(kv["replies"])
        return out

    def failover_log(self, box: str) -> str:
        r = self.lab.hactl(box, "--timeout", "2", "log", "failover")
        return r.stdout.strip()

    def wait_status(self, box: str, pred, timeout: float, what: str, interval: float = 0.005):
        """Waits until pred(status) holds; returns (status, seconds) or fails naming the last
        status seen."""
        last: list[dict | None] = [None]

        def check():
            s = self.status(box)
            last[0] = s
            return s if s is not None and pred(s) else None

        s, dt = poll(check, timeout, interval)
        if s is None:
            self.fail(f"box {box}: {what} not seen within {timeout:.3f} s; last status: "
                      f"{brief(last[0])}")
        return s, dt

    def assert_role(self, box: str, role: str, ha_status: str | None = None) -> dict:
        s = self.status(box)
        self.assertIsNotNone(s, f"box {box}: no status")
        self.assertEqual(s["role"], role, f"box {box}: {brief(s)}")
        if ha_status is not None:
            self.assertEqual(s["ha_status"], ha_status, f"box {box}: {brief(s)}")
        return s

    def up(self, timeout: str = '"50ms"', **kw) -> None:
        t0 = time.monotonic()
        self.lab.up(timeout=timeout, **kw)
        note(f"lab up in {time.monotonic() - t0:.2f} s (heartbeat_timeout = {timeout})")

    def start_watch(self, interval_us: int = 500) -> ArpWatch:
        self.watch = ArpWatch(self.lab, interval_us=interval_us)
        return self.watch

    def assert_no_conflict(self) -> None:
        """Stops the watcher and asserts that no instant had two MACs answering."""
        assert self.watch is not None
        summary = self.watch.stop()
        note(f"client ARP watch: {summary}")
        conflicts = self.watch.conflicts()
        self.assertEqual(conflicts, [], f"two MACs answered for the cluster IP: {conflicts[:5]}")
        self.assertEqual(self.watch.rc, 0, f"ha_arp_watch exit {self.watch.rc}: {summary}")


def brief(s: dict | None) -> str:
    if s is None:
        return "none (agent not answering)"
    p = s.get("peer") or {}
    hb = s.get("heartbeat") or {}
    return (f"role={s.get('role')} ha_status={s.get('ha_status')} state={s.get('state')} "
            f"term={s.get('term')} reason={s.get('last_reason')!r} peer(direct={p.get('direct')} "
            f"lan={p.get('lan')} stale={p.get('agent_stale')} role={p.get('role')} "
            f"seen={p.get('last_seen_ms')}ms) hb(sent={hb.get('sent')} replies={hb.get('replies')} "
            f"lost={hb.get('lost')})")


def main(module_name: str) -> int:
    """Runs the module's tests; prints the summary line the CI greps for."""
    if os.geteuid() != 0:
        msg = "needs root (network namespaces, XDP, bpffs)"
        if os.environ.get("CI") == "true":
            print(f"FAIL: {msg}; CI=true, so this is a failure\n0 passed, 1 failed", flush=True)
            return 1
        print(f"SKIP: {msg}\n0 passed, 0 failed", flush=True)
        return 0
    for tool in ("fcm-ha-agent", "fcm-hactl", "fcm-ha-xdp-pass", "ha_arp_watch"):
        try:
            lab_mod.binary(tool)
        except SystemExit as e:
            print(f"FAIL: {e}\n0 passed, 1 failed", flush=True)
            return 1
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module_name])
    if len(sys.argv) > 1:  # run only the named tests (method names)
        wanted = set(sys.argv[1:])
        suite = unittest.TestSuite(t for s in suite for t in s
                                   if t.id().split(".")[-1] in wanted)
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"suite time {time.monotonic() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


class Trace:
    """Status transitions of one box, timed from a fault instant, for the report."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.marks: dict[str, float] = {}
        self.done: float | None = None
        self.slowest = 0.0

    def first(self, mark: str) -> float | None:
        return self.marks.get(mark)


def trace_status(case: "LabTestCase", box: str, done_pred, timeout: float, t0: float,
                 interval: float = 0.002) -> Trace:
    tr = Trace()
    prev = None
    end = t0 + timeout
    while time.monotonic() < end:
        ts = time.monotonic()
        s = case.status(box)
        te = time.monotonic()
        tr.slowest = max(tr.slowest, te - ts)
        if s is not None:
            p = s.get("peer") or {}
            key = (s["role"], s["ha_status"], p.get("direct"), p.get("lan"), p.get("agent_stale"),
                   s["heartbeat"]["lost"])
            if p.get("direct") is False:
                tr.marks.setdefault("hb_down", te - t0)
            if p.get("agent_stale"):
                tr.marks.setdefault("stale", te - t0)
            if key != prev:
                tr.lines.append(f"{box} @{(ts - t0) * 1000:7.1f}..{(te - t0) * 1000:7.1f} ms: "
                                f"role={key[0]} ha={key[1]} direct={key[2]} lan={key[3]} "
                                f"stale={key[4]} lost={key[5]}")
                prev = key
            if done_pred(s):
                tr.done = te - t0
                return tr
        time.sleep(interval)
    return tr


LabTestCase.trace = lambda self, box, pred, timeout, t0: trace_status(self, box, pred, timeout, t0)
