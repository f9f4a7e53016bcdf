"""One metric contract (deploy/helm/ratecast/metrics.txt) for both sides:
  - every ratecast_* series the alerts, the dashboard, the HPA and the platform's
    prometheus-adapter read is in the contract;
  - the real binary, started here and driven through a resume, a lagging subscriber's resync and a
    slow consumer's close, exports every name in the contract on its metrics listener (where the
    chart's ServiceMonitor scrapes it), and those counters moved. The cluster-mode families
    (ratecast_cluster_*) only exist with --redis-url: a second replica runs in cluster mode against
    a redis-server started here on a free port (the helm stage installs the Debian package), leads,
    and sees Redis go away (a Redis error), and the contract is checked against both scrapes. The
    two-upstream families (issue 22) need real sources: a third replica polls a fake CoinGecko and
    a fake Coinbase served here, sees them disagree on a unit (a cross-check divergence and a hold)
    and CoinGecko fail (a failover to Coinbase).
The binary: $RATECAST_BIN (the helm stage builds it with `cargo build --bin ratecast` and passes
the executable cargo reports), else target/debug/ratecast at the repository root."""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import websocket

from conftest import REPO
from metrics_contract import contract, names_read_by_the_chart_and_platform

SERVER_ARGS = [
    "--demo", "--poll-interval", "20ms",
    # A 4-frame broadcast buffer and small socket buffers: a subscriber that pauses for a second
    # falls behind (resync), one that never reads blocks its writes past the timeout (slow close).
    "--broadcast-buffer", "4", "--socket-send-buffer", "4096", "--write-timeout", "2s",
    "--heartbeat-interval", "1s", "--shutdown-grace", "2s", "--log-format", "json",
]
SMALL_RECEIVE_BUFFER = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 2048),)


def test_every_name_the_chart_and_platform_read_is_in_the_contract():
    used = names_read_by_the_chart_and_platform()
    # The HPA's metric, the alerts' and the dashboard's main series are found at all.
    assert {"ratecast_ws_connections", "ratecast_data_age_seconds", "ratecast_ws_slow_consumer_closes_total",
            "ratecast_ws_delivery_delay_seconds"} <= set(used)
    unknown = {name: where for name, where in used.items() if name not in contract()}
    assert not unknown, f"read but not exported by the binary's contract: {unknown}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    path = Path(os.environ.get("RATECAST_BIN") or REPO / "target" / "debug" / "ratecast")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not an executable ratecast: run `cargo build --bin ratecast` "
                    "(the helm stage does and sets RATECAST_BIN)")
    return path


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_for(what, check, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def scrape(metrics_url):
    """{series name: summed value} of a Prometheus text exposition."""
    values = {}
    for line in get(metrics_url)[1].splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
    return values


def family_present(name, series):
    return name in series or any(f"{name}_{s}" in series for s in ("bucket", "count", "sum"))


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_server(log, *extra, args=SERVER_ARGS):
    listen, metrics = free_port(), free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(binary()), "serve", "--listen", f"127.0.0.1:{listen}",
                                 "--metrics-listen", f"127.0.0.1:{metrics}", *args, *extra],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{listen}"
    return proc, {"base": base, "ws": f"ws://127.0.0.1:{listen}/ws", "metrics": f"http://127.0.0.1:{metrics}/metrics"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("ratecast") / "server.log"
    proc, urls = start_server(log)
    try:
        wait_for("/readyz", lambda: get(f"{urls['base']}/readyz")[0] == 200)
        yield urls
    finally:
        stop(proc)
        print(log.read_text()[-3000:])


@pytest.fixture(scope="module")
def cluster_series(tmp_path_factory):
    """The scrape of a cluster-mode replica that led (published, consumed its own stream) and then
    lost Redis (so the error counter exists too)."""
    redis_server = shutil.which("redis-server")
    if not redis_server:
        pytest.fail("redis-server not found: `apt-get install redis-server` (the helm stage does)")
    work = tmp_path_factory.mktemp("cluster")
    port = free_port()
    redis = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(work)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    log = work / "replica.log"
    proc = None
    try:
        wait_for("redis-server", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None)
        proc, urls = start_server(log, "--redis-url", f"redis://127.0.0.1:{port}",
                                  "--cluster-lease-ttl", "2s", "--cluster-key-prefix", "contract")
        wait_for("/readyz", lambda: get(f"{urls['base']}/readyz")[0] == 200)
        wait_for("leadership and a publication applied from the stream", lambda: (
            lambda s: s.get("ratecast_cluster_leader") == 1 and s.get("ratecast_cluster_stream_delay_seconds_count", 0) >= 1
        )(scrape(urls["metrics"])))
        stop(redis)
        wait_for("a Redis error counted",
                 lambda: scrape(urls["metrics"]).get("ratecast_cluster_redis_errors_total", 0) >= 1)
        yield scrape(urls["metrics"])
    finally:
        if proc is not None:
            stop(proc)
            print(log.read_text()[-3000:])
        stop(redis)


class FakeUpstreams(BaseHTTPRequestHandler):
    """CoinGecko's /api/v3/exchange_rates (the recorded payload) and Coinbase's
    /v2/exchange-rates (the same rates in its shape, EUR 20 % off: beyond the hold threshold);
    `coingecko_down` turns CoinGecko's answer into 503."""
    coingecko = json.loads((REPO / "tests/fixtures/coingecko-exchange-rates-2022.json").read_text())
    coinbase = {"data": {"currency": "BTC", "rates": {
        code.upper(): str(rate["value"] * (1.2 if code == "eur" else 1.0))
        for code, rate in coingecko["rates"].items() if code != "btc"}}}
    coingecko_down = False

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/api/v3/exchange_rates":
            status, body = (503, {"error": "down"}) if FakeUpstreams.coingecko_down else (200, self.coingecko)
        elif path == "/v2/exchange-rates":
            status, body = 200, self.coinbase
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sources_series(tmp_path_factory):
    """The scrape of a replica with two upstreams that held a unit the two disagree on, then
    failed over to Coinbase when CoinGecko went down."""
    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeUpstreams)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{fake.server_address[1]}"
    log = tmp_path_factory.mktemp("sources") / "replica.log"
    proc, urls = start_server(log, args=[
        "--upstream", "coingecko,coinbase", "--upstream-url", url, "--coinbase-url", url,
        "--poll-interval", "200ms", "--failover-after", "400ms", "--crosscheck-interval", "1s",
        "--max-backoff", "1s", "--log-format", "json"])
    try:
        wait_for("/readyz", lambda: get(f"{urls['base']}/readyz")[0] == 200)
        wait_for("a cross-check holding EUR",
                 lambda: scrape(urls["metrics"]).get("ratecast_crosscheck_divergences_total", 0) >= 1)
        FakeUpstreams.coingecko_down = True
        wait_for("a failover to Coinbase",
                 lambda: scrape(urls["metrics"]).get("ratecast_upstream_failovers_total", 0) >= 1)
        yield scrape(urls["metrics"])
    finally:
        FakeUpstreams.coingecko_down = False
        stop(proc)
        fake.shutdown()
        print(log.read_text()[-3000:])


