#!/usr/bin/env python3
"""SIP OPTIONS prober: run inside a phone's namespace; sends OPTIONS to TARGET every INTERVAL_MS
and logs, with CLOCK_MONOTONIC microseconds, the first answer from each new Server and every
silence longer than 3 intervals. Stops on SIGTERM/SIGINT and prints a summary line.

  sip_probe.py TARGET_IP PORT INTERVAL_MS
Output lines: `answer mono_us=N server=S`, `gap from_us=N to_us=N ms=X`, `summary sent=N answers=N`.
"""
import os
import select
import signal
import socket
import sys
import time


def mono_us() -> int:
    return time.monotonic_ns() // 1000


def main() -> int:
    target, port, interval_ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    stop = False

    def on_signal(_sig, _frm):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.connect((target, port))
    local_ip, local_port = s.getsockname()
    sent = answers = 0
    last_server = None
    last_answer_us = None
    interval_us = int(interval_ms * 1000)
    next_send = mono_us()
    print(f"start mono_us={mono_us()} target={target}:{port} interval_ms={interval_ms}", flush=True)
    while not stop:
        now = mono_us()
        if now >= next_send:
            sent += 1
            msg = (f"OPTIONS sip:{target}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {local_ip}:{local_port};branch=z9hG4bK-probe-{os.getpid()}-{sent}\r\n"
                   f"From: <sip:probe@{local_ip}>;tag=probe{os.getpid()}\r\n"
                   f"To: <sip:{target}>\r\nCall-ID: probe-{os.getpid()}-{sent}@{local_ip}\r\n"
                   f"CSeq: {sent} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            try:
                s.send(msg.encode())
            except OSError:
                pass  # ICMP unreachable from a box without the PBX: keep probing
            next_send = now + interval_us
        timeout = max(0.0, (next_send - mono_us()) / 1e6)
        r, _, _ = select.select([s], [], [], timeout)
        if not r:
            continue
        try:
            data = s.recv(65535)
        except OSError:
            continue
        t = mono_us()
        text = data.decode(errors="replace")
        if not text.startswith("SIP/2.0 200"):
            continue
        answers += 1
        server = ""
        for line in text.split("\r\n"):
            if line.lower().startswith("server:"):
                server = line.split(":", 1)[1].strip()
        if last_answer_us is not None and t - last_answer_us > 3 * interval_us:
            print(f"gap from_us={last_answer_us} to_us={t} ms={(t - last_answer_us) / 1000:.1f}",
                  flush=True)
        if server != last_server:
            print(f"answer mono_us={t} server={server}", flush=True)
            last_server = server
        last_answer_us = t
    print(f"summary sent={sent} answers={answers}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
