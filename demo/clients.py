#!/usr/bin/env python3
"""Misbehaving WebSocket clients for the drills (standard library only, so it runs on any
laptop and in the e2e stage without installing anything).

  clients.py slow URL METRICS_URL SECONDS
      connects with a tiny receive buffer and stops reading until the server counts a slow
      consumer (ratecast_ws_slow_consumer_closes_total at METRICS_URL moves) or SECONDS pass;
      then drains what arrives and reports how the server ended it
  clients.py flood URL SECONDS
      sends pings as fast as it can (reading the answers, so it is not also slow) until the
      server closes it or SECONDS pass

Prints one JSON line: {"client", "closed", "close_code", "ended", "seconds", ...}.
"""
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.request
from urllib.parse import urlparse


def connect(url, rcvbuf=None):
    u = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so the window the server sees is small from the first segment.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((u.hostname, u.port or 80))
    key = base64.b64encode(os.urandom(16)).decode()
    path = u.path + ("?" + u.query if u.query else "")
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("handshake: connection closed")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise SystemExit(f"handshake refused: {status.decode(errors='replace')}")
    return sock


def frames(buf):
    """Parses whole server frames off the front of buf: yields (opcode, payload), returns rest."""
    out = []
    while len(buf) >= 2:
        opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
        at = 2
        if length == 126:
            if len(buf) < 4:
                break
            length, at = struct.unpack(">H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                break
            length, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + length:
            break
        out.append((opcode, buf[at:at + length]))
        buf = buf[at + length:]
    return out, buf


def close_code(payload):
    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


def close_reason(payload):
    return payload[2:].decode(errors="replace")


def drain(sock, limit=10.0):
    """Reads until EOF, a reset or limit seconds; returns (close code or None, its reason, how it
    ended: "close frame", "eof", "reset" or "still open")."""
    sock.settimeout(1)
    buf, code, reason, ended, deadline = b"", None, "", "still open", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            ended = "reset"
            break
        if not chunk:
            ended = "eof"
            break
        parsed, buf = frames(buf + chunk)
        for opcode, payload in parsed:
            if opcode == 8:
                code, reason = close_code(payload), close_reason(payload)
    # A close frame before the end of the stream is how the server ended it.
    return code, reason, "close frame" if code is not None else ended


def slow_consumer_closes(metrics_url):
    """ratecast_ws_slow_consumer_closes_total at metrics_url (0 before the first)."""
    name = "ratecast_ws_slow_consumer_closes_total"
    with urllib.request.urlopen(metrics_url, timeout=2) as response:
        for line in response.read().decode().splitlines():
            series, _, value = line.rpartition(" ")
            if series == name or series.startswith(name + "{"):
                return float(value)
    return 0.0


def slow(url, metrics_url, seconds):
    start = time.monotonic()
    before = slow_consumer_closes(metrics_url)
    sock = connect(url, rcvbuf=2048)
    # Read nothing until the server cuts us (nobody else on the replica is slow). It then still
    # writes the rest of the cut frame and the 1008 close for a short grace (2 s,
    # docs/protocol.md): a client that reads again within it learns why it was dropped.
    cut = None
    while cut is None and time.monotonic() - start < seconds:
        time.sleep(0.1)
        if slow_consumer_closes(metrics_url) > before:
            cut = time.monotonic()
    drained = time.monotonic()
    code, reason, ended = drain(sock)
    # cut_s: when the server counted us (None: it never did); drain_s: how long the reads took
    # to reach the end, at most the grace for a stream the server ends itself.
    return {"client": "slow", "closed": ended != "still open", "close_code": code,
            "close_reason": reason, "ended": ended, "seconds": round(time.monotonic() - start, 1),
            "cut_s": round(cut - start, 1) if cut else None,
            "drain_s": round(time.monotonic() - drained, 1)}


def ping_frame(payload=b"flood"):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + masked


def flood(url, seconds):
    start = time.monotonic()
    sock = connect(url)
    sock.setblocking(False)
    frame, sent, buf, code, ended = ping_frame(), 0, b"", None, "still open"
    deadline = start + seconds
    while time.monotonic() < deadline and ended == "still open":
        try:
            sock.send(frame)
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            ended = "reset"
            break
        try:
            chunk = sock.recv(65536)
            if not chunk:
                ended = "eof"
            parsed, buf = frames(buf + chunk)
            for opcode, payload in parsed:
                if opcode == 8:
                    code, ended = close_code(payload), "close frame"
        except BlockingIOError:
            pass
        except ConnectionResetError:
            ended = "reset"
    return {"client": "flood", "closed": ended != "still open", "close_code": code,
            "ended": ended, "frames_sent": sent, "seconds": round(time.monotonic() - start, 1)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["slow"] and len(sys.argv) == 5:
        print(json.dumps(slow(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
    elif sys.argv[1:2] == ["flood"] and len(sys.argv) == 4:
        print(json.dumps(flood(sys.argv[2], float(sys.argv[3]))))
    else:
        sys.exit(__doc__)
