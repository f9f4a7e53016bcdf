#!/usr/bin/env python3
"""CoinGecko's GET /api/v3/exchange_rates on loopback, for the native stack's drills (standard
library only). The replicas poll it as they would poll CoinGecko, so staleness takes the
production path (data unconfirmed for --stale-after, an upstream answering 503), not the demo
source's. Answers the recorded payload (tests/fixtures) with rates moved on each poll, so every
poll makes a delta, as the demo source does.

  fake-coingecko.py PORT FIXTURE

Control, for the drills (demo/lib.sh), each answering 204:
  POST /fake/outage   every poll answers 503 from now on, as an unreachable CoinGecko
  POST /fake/recover  polls answer the rates again
  POST /fake/freeze   the rates stop moving (CoinGecko's usual case: the same numbers, confirmed)
  POST /fake/thaw     the rates move again
"""
import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, fixture = int(sys.argv[1]), sys.argv[2]
rates = json.load(open(fixture))["rates"]
state = {"outage": False, "frozen": False}
lock = threading.Lock()
# Every unit but the base may move: a third of them per poll, within ±0.5 % a step, as the demo
# source does (frames of ~2.5 KB a second: what fills a slow client's buffers within the drill).
movable = [code for code in rates if code != "btc"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?", 1)[0] != "/api/v3/exchange_rates":
            return self.answer(404, b'{"error":"not found"}')
        with lock:
            if state["outage"]:
                return self.answer(503, b'{"error":"service unavailable"}')
            if not state["frozen"]:
                for code in random.sample(movable, len(movable) // 3):
                    rates[code]["value"] = round(rates[code]["value"] * random.uniform(0.995, 1.005), 10)
            body = json.dumps({"rates": rates}).encode()
        self.answer(200, body)

    def do_POST(self):
        switch = {"/fake/outage": ("outage", True), "/fake/recover": ("outage", False),
                  "/fake/freeze": ("frozen", True), "/fake/thaw": ("frozen", False)}.get(self.path)
        if switch is None:
            return self.answer(404, b'{"error":"not found"}')
        with lock:
            state[switch[0]] = switch[1]
        self.answer(204, b"")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # one line per poll from three replicas would drown the stack's logs


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
