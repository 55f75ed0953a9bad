"""tools/pbx/pbx.py — Kamailio as the PBX of the fcm-ha lab, sipp phones, and the call-failover drill.

Import it next to tools/lab (register the module in sys.modules before exec_module: dataclasses
need it):

    loader = importlib.machinery.SourceFileLoader("pbx", "/work/main/tools/pbx/pbx.py")
    spec = importlib.util.spec_from_loader("pbx", loader)
    pbx = importlib.util.module_from_spec(spec); sys.modules["pbx"] = pbx; loader.exec_module(pbx)

    lab = pbx.lab_mod.Lab("x")     # tools/lab's Lab (or pbx.PbxLab, which adds Kamailio by itself)
    pbx.up(lab, timeout='"50ms"')  # each box's Kamailio config + SQLite DB, then the pair
    phones = pbx.Phones(lab)       # sipp phones in the phone namespaces
    phones.start_uas("phone2", "1002"); phones.register("phone2", "1002")
    call = phones.call("phone1", "1001", "1002", hold_ms=6000)   # runs in the background
    result = call.wait()           # CallResult: ok, bye_status, SIP events on CLOCK_MONOTONIC
    pbx.power_off(lab, "a")        # box failure: agent + Kamailio SIGKILLed, links down
    pbx.pbx_demo(lab)              # the whole drill: timeline and PASS/FAIL per claim of the guide

Kamailio listens only on the cluster IP (udp and tcp :5060, the same socket strings on both boxes)
with registrations (usrloc) and dialogs in kamailio.sqlite and accounting in acc.sqlite under
/srv/fcm-pbx/db, the lab's sqlite-mode sync root: the standby's copy is what its Kamailio loads
when it starts on takeover.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent


def _load_lab():
    if "lab" in sys.modules and hasattr(sys.modules["lab"], "Lab"):
        return sys.modules["lab"]
    loader = importlib.machinery.SourceFileLoader("lab", str(TOP / "tools" / "lab"))
    spec = importlib.util.spec_from_loader("lab", loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lab"] = mod
    loader.exec_module(mod)
    return mod


lab_mod = _load_lab()

CLUSTER_IP = lab_mod.CLUSTER_IP
PBX_DATA = lab_mod.PBX_DATA
PHONES = lab_mod.PHONES
SIP_PORT = 5060
MODULE_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
SCHEMA_DIR = Path("/usr/share/kamailio/db_sqlite")
# Two databases, one per writer pattern. Kamailio 5.6's db_sqlite sets no busy timeout, so a
# write that meets another process's write lock is lost ("database is locked"). A call's dialog
# update (the ACK's worker) and its accounting row (the 200 OK's worker) come within microseconds
# of each other: in one file they collided in most runs and cost the odd acc row. SQLite's write
# lock is per file, so accounting gets a file of its own.
# standard-create.sql holds the version table every module checks at start: both files get it.
DATABASES = {"kamailio.sqlite": ("standard", "usrloc", "dialog"), "acc.sqlite": ("standard", "acc")}
DB_NAME = "kamailio.sqlite"  # registrations and dialogs
ACC_DB_NAME = "acc.sqlite"  # accounting (CDR rows)
DB_URL = f"sqlite://{PBX_DATA}/db/{DB_NAME}"
ACC_DB_URL = f"sqlite://{PBX_DATA}/db/{ACC_DB_NAME}"
# Columns acc's db_extra fills in: which box wrote the record is the point of the drill.
ACC_EXTRA_COLUMNS = ("src_ip", "dst_ouser", "src_user", "box")
RTP_PORT = 6000  # the callee's echo port
RTP_FRAME = 160  # 20 ms of PCMU


def kamailio_config(box: str) -> str:
    text = (HERE / "kamailio.cfg.in").read_text()
    for key, value in {"BOX": box, "CLUSTER_IP": CLUSTER_IP, "MODULE_DIR": MODULE_DIR,
                       "DB_URL": DB_URL, "ACC_DB_URL": ACC_DB_URL}.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError(f"pbx: unfilled placeholders in kamailio.cfg.in: {leftover}")
    return text


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def create_db(path: Path, schemas: tuple[str, ...]) -> None:
    """A fresh Kamailio DB from the packaged schemas, built beside the target and renamed in, so
    the sync watcher never sees a half-created database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        for name in schemas:
            con.executescript((SCHEMA_DIR / f"{name}-create.sql").read_text())
        if "acc" in schemas:
            for col in ACC_EXTRA_COLUMNS:
                con.execute(f"ALTER TABLE acc ADD COLUMN {col} VARCHAR(64) DEFAULT '' NOT NULL")
        con.commit()
        # WAL is a property of the file, so it holds for every Kamailio connection: readers (the
        # sync engine's backup-API snapshots) then never block Kamailio's writers. Kamailio 5.6's
        # db_sqlite sets no busy timeout: a writer that meets a lock loses its row ("database is
        # locked"), and its db_set_journal_mode modparam cannot select WAL.
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"pbx: {tmp}: journal_mode stayed {mode!r}, wanted 'wal'")
    finally:
        con.close()
    os.replace(tmp, path)


