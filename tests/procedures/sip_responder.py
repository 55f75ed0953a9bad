#!/usr/bin/env python3
"""A stand-in PBX for the procedure tests: answers every SIP request on ADDRESS:PORT (UDP) with
200 OK, echoing Via, From, To, Call-ID and CSeq as RFC 3261 section 8.2.6 asks. Stopping it with
SIGSTOP is a deadlocked PBX: the agent's SIP OPTIONS probe then gets no answer.

  sip_responder.py ADDRESS PORT
"""
import socket
import sys

ECHOED = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def answer(request: bytes) -> bytes:
    lines = request.decode("utf-8", "replace").split("\r\n")
    keep = [l for l in lines[1:] if l.split(":", 1)[0].strip().lower() in ECHOED]
    return ("\r\n".join(["SIP/2.0 200 OK", *keep, "Server: fcm-ha test PBX",
                         "Content-Length: 0", "", ""])).encode()


def main() -> int:
    address, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: the cluster IP may not be here yet
    s.bind((address, port))
    while True:
        data, peer = s.recvfrom(65535)
        if data[:8] != b"SIP/2.0 ":
            s.sendto(answer(data), peer)


if __name__ == "__main__":
    sys.exit(main())
