#!/usr/bin/env python3
"""Checks the demo stack's Grafana provisioning without Grafana (Debian does not package it and
only package registries are reachable here, so no image can be pulled):

- the data source file provisions one Prometheus at the compose service's address, with the uid
  the dashboard's `datasource` variable resolves to;
- the dashboard provider reads the directory compose.yaml mounts the chart's dashboards into,
  and the home dashboard path names the chart's file;
- every query of the chart's dashboard, with its variables set as Grafana would
  (namespace=demo, job=ratecast), runs on a live Prometheus scraping real replicas (the native
  stack of the e2e stage, in cluster mode), and the panels that must always show data do — the
  cluster row's too, with exactly one replica holding the lease.

Usage: check-grafana.py PROMETHEUS_URL
"""
import json
import pathlib
import sys
import time
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "deploy/compose/grafana/provisioning"
DASHBOARDS = ROOT / "deploy/helm/ratecast/dashboards"
# Panels a healthy stack always has data for (the others need traffic, refusals or failures).
ALWAYS = {"WebSocket connections", "Data age (oldest pod)", "Upstream up (pods)", "Sequence",
          "Upstream requests by outcome", "Data age per pod"}
# The cluster row's panels a healthy cluster (the e2e stack: 3 replicas on one Redis) always has
# data for. Lease changes and Redis errors need an event; the stack is checked to be a cluster.
ALWAYS_CLUSTER = {"Leader", "Replicas holding the lease", "Upstream calls per minute (whole deployment)",
                  "Leader → replica delay (p50 / p99)",
                  "Stream lag (age of the newest publication when applied)"}

# The upstream sources' row: the stack's replicas poll the fake CoinGecko and its Coinbase side
# (--coinbase-url), so the leader serves from CoinGecko and has cross-checked at its first poll.
ALWAYS_SOURCES = {"Serving source / units by source / held units", "Cross-check divergence by unit",
                  "Source requests by source and outcome"}


def panels(dashboard):
    """Every panel with its queries, those inside rows (collapsed rows nest theirs) included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def main(prom):
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":", 1) for v in grafana["volumes"])

    sources = yaml.safe_load((PROVISIONING / "datasources/prometheus.yaml").read_text())["datasources"]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus", sources
    host = urllib.parse.urlparse(sources[0]["url"]).hostname
    assert host in compose["services"], f"data source points at {host}, not a compose service"

    provider = yaml.safe_load((PROVISIONING / "dashboards/ratecast.yaml").read_text())["providers"][0]
    dash_dir = provider["options"]["path"]
    assert mounts.get("./deploy/helm/ratecast/dashboards") == dash_dir, (mounts, dash_dir)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash_dir + "/") and (DASHBOARDS / home[len(dash_dir) + 1:]).is_file(), home
    assert mounts.get("./deploy/compose/grafana/provisioning") == "/etc/grafana/provisioning", mounts

    # Prometheus answers before its first scrapes: wait for all three replicas, then a few more
    # scrapes so that rate() has two samples to work with.
    deadline = time.monotonic() + 60
    while len(query(prom, 'ratecast_seq{namespace="demo"}')) < 3:
        assert time.monotonic() < deadline, "Prometheus did not scrape the 3 replicas within 60 s"
        time.sleep(1)
    time.sleep(5)

    dashboard = json.loads((DASHBOARDS / "ratecast.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == sources[0]["type"], variables["datasource"]
    assert any(s["metric"].get("namespace") == "demo" for s in query(prom, "ratecast_seq")), \
        "the namespace variable (label_values(ratecast_seq, namespace)) would be empty"

    titles = {p.get("title") for p in panels(dashboard)}
    # A renamed panel must not leave the check silently: each name here is on the dashboard.
    expected = ALWAYS | ALWAYS_CLUSTER | ALWAYS_SOURCES
    assert expected <= titles, f"not on the dashboard: {sorted(expected - titles)}"
    assert query(prom, 'ratecast_cluster_leader{namespace="demo"}'), \
        "the stack is not in cluster mode (no ratecast_cluster_leader): the cluster panels cannot be checked"

    # A counter the leader creates at its first poll needs two scrapes before rate() shows it:
    # ask again, for a bounded time, until every panel that must show data does.
    deadline = time.monotonic() + 30
    while True:
        results, queries = {}, 0
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                queries += 1
                expr = (target["expr"].replace("$namespace", "demo").replace("$job", "ratecast")
                        .replace("$__rate_interval", "1m"))
                results.setdefault(panel["title"], []).extend(query(prom, expr))
        # A panel shows data when any of its queries does (switches, say, only after a failover).
        empty = [title for title, result in results.items() if not result]
        missing = expected & set(empty)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, f"panels with no data on a live stack: {sorted(missing)}"
    holders = [float(r["value"][1]) for r in results["Replicas holding the lease"]]
    assert holders == [1.0], f"replicas holding the lease: {holders} (exactly one expected)"
    leaders = results["Leader"]
    assert len(leaders) == 1, f"the Leader panel shows {len(leaders)} pods: {leaders}"
    serving = {r["metric"]["source"]: float(r["value"][1])
               for r in query(prom, 'max by (source) (ratecast_upstream_serving{namespace="demo"})')}
    assert serving.get("coingecko") == 1.0, f"the serving panel does not show CoinGecko serving: {serving}"
    print(f"grafana provisioning: data source, provider and home dashboard consistent with compose.yaml; "
          f"{queries} dashboard queries ran on Prometheus, the cluster row's (one lease holder) and the sources' "
          f"(CoinGecko serving) included; "
          f"no data yet (needs traffic or failures): {sorted(set(empty)) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1])