def kamailio_paths(lab, box: str) -> tuple[Path, Path]:
    """(config file, runtime dir): box-local, outside the sync roots, since each box's config
    names the box in its Server header."""
    d = lab.box_dir(box)
    return d / "kamailio.cfg", d / "kamailio-run"


def service_toml(lab, box: str, probe_interval: str = "200ms", probe_timeout: str = "100ms",
                 probe_failures: int = 10) -> str:
    cfg, run = kamailio_paths(lab, box)
    # exec: Kamailio's main process is the group leader the agent started; -DD keeps it in the
    # foreground without daemonizing, so every worker stays in the agent's process group.
    start = f"exec kamailio -DD -E -m 32 -M 4 -Y {run} -f {cfg}"
    return f"""[service]
start = "{start}"
stop_timeout = "2s"
probe = "sip"
probe_interval = "{probe_interval}"
probe_timeout = "{probe_timeout}"
probe_failures = {probe_failures}
"""


def prepare_box(lab, box: str) -> None:
    cfg, run = kamailio_paths(lab, box)
    run.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg, kamailio_config(box))
    for name, schemas in DATABASES.items():
        create_db(lab.box_dir(box) / "pbx" / "db" / name, schemas)


def up(lab, timeout: str = '"50ms"', sw_switch: bool = True, hw_switch: bool = False,
       service_extra: str = "") -> None:
    """Pair a tools/lab Lab up with Kamailio as each box's [service]: the boxes' Kamailio
    configs and DBs are written first, then the lab's usual order (primary Active, then secondary)."""
    for box in ("a", "b"):
        prepare_box(lab, box)
    lab.up(timeout=timeout, sw_switch=sw_switch, hw_switch=hw_switch,
           service_a=service_toml(lab, "a") + service_extra,
           service_b=service_toml(lab, "b") + service_extra)


def pbx_pid(lab, box: str) -> int | None:
    s = lab.status(box) or {}
    svc = s.get("service") or {}
    return int(svc["pid"]) if svc.get("running") and svc.get("pid") else None


def kamailio_pids(lab, box: str) -> list[int]:
    """Every Kamailio process in the box's network namespace, whoever started it."""
    out = subprocess.run(["ip", "netns", "pids", lab.ns(box)], capture_output=True,
                         text=True).stdout.split()
    pids = []
    for p in out:
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "kamailio":
                pids.append(int(p))
        except OSError:
            pass
    return pids


def power_off(lab, box: str) -> None:
    """A box failure: the agent and the PBX killed with SIGKILL, every link down. The lab's
    `power` kind kills only the agent; its Kamailio would keep running (harmless behind downed
    links, but not a dead box)."""
    pgid = pbx_pid(lab, box)
    lab.fail("power", box)
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in kamailio_pids(lab, box):  # workers that left the group, if any
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class PbxLab(lab_mod.Lab):
    """tools/lab's Lab whose agents run Kamailio from their [service] section."""

    def write_box_config(self, box: str, timeout: str, sw_switch: bool, hw_switch: bool,
                         service: str = "", extra: str = "", version: str | None = None) -> None:
        if "[service]" not in service:
            prepare_box(self, box)
            service = service_toml(self, box) + service
        super().write_box_config(box, timeout, sw_switch, hw_switch, service, extra, version)

    def kamailio_pids(self, box: str) -> list[int]:
        return kamailio_pids(self, box)

    def power_off(self, box: str) -> None:
        power_off(self, box)


