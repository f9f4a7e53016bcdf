"""The PrometheusRule's alerts, unit-tested with promtool on synthetic series: each fires on the
failure it names, with its labels and annotations, and stays quiet on healthy data."""
import os
import subprocess

import pytest
import yaml

from conftest import FULLNAME, NAMESPACE, find, render

POD = f"{FULLNAME}-7d9c-abcde"
SEL = f'namespace="{NAMESPACE}", job="{FULLNAME}"'


def annotations(rules, alert, summary):
    rule = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == alert)
    return {**rule["annotations"], "summary": summary}


def promtool(tmp_path, rules, test):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [test]}))
    check = subprocess.run([os.environ["PROMTOOL"], "check", "rules", "rules.yaml"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    out = subprocess.run([os.environ["PROMTOOL"], "test", "rules", "tests.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def case(rules, series, alert, fired_at, quiet_at, labels, summary):
    """One promtool test: no alert at quiet_at, the alert with labels and annotations at fired_at."""
    expected = [] if labels is None else [{
        "exp_labels": {"namespace": NAMESPACE, "team": "ratecast", **labels},
        "exp_annotations": annotations(rules, alert, summary)}]
    return {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
                                {"eval_time": fired_at, "alertname": alert, "exp_alerts": expected}]}

OTHER = f"{FULLNAME}-other"
# POD leads throughout; OTHER does not (it may have before).
LEADER = (f'ratecast_cluster_leader{{{SEL}, pod="{POD}"}}', "1x40")
OTHER_NOT_LEADING = [(f'ratecast_cluster_leader{{{SEL}, pod="{OTHER}"}}', "0x40")]

CASES = {
    # Data age grows by a minute per minute from 30 s on one pod; the other pod stays fresh.
    "stale": ("RatecastDataStale", "8m", "5m", {"severity": "critical", "pod": POD},
              f"Pod {POD} serves rates older than 8m 30s",
              [(f'ratecast_data_age_seconds{{{SEL}, pod="{POD}"}}', "30+60x20"),
               (f'ratecast_data_age_seconds{{{SEL}, pod="{FULLNAME}-healthy"}}', "30x20")]),
    # One request succeeds per minute; 3 failing ones make 75 % errors, 1 makes 50 % (not above).
    "upstream errors": ("RatecastUpstreamErrors", "25m", "5m", {"severity": "warning"},
                        "75% of upstream polls get an answer from no source",
                        [(f'ratecast_upstream_requests_total{{{SEL}, pod="{POD}", outcome="ok"}}', "0+1x40"),
                         (f'ratecast_upstream_requests_total{{{SEL}, pod="{POD}", outcome="timeout"}}', "0+3x40")]),
    "upstream half failing": ("RatecastUpstreamErrors", "25m", "5m", None, None,
                              [(f'ratecast_upstream_requests_total{{{SEL}, pod="{POD}", outcome="ok"}}', "0+1x40"),
                               (f'ratecast_upstream_requests_total{{{SEL}, pod="{POD}", outcome="timeout"}}', "0+1x40")]),
    "no ready pods": ("RatecastNoReadyPods", "6m", "3m", {"severity": "critical", "deployment": FULLNAME},
                      "No ratecast pod is ready: the wall display and clients are down",
                      [(f'kube_deployment_status_replicas_available{{namespace="{NAMESPACE}", deployment="{FULLNAME}"}}',
                        "2 2 1 0 0 0 0 0 0")]),
    # 120 closes a minute = 2/s, above the 1/s threshold, for longer than 15 minutes.
    "slow consumers": ("RatecastSlowConsumerClosesRising", "25m", "10m", {"severity": "warning"},
                       "2 WebSocket clients per second are dropped for not reading",
                       [(f'ratecast_ws_slow_consumer_closes_total{{{SEL}, pod="{POD}"}}', "0+120x40")]),
    # 45000 of 50000 (90 %) on one pod fires; 1000 on the other does not.
    "connection limit": ("RatecastNearConnectionLimit", "6m", "3m", {"severity": "warning", "pod": POD},
                         f"Pod {POD} holds 45000 WebSockets, near its limit",
                         [(f'ratecast_ws_connections{{{SEL}, pod="{POD}"}}', "45000x10"),
                          (f'ratecast_ws_connections{{{SEL}, pod="{FULLNAME}-quiet"}}', "1000x10")]),
    # Two upstreams (issue 22; the "all" values run cluster mode, so only the leader's series
    # count). Coinbase serves from 2m on: firing once it has for 10 minutes.
    "upstream failover": ("RatecastUpstreamFailover", "14m", "8m", {"severity": "warning", "source": "coinbase"},
                          "coingecko fails: the rates come from coinbase",
                          [LEADER, (f'ratecast_upstream_serving{{{SEL}, pod="{POD}", source="coinbase"}}', "0 0 1x30"),
                           (f'ratecast_upstream_serving{{{SEL}, pod="{POD}", source="coingecko"}}', "1 1 0x30")]),
    # A pod that led and failed over keeps its last gauge once it no longer leads: not an alert.
    "failover gauge of a former leader": ("RatecastUpstreamFailover", "14m", "8m", None, None,
                                          [LEADER, *OTHER_NOT_LEADING,
                                           (f'ratecast_upstream_serving{{{SEL}, pod="{OTHER}", source="coinbase"}}', "1x30")]),
    # EUR 5 % apart (above the 2 % warning) from the start, USD 0.1 %: EUR only, after 5 minutes.
    "sources disagree": ("RatecastSourcesDisagree", "7m", "3m", {"severity": "warning", "unit": "eur"},
                         "The upstream sources differ by 5% on eur",
                         [LEADER, (f'ratecast_crosscheck_divergence_ratio{{{SEL}, pod="{POD}", unit="eur"}}', "0.05x20"),
                          (f'ratecast_crosscheck_divergence_ratio{{{SEL}, pod="{POD}", unit="usd"}}', "0.001x20")]),
    # Two units held from 3m: at once.
    "unit held": ("RatecastUnitHeld", "4m", "2m", {"severity": "warning"},
                  "2 units are held at their last agreed value: the sources disagree beyond the hold threshold",
                  [LEADER, (f'ratecast_units_flagged{{{SEL}, pod="{POD}", flag="held"}}', "0 0 0 2x20"),
                   (f'ratecast_units_flagged{{{SEL}, pod="{POD}", flag="stale"}}', "5x20")]),
    # Coinbase fails every cross-check while CoinGecko serves: no safety net, after 30 minutes.
    "fallback down": ("RatecastFallbackSourceDown", "35m", "20m", {"severity": "warning", "source": "coinbase"},
                      "The fallback source coinbase fails its cross-checks: a coingecko outage would turn the wall stale",
                      [LEADER, (f'ratecast_upstream_source_up{{{SEL}, pod="{POD}", source="coinbase"}}', "0x40"),
                       (f'ratecast_upstream_serving{{{SEL}, pod="{POD}", source="coingecko"}}', "1x40")]),
    # Both down: the fallback is not "down beside a healthy primary" (RatecastDataStale pages).
    "fallback down with the primary": ("RatecastFallbackSourceDown", "35m", "20m", None, None,
                                       [LEADER, (f'ratecast_upstream_source_up{{{SEL}, pod="{POD}", source="coinbase"}}', "0x40"),
                                        (f'ratecast_upstream_serving{{{SEL}, pod="{POD}", source="coingecko"}}', "0x40")]),
    # Cluster mode (rendered by the "all" values). The leader stops renewing at 2m (Redis gone)
    # and a replica takes the lease at 6m: no leader from 2m, firing once 2 TTLs (20 s) pass.
    "cluster no leader": ("RatecastClusterNoLeader", "4m", "1m", {"severity": "critical"},
                          "No replica has held the cluster lease for over 2 lease TTLs: nobody polls CoinGecko",
                          [(f'ratecast_cluster_leader{{{SEL}, pod="{POD}"}}', "1 1 0 0 0 0 0 0 0 0"),
                           (f'ratecast_cluster_leader{{{SEL}, pod="{FULLNAME}-other"}}', "0 0 0 0 0 0 1 1 1 1")]),
    "cluster no leader resolves": ("RatecastClusterNoLeader", "4m", "7m", {"severity": "critical"},
                                   "No replica has held the cluster lease for over 2 lease TTLs: nobody polls CoinGecko",
                                   [(f'ratecast_cluster_leader{{{SEL}, pod="{POD}"}}', "1 1 0 0 0 0 0 0 0 0"),
                                    (f'ratecast_cluster_leader{{{SEL}, pod="{FULLNAME}-other"}}', "0 0 0 0 0 0 1 1 1 1")]),
    # One pod applies every publication between 1 s and 3 s late (p99 = 2.98 s); the other
    # within 100 ms.
    "cluster stream lag": ("RatecastClusterStreamLag", "12m", "3m", {"severity": "warning", "pod": POD},
                           f"Pod {POD} applies cluster updates 2.98s late (p99)",
                           [*[(f'ratecast_cluster_stream_delay_seconds_bucket{{{SEL}, pod="{POD}", le="{le}"}}', v)
                              for le, v in (("0.1", "0x30"), ("1", "0x30"), ("3", "0+100x30"), ("+Inf", "0+100x30"))],
                            *[(f'ratecast_cluster_stream_delay_seconds_bucket{{{SEL}, pod="{FULLNAME}-fast", le="{le}"}}', "0+100x30")
                              for le in ("0.1", "1", "3", "+Inf")]]),
    # One io error a second on one pod, for longer than 5 minutes.
    "cluster redis errors": ("RatecastClusterRedisErrors", "12m", "3m", {"severity": "warning", "pod": POD, "kind": "io"},
                             f"Pod {POD} fails Redis operations (io)",
                             [(f'ratecast_cluster_redis_errors_total{{{SEL}, pod="{POD}", kind="io"}}', "0+60x30")]),
    # Redis restored from an older snapshot at 10m: two replicas each refuse it once; nothing
    # before. Fires at once, and resolves once the 15-minute window has passed.
    "cluster lost writes": ("RatecastClusterLostWrites", "11m", "5m", {"severity": "warning"},
                            "Redis came back with older data than the replicas served: a new epoch was started",
                            [(f'ratecast_cluster_divergences_total{{{SEL}, pod="{POD}"}}', "0x9 1x20"),
                             (f'ratecast_cluster_divergences_total{{{SEL}, pod="{FULLNAME}-other"}}', "0x9 1x20")]),
    "cluster lost writes resolves": ("RatecastClusterLostWrites", "11m", "28m", {"severity": "warning"},
                                     "Redis came back with older data than the replicas served: a new epoch was started",
                                     [(f'ratecast_cluster_divergences_total{{{SEL}, pod="{POD}"}}', "0x9 1x20"),
                                      (f'ratecast_cluster_divergences_total{{{SEL}, pod="{FULLNAME}-other"}}', "0x9 1x20")]),
}


@pytest.mark.parametrize("name", CASES)
def test_alert(tmp_path, name):
    alert, fired_at, quiet_at, labels, summary, series = CASES[name]
    rules = find(render("all"), "PrometheusRule")["spec"]
    promtool(tmp_path, rules, case(rules, series, alert, fired_at, quiet_at, labels, summary))