def frames(ws, count):
    out = []
    while len(out) < count:
        message = ws.recv()
        if message:
            out.append(json.loads(message))
    return out


def exercise(server):
    """A REST call, a resume, a lagging subscriber and a client that never reads."""
    assert get(f"{server['base']}/api/v1/rates")[0] == 200
    # Resume: read the snapshot and a few deltas, reconnect with since= inside the ring.
    ws = websocket.create_connection(server["ws"], timeout=10)
    first = frames(ws, 3)
    assert first[0]["type"] == "snapshot"
    ws.close()
    resumed = websocket.create_connection(
        f"{server['ws']}?since={first[0]['seq']}&epoch={first[0]['epoch']}", timeout=10)
    assert frames(resumed, 1)[0]["type"] == "delta", "a resume inside the ring replays deltas"
    resumed.close()
    # Resync: a subscriber that stops reading for a second falls more than 4 frames behind.
    lagging = websocket.create_connection(server["ws"], timeout=10, sockopt=SMALL_RECEIVE_BUFFER)
    frames(lagging, 1)
    time.sleep(1.0)
    seen = [f["type"] for f in frames(lagging, 400)]
    lagging.close()
    assert "snapshot" in seen, "the lagging subscriber was resynced with a snapshot"
    # Slow close: a client that never reads; its writes block past the 2 s write timeout.
    silent = websocket.create_connection(server["ws"], timeout=10, sockopt=SMALL_RECEIVE_BUFFER)
    return silent


def test_the_running_binary_exports_every_contract_metric(server, cluster_series, sources_series):
    silent = exercise(server)
    try:
        wait_for("a slow-consumer close",
                 lambda: scrape(server["metrics"]).get("ratecast_ws_slow_consumer_closes_total", 0) >= 1)
    finally:
        silent.close()
    series = scrape(server["metrics"])
    missing = sorted(n for n in contract()
                     if not any(family_present(n, s) for s in (series, cluster_series, sources_series)))
    assert not missing, f"in metrics.txt but not exported by the running binary: {missing}"
    # Cluster mode: this replica led, applied its own publications, and counted losing Redis.
    assert cluster_series["ratecast_cluster_publish_total"] >= 1
    assert cluster_series["ratecast_cluster_lease_changes_total"] >= 1
    assert cluster_series["ratecast_cluster_redis_errors_total"] >= 1
    # Two upstreams: the cross-check held EUR (20 % apart), then CoinGecko failed and Coinbase serves.
    assert sources_series["ratecast_crosscheck_divergences_total"] >= 1
    assert sources_series["ratecast_crosscheck_divergence_ratio"] >= 0.19
    assert sources_series["ratecast_upstream_failovers_total"] >= 1
    assert sources_series["ratecast_upstream_serving"] == 1, "exactly one source serves"
    # The events happened, so the counters the alerts and dashboard read are live, not just declared.
    assert series["ratecast_ws_resumes_total"] >= 1
    assert series["ratecast_ws_resyncs_total"] >= 1
    assert series["ratecast_ws_slow_consumer_closes_total"] >= 1
    assert series["ratecast_ws_connections_accepted_total"] >= 4
    assert series["ratecast_http_requests_total"] >= 1
    assert series["ratecast_deltas_published_total"] >= 1


def test_the_binary_exports_no_family_the_contract_misses(server, cluster_series, sources_series):
    # The other direction: a new metric is added to the contract (and so to what dashboards may
    # use) when it ships, not discovered later. Standalone, cluster mode and two upstreams alike.
    names = [*scrape(server["metrics"]), *cluster_series, *sources_series]
    exported = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names if n.startswith("ratecast_")}
    assert exported <= contract(), f"exported but not in metrics.txt: {sorted(exported - contract())}"