# -- SIP over the wire ---------------------------------------------------------------------------

def sip_options(lab, phone: str, timeout: float = 1.0, transport: str = "udp") -> str | None:
    """One OPTIONS from a phone to the cluster IP; the Server header of the 200 OK, or None."""
    code = f"""
import socket, sys
t = {transport!r}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if t == "udp" else socket.SOCK_STREAM)
s.settimeout({timeout})
try:
    s.connect(({CLUSTER_IP!r}, {SIP_PORT}))
    ip, port = s.getsockname()
    msg = ("OPTIONS sip:{CLUSTER_IP} SIP/2.0\\r\\nVia: SIP/2.0/%s %s:%d;branch=z9hG4bK-o1\\r\\n"
           "From: <sip:check@%s>;tag=c1\\r\\nTo: <sip:{CLUSTER_IP}>\\r\\nCall-ID: check-%d@%s\\r\\n"
           "CSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n"
           % (t.upper(), ip, port, ip, port, ip))
    s.send(msg.encode())
    data = s.recv(65535).decode(errors="replace")
except OSError as e:
    print("ERR", e); sys.exit(1)
if not data.startswith("SIP/2.0 200"):
    print("ERR", data.splitlines()[0] if data else "empty"); sys.exit(1)
for line in data.split("\\r\\n"):
    if line.lower().startswith("server:"):
        print(line.split(":", 1)[1].strip())
        break
else:
    print("")
"""
    r = subprocess.run(["ip", "netns", "exec", lab.ns(phone), sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=timeout + 10)
    if r.returncode != 0:
        return None
    return r.stdout.strip()


class SipProbe:
    """tools/pbx/sip_probe.py in a phone's namespace: OPTIONS every interval_ms, answers logged."""

    def __init__(self, lab, phone: str = "phone1", interval_ms: float = 2.0):
        self.log_path = lab.dir / f"sip-probe-{phone}.log"
        out = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(phone), sys.executable, str(HERE / "sip_probe.py"),
             CLUSTER_IP, str(SIP_PORT), str(interval_ms)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        lab.state["extra_pids"].append(self.proc.pid)
        lab.save()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log_path.read_text()

    def first_answer_from(self, server: str, after_us: int = 0) -> int | None:
        for line in self.log_path.read_text().splitlines():
            m = re.match(r"answer mono_us=(\d+) server=(\S*)", line)
            if m and m.group(2) == server and int(m.group(1)) >= after_us:
                return int(m.group(1))
        return None

    def gaps(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in
                re.findall(r"gap from_us=(\d+) to_us=(\d+)", self.log_path.read_text())]


# -- sipp phones ---------------------------------------------------------------------------------

def _wall_to_mono_offset() -> float:
    return time.time() - time.monotonic()


@dataclass
class SipEvent:
    mono: float  # CLOCK_MONOTONIC seconds
    direction: str  # "sent" | "received"
    first_line: str
    call_id: str
    server: str = ""


def parse_sipp_trace(path: Path) -> list[SipEvent]:
    """sipp's -trace_msg file: a dashed header with a wall-clock time, then the message."""
    if not path.exists():
        return []
    offset = _wall_to_mono_offset()
    events = []
    blocks = re.split(r"^-{10,}\s+", path.read_text(errors="replace"), flags=re.M)
    for b in blocks:
        m = re.match(r"(\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d(?:\.\d+)?)", b)
        if not m:
            continue
        when = datetime.strptime(f"{m.group(1)} {m.group(2)}",
                                 "%Y-%m-%d %H:%M:%S.%f" if "." in m.group(2) else "%Y-%m-%d %H:%M:%S")
        d = re.search(r"(sent|received)", b)
        body = b.split("\n")
        msg_lines = [line.strip() for line in body[1:] if line.strip()]
        first = ""
        for line in msg_lines:
            if line.startswith("SIP/2.0") or re.match(r"^[A-Z]+ \S+ SIP/2\.0", line):
                first = line
                break
        cid = next((line.split(":", 1)[1].strip() for line in msg_lines
                    if line.lower().startswith("call-id:")), "")
        server = next((line.split(":", 1)[1].strip() for line in msg_lines
                       if line.lower().startswith("server:")), "")
        events.append(SipEvent(when.timestamp() - offset, d.group(1) if d else "?", first, cid,
                               server))
    return events


@dataclass
class CallResult:
    name: str
    transport: str
    exit_code: int
    call_id: str
    events: list[SipEvent] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def _first(self, direction: str, prefix: str) -> SipEvent | None:
        return next((e for e in self.events
                     if e.direction == direction and e.first_line.startswith(prefix)), None)

    @property
    def answered(self) -> SipEvent | None:  # 200 OK to the INVITE
        bye = self._first("sent", "BYE")
        for e in self.events:
            if e.direction == "received" and e.first_line.startswith("SIP/2.0 200"):
                if bye is None or e.mono < bye.mono:
                    return e
        return None

    @property
    def bye_sent(self) -> SipEvent | None:
        return self._first("sent", "BYE")

    @property
    def bye_sends(self) -> int:
        return sum(1 for e in self.events if e.direction == "sent" and e.first_line.startswith("BYE"))

    @property
    def bye_answer(self) -> SipEvent | None:
        bye = self.bye_sent
        if not bye:
            return None
        return next((e for e in self.events if e.direction == "received" and e.mono >= bye.mono
                     and e.first_line.startswith("SIP/2.0")), None)

    @property
    def bye_status(self) -> str:
        a = self.bye_answer
        return a.first_line if a else "no answer"


class Call:
    def __init__(self, proc: subprocess.Popen, result: CallResult, trace: Path, out: Path):
        self.proc, self._result, self._trace, self._out = proc, result, trace, out

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 120) -> CallResult:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._result.exit_code = self.proc.returncode
        self._result.events = parse_sipp_trace(self._trace)
        self._result.output = self._out.read_text(errors="replace")
        return self._result


