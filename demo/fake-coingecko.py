#!/usr/bin/env python3
"""CoinGecko's GET /api/v3/exchange_rates and Coinbase's GET /v2/exchange-rates on loopback, for
the native stack's drills (standard library only). The replicas poll it as they would poll the
real upstreams (--upstream-url and --coinbase-url both point here), so staleness and failover take
the production path (data unconfirmed for --stale-after, an upstream answering 503), not the demo
source's. Answers the recorded payloads (tests/fixtures) with rates moved on each poll, so every
poll makes a delta, as the demo source does. Both endpoints answer the same moving rates:
Coinbase's carries each unit it shares with CoinGecko (its upper-case ticker) at the current
value, with the fixture's number of decimals, and its other tickers as recorded.

  fake-coingecko.py PORT FIXTURE [COINBASE_FIXTURE]

COINBASE_FIXTURE defaults to tests/fixtures/coinbase-exchange-rates.json beside this repository.

Control, for the drills (demo/lib.sh), each answering 204:
  POST /fake/outage            CoinGecko answers 503 from now on, as when it is unreachable
  POST /fake/recover           CoinGecko answers the rates again
  POST /fake/coinbase/outage   the same for Coinbase
  POST /fake/coinbase/recover
  POST /fake/freeze            the rates stop moving (the usual case: the same numbers, confirmed)
  POST /fake/thaw              the rates move again
"""
import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

port, fixture = int(sys.argv[1]), sys.argv[2]
coinbase_fixture = (sys.argv[3] if len(sys.argv) > 3 else
                    Path(__file__).resolve().parent.parent / "tests/fixtures/coinbase-exchange-rates.json")
rates = json.load(open(fixture))["rates"]
coinbase_rates = json.load(open(coinbase_fixture))["data"]["rates"]
state = {"outage": False, "coinbase_outage": False, "frozen": False}
lock = threading.Lock()
# Every unit but the base may move: a third of them per poll, within ±0.5 % a step, as the demo
# source does (frames of ~2.5 KB a second: what fills a slow client's buffers within the drill).
movable = [code for code in rates if code != "btc"]


def decimals(text):
    return len(text.split(".", 1)[1]) if "." in text else 0


def coingecko():
    return {"rates": rates}


def coinbase():
    # Only units Coinbase quotes (its upper-case ticker in its fixture: not VEF, bits or sats).
    for code, unit in rates.items():
        ticker = code.upper()
        if ticker in coinbase_rates:
            coinbase_rates[ticker] = f"{unit['value']:.{decimals(coinbase_rates[ticker])}f}"
    return {"data": {"currency": "BTC", "rates": coinbase_rates}}


# Path: (the outage switch, the payload).
ENDPOINTS = {"/api/v3/exchange_rates": ("outage", coingecko),
             "/v2/exchange-rates": ("coinbase_outage", coinbase)}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        endpoint = ENDPOINTS.get(self.path.split("?", 1)[0])
        if endpoint is None:
            return self.answer(404, b'{"error":"not found"}')
        outage, payload = endpoint
        with lock:
            if state[outage]:
                return self.answer(503, b'{"error":"service unavailable"}')
            # Either upstream's poll moves the rates: the wall stays live through one's outage.
            if not state["frozen"]:
                for code in random.sample(movable, len(movable) // 3):
                    rates[code]["value"] = round(rates[code]["value"] * random.uniform(0.995, 1.005), 10)
            body = json.dumps(payload()).encode()
        self.answer(200, body)

    def do_POST(self):
        switch = {"/fake/outage": ("outage", True), "/fake/recover": ("outage", False),
                  "/fake/coinbase/outage": ("coinbase_outage", True),
                  "/fake/coinbase/recover": ("coinbase_outage", False),
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