class Phones:
    """sipp phones in the lab's phone namespaces. Every process is recorded in the lab state, so
    `lab.down()` ends it even if the caller dies."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = lab.dir / "phones"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rtp_file = self.dir / "silence.pcmu"
        # One second of PCMU silence, looped by rtp_stream for the whole call.
        self.rtp_file.write_bytes(b"\xff" * (RTP_FRAME * 50))
        self._n = 0
        self.uas: dict[str, subprocess.Popen] = {}

    def _scenario(self, name: str, rtp: bool = True) -> Path:
        text = (HERE / f"{name}.xml").read_text().replace("@RTP_FILE@", str(self.rtp_file))
        if not rtp:
            text = re.sub(r"\s*<nop>\s*<action>\s*<exec rtp_stream=[^>]*/>\s*</action>\s*</nop>",
                          "", text)
        path = self.dir / f"{name}{'' if rtp else '-nortp'}.xml"
        write_atomic(path, text)
        return path

    def _popen(self, phone: str, args: list[str], tag: str) -> tuple[subprocess.Popen, Path]:
        out = self.dir / f"{tag}.out"
        f = open(out, "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.lab.ns(phone), "sipp", *args],
                             stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=self.dir)
        f.close()
        self.lab.state["extra_pids"].append(p.pid)
        self.lab.save()
        return p, out

    def start_uas(self, phone: str = "phone2", user: str = "1002", port: int = SIP_PORT) -> None:
        """The callee: answers every call on port (UDP), echoes RTP on RTP_PORT."""
        tag = f"uas-{phone}"
        p, _ = self._popen(phone, ["-sf", str(self._scenario("uas")), "-i", PHONES[phone],
                                   "-p", str(port), "-t", "u1", "-rtp_echo", "-mp", str(RTP_PORT),
                                   "-nostdin", "-trace_msg", "-message_file",
                                   str(self.dir / f"{tag}.msg"), "-trace_err", "-error_file",
                                   str(self.dir / f"{tag}.err")], tag)
        self.uas[phone] = p
        time.sleep(0.2)
        if p.poll() is not None:
            raise RuntimeError(f"pbx: sipp UAS on {phone} exited: "
                               f"{(self.dir / f'{tag}.out').read_text()[-500:]}")

    def register(self, phone: str, user: str, contact_port: int = SIP_PORT,
                 timeout: float = 15) -> CallResult:
        self._n += 1
        tag = f"reg-{phone}-{user}-{self._n}"
        trace = self.dir / f"{tag}.msg"
        p, out = self._popen(phone, [f"{CLUSTER_IP}:{SIP_PORT}", "-sf",
                                     str(self._scenario("register")), "-s", user, "-set",
                                     "contact_port", str(contact_port), "-i", PHONES[phone],
                                     "-p", str(5070 + self._n), "-m", "1", "-nostdin",
                                     "-timeout", f"{int(timeout)}s", "-timeout_error",
                                     "-cid_str", f"{tag}-%u-%p@%s",
                                     "-trace_msg", "-message_file", str(trace)], tag)
        return Call(p, CallResult(tag, "udp", -1, f"{tag}-1-"), trace, out).wait(timeout + 10)

    def call(self, phone: str, caller: str, callee: str, hold_ms: int, transport: str = "udp",
             rtp: bool = True, name: str | None = None) -> Call:
        """Start a call in the background; Call.wait() gives the CallResult."""
        self._n += 1
        tag = name or f"call-{transport}-{self._n}"
        trace = self.dir / f"{tag}.msg"
        args = [f"{CLUSTER_IP}:{SIP_PORT}", "-sf", str(self._scenario("uac", rtp)), "-s", callee,
                "-set", "caller", caller, "-i", PHONES[phone], "-p", str(5100 + self._n),
                "-t", "u1" if transport == "udp" else "t1", "-m", "1", "-d", str(hold_ms),
                "-mp", str(RTP_PORT + 100 * self._n), "-nostdin", "-cid_str", f"{tag}-%u-%p@%s",
                "-trace_msg", "-message_file", str(trace), "-timeout",
                f"{int(hold_ms / 1000) + 60}s", "-timeout_error"]
        p, out = self._popen(phone, args, tag)
        return Call(p, CallResult(tag, transport, -1, f"{tag}-1-"), trace, out)

    def stop(self) -> None:
        for p in self.uas.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, signal.SIGKILL)


# -- RTP counters (nftables in the phone namespaces) ---------------------------------------------

class RtpCounters:
    """Counts RTP to and from the callee's echo port on both phones: the media path never touches
    the boxes, so a failover must not lose a packet."""

    def __init__(self, lab, caller: str = "phone1", callee: str = "phone2"):
        self.lab, self.caller, self.callee = lab, caller, callee
        rules = {
            caller: f"""table inet fcmrtp {{
  counter tx {{}}
  counter rx {{}}
  chain out {{ type filter hook output priority 0; udp dport {RTP_PORT} counter name tx; }}
  chain in {{ type filter hook input priority 0; udp sport {RTP_PORT} counter name rx; }}
}}""",
            callee: f"""table inet fcmrtp {{
  counter tx {{}}
  counter rx {{}}
  chain out {{ type filter hook output priority 0; udp sport {RTP_PORT} counter name tx; }}
  chain in {{ type filter hook input priority 0; udp dport {RTP_PORT} counter name rx; }}
}}"""}
        for phone, text in rules.items():
            subprocess.run(["ip", "netns", "exec", lab.ns(phone), "nft", "-f", "-"], input=text,
                           text=True, check=True, capture_output=True)

    def read(self) -> dict[str, int]:
        out = {}
        for phone in (self.caller, self.callee):
            text = subprocess.run(["ip", "netns", "exec", self.lab.ns(phone), "nft", "list",
                                   "counters", "table", "inet", "fcmrtp"], capture_output=True,
                                  text=True, check=True).stdout
            for name in ("tx", "rx"):
                m = re.search(rf"counter {name} {{\s*packets (\d+)", text)
                out[f"{phone}.{name}"] = int(m.group(1)) if m else -1
        return out


# -- reading the boxes ---------------------------------------------------------------------------

def _open_db(lab, box: str, name: str = DB_NAME) -> sqlite3.Connection | None:
    """One of a box's Kamailio DBs through the SQLite API (never a file copy of a live database)."""
    path = lab.box_dir(box) / "pbx" / "db" / name
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def acc_records(lab, box: str, call_id_prefix: str) -> list[dict]:
    """The acc rows of a call in a box's DB."""
    con = _open_db(lab, box, ACC_DB_NAME)
    if con is None:
        return []
    try:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM acc WHERE callid LIKE ? ORDER BY id",
                                             (call_id_prefix + "%",))]
    finally:
        con.close()
    for r in rows:  # $def() keeps the define's quotes
        r["box"] = str(r.get("box", "")).strip('"')
    return rows


def location_rows(lab, box: str) -> list[str]:
    con = _open_db(lab, box)
    if con is None:
        return []
    try:
        return [f"{u}@{c}" for u, c in con.execute("SELECT username, contact FROM location")]
    finally:
        con.close()


def wait_for(pred, timeout: float, interval: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


# -- the drill -----------------------------------------------------------------------------------

@dataclass
class DrillReport:
    claims: list[tuple[str, bool, str]] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)


def failover_drill(lab, timeout: str = '"50ms"', hold_ms: int = 6000,
                   fault_after_s: float = 1.5, out=print) -> DrillReport:
    """The guide's "Failover During Call" as a drill: box a Active with Kamailio, two registered
    phones, a UDP call (RTP phone to phone) and a TCP call through the cluster IP, then box a
    loses power (agent and Kamailio SIGKILLed, links down). Claims checked: the UDP call's BYE gets
    200 OK through box b; a new call succeeds without re-registering; the TCP call cannot be
    recovered; the call's accounting records are on the survivor; RTP lost nothing."""
    rep = DrillReport()
    t0 = time.monotonic()

    def event(t: float, text: str) -> None:
        rep.timeline.append((t, text))

    def claim(text: str, ok: bool, detail: str = "") -> None:
        rep.claims.append((text, ok, detail))
        out(f"{time.monotonic() - t0:8.3f}s  [{'PASS' if ok else 'FAIL'}] {text}"
            f"{(' — ' + detail) if detail else ''}")

    out(f"{0:8.3f}s  pairing box a (primary) then box b (secondary), heartbeat timeout {timeout}, "
        "software fault switch on; Kamailio on the cluster IP under each agent")
    up(lab, timeout=timeout, sw_switch=True)
    sa, sb = lab.status("a") or {}, lab.status("b") or {}
    claim("box a Active and box b Standby, both Dual; only the active runs the PBX",
          sa.get("role") == "Active" and sb.get("role") == "Standby"
          and sa.get("ha_status") == "Dual" and sb.get("ha_status") == "Dual"
          and bool(kamailio_pids(lab, "a")) and not kamailio_pids(lab, "b"),
          f"a={sa.get('role')}/{sa.get('ha_status')} kamailio={len(kamailio_pids(lab, 'a'))} procs, "
          f"b={sb.get('role')}/{sb.get('ha_status')} kamailio={len(kamailio_pids(lab, 'b'))} procs")
    server = wait_for(lambda: sip_options(lab, "phone1"), 10, 0.1)
    claim("the active's Kamailio answers OPTIONS on the cluster IP", server == "fcm-pbx-a",
          f"Server: {server}")

    phones = Phones(lab)
    phones.start_uas("phone2", "1002")
    regs = [phones.register("phone2", "1002", SIP_PORT), phones.register("phone1", "1001", SIP_PORT)]
    want = {"1001@sip:1001@198.18.1.11:5060", "1002@sip:1002@198.18.1.12:5060"}
    synced = wait_for(lambda: want <= set(location_rows(lab, "b")), 10)
    claim("both phones registered; the registrations are on the standby's DB",
          all(r.ok for r in regs) and bool(synced),
          f"register exit codes {[r.exit_code for r in regs]}, standby location rows "
          f"{sorted(location_rows(lab, 'b'))}")

    rtp = RtpCounters(lab)
    probe = SipProbe(lab, "phone1", 2.0)
    udp = phones.call("phone1", "1001", "1002", hold_ms, "udp", rtp=True, name="udp-call")
    # Apart: two Kamailio workers writing at the same instant can lose a row (no busy timeout).
    time.sleep(0.2)
    tcp = phones.call("phone1", "1001", "1002", hold_ms, "tcp", rtp=False, name="tcp-call")
    t_calls = time.monotonic()
    event(t_calls, "UDP call (RTP phone1<->phone2) and TCP call placed via the cluster IP")
    # Both INVITEs accounted and synced before the fault: the drill is about a call in progress.
    # The waits share one deadline inside the calls' hold time, so a lost row cannot push the
    # fault past the calls' end.
    deadline = t_calls + max(fault_after_s, hold_ms / 2000)
    synced_before = {}

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    for name in ("udp-call", "tcp-call"):
        if wait_for(lambda: acc_records(lab, "a", name), left(), 0.02):
            event(time.monotonic(), f"{name}: answered; INVITE accounted on box a")
        synced_before[name] = bool(wait_for(lambda: acc_records(lab, "b", name), left(), 0.02))
        if synced_before[name]:
            event(time.monotonic(), f"{name}: INVITE accounting row synced to box b")
    time.sleep(max(0.0, fault_after_s - (time.monotonic() - t_calls)))
    rtp_before = rtp.read()
    kam_a = kamailio_pids(lab, "a")
    t_fault = time.monotonic()
    fault_us = time.monotonic_ns() // 1000
    power_off(lab, "a")
    event(t_fault, f"FAULT: box a loses power (agent + {len(kam_a)} Kamailio processes SIGKILLed, "
                   "links down)")
    event(time.monotonic(), "box a fully dark (the lab's last `ip link set down` returned)")
    sb = lab.wait_role("b", "Active", timeout=30, interval=0.005)
    t_active = time.monotonic()
    event(t_active, "box b reports Active (status poll)")
    first_b = wait_for(lambda: probe.first_answer_from("fcm-pbx-b", fault_us), 15, 0.01)
    if first_b:
        event(first_b / 1e6, "first SIP answer (OPTIONS 200 OK) from box b's Kamailio on the "
                             "cluster IP")
    udp_r = udp.wait(hold_ms / 1000 + 60)
    tcp_r = tcp.wait(hold_ms / 1000 + 60)
    rtp_after = rtp.read()
    probe.stop()
    if udp_r.bye_sent:
        event(udp_r.bye_sent.mono, f"UDP call: BYE sent ({udp_r.bye_sends} transmission(s))")
    if udp_r.bye_answer:
        event(udp_r.bye_answer.mono, f"UDP call: BYE answered {udp_r.bye_status}")
    if tcp_r.bye_sent:
        event(tcp_r.bye_sent.mono, f"TCP call: BYE sent, result {tcp_r.bye_status}")

    # The failover log of the survivor: detection and takeover as the agent measured them.
    flog = lab.hactl("b", "log", "failover", "--limit", "1").stdout.strip()
    try:
        rec = json.loads(lab.hactl("b", "--json", "log", "failover", "--limit", "1").stdout)
        rec = (rec.get("records") or [{}])[0]
    except (json.JSONDecodeError, AttributeError):
        rec = {}

    claim("both calls were answered, accounted and the rows synced to the standby before the fault",
          all(synced_before.values()) and t_fault - t_calls < hold_ms / 1000,
          f"INVITE rows on box b: {synced_before}; fault {(t_fault - t_calls) * 1000:.0f} ms "
          f"after the calls were placed (they hold {hold_ms} ms)")
    claim("the standby took over after the box failure", sb.get("role") == "Active",
          f"box b Active {(t_active - t_fault) * 1000:.0f} ms after the fault (status poll)")
    claim("the new active's PBX answers SIP on the cluster IP", bool(first_b),
          f"first OPTIONS answer from fcm-pbx-b {((first_b / 1e6) - t_fault) * 1000:.0f} ms after "
          "the fault" if first_b else "no answer from fcm-pbx-b")
    bye_after = bool(udp_r.bye_sent and udp_r.bye_sent.mono > t_fault)
    claim("the UDP call survived: its BYE (sent after the failover) got 200 OK",
          udp_r.ok and bye_after and udp_r.bye_status.startswith("SIP/2.0 200"),
          f"sipp exit {udp_r.exit_code}, BYE {'after' if bye_after else 'BEFORE'} the fault, "
          f"answer: {udp_r.bye_status}")
    udp_acc = acc_records(lab, "b", "udp-call")
    methods = [(r["method"], r["sip_code"], r["box"]) for r in udp_acc]
    claim("the UDP call's accounting records are on the survivor (INVITE by box a, BYE by box b)",
          ("INVITE", "200", "a") in methods and ("BYE", "200", "b") in methods,
          f"acc rows on box b: {methods}")
    tcp_fail = not tcp_r.ok and not tcp_r.bye_status.startswith("SIP/2.0 200")
    why = next((line.split(": ", 1)[-1].strip() for line in tcp_r.output.splitlines()
                if re.search(r"Error on TCP|reset by peer|Broken pipe", line)), "")
    claim("the TCP call cannot be recovered (as the guide says): its BYE gets no 200 OK",
          tcp_fail and tcp_r.answered is not None,
          f"sipp exit {tcp_r.exit_code}, BYE answer: {tcp_r.bye_status}"
          f"{'; ' + why if why else ''}")
    tx = rtp_after["phone1.tx"] - rtp_before["phone1.tx"]
    rx = rtp_after["phone2.rx"] - rtp_before["phone2.rx"]
    total_tx, total_rx = rtp_after["phone1.tx"], rtp_after["phone2.rx"]
    echo_tx, echo_rx = rtp_after["phone2.tx"], rtp_after["phone1.rx"]
    claim("RTP flows phone to phone (Kamailio relays no media): no packet lost through the failover",
          total_tx > 0 and total_tx == total_rx and echo_tx == echo_rx and tx > 0,
          f"phone1 sent {total_tx}, phone2 got {total_rx}, echoed {echo_tx}, phone1 got back "
          f"{echo_rx}; {tx} of them sent from the fault on, {rx} of those arrived")

    # A new call after the failover, with no new REGISTER: box b's usrloc came from the synced DB.
    new = phones.call("phone1", "1001", "1002", 500, "udp", rtp=False, name="after-call").wait(60)
    served = next((e.server for e in new.events if e.server), "")
    claim("a new call after the failover succeeds without re-registering",
          new.ok and new.bye_status.startswith("SIP/2.0 200") and served == "fcm-pbx-b",
          f"sipp exit {new.exit_code}, served by {served or '?'}, BYE: {new.bye_status}")
    phones.stop()

    out("\ntimeline (ms from the fault):")
    for t, text in sorted(rep.timeline):
        out(f"  {(t - t_fault) * 1000:+9.1f}  {text}")
    gaps = [(a, b) for a, b in probe.gaps() if b / 1e6 > t_fault]
    if gaps:
        a, b = gaps[0]
        out(f"  SIP outage seen by an OPTIONS probe every 2 ms: {(b - a) / 1000:.1f} ms "
            f"(last answer {(a / 1e6 - t_fault) * 1000:+.1f} ms, next {(b / 1e6 - t_fault) * 1000:+.1f} ms)")
    out("  RTP: media never crosses the boxes, so the failover causes no media gap at all")
    if rec:
        out(f"  agent's own measure (box b failover log): detection {rec.get('detection_us', 0) / 1000:.1f} ms "
            f"(last sign of box a -> declared lost), takeover {rec.get('takeover_us', 0) / 1000:.1f} ms "
            f"(cluster IP + ARP), service ready {rec.get('service_ready_us', 0) / 1000:.1f} ms "
            "(Kamailio cold start to first probe answer)")
    if flog:
        out("failover log of box b (newest first):")
        for line in flog.splitlines()[:4]:
            out("  " + line)
    return rep


def pbx_demo(lab) -> int:
    """tools/lab demo's call drill: prints the timeline and PASS/FAIL per claim of the guide."""
    print("fcm-ha PBX demo: Kamailio on the cluster IP under fcm-ha-agent, sipp phones, "
          "a box failure mid-call.\n")
    rep = failover_drill(lab)
    passed = sum(ok for _, ok, _ in rep.claims)
    print(f"\n{passed} passed, {len(rep.claims) - passed} failed")
    return 0 if passed == len(rep.claims) else 1
