"""The PrometheusRule's alerts, unit-tested with promtool on synthetic series: each fires on the
failure it names, with its labels and annotations, and stays quiet on healthy data."""
import os
import subprocess

import pytest
import yaml

from conftest import FULLNAME, NAMESPACE, find, render

POD = f"{FULLNAME}-7d9c-abcde"
SEL = f'namespace="{NAMESPACE}", job="{FULLNAME}"'


def rule_groups():
    return find(render("all"), "PrometheusRule")["spec"]


def annotations(rules, alert, summary):
    rule = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == alert)
    return {**rule["annotations"], "summary": summary}


def promtool(tmp_path, tests):
    rules = rule_groups()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests(rules)}))
    check = subprocess.run([os.environ["PROMTOOL"], "check", "rules", "rules.yaml"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    out = subprocess.run([os.environ["PROMTOOL"], "test", "rules", "tests.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def case(series, alert, fired_at, quiet_at, labels=None, summary=None, rules=None):
    """One promtool test: no alert at quiet_at, the alert with labels and annotations at fired_at."""
    expected = [] if labels is None else [{
        "exp_labels": {"namespace": NAMESPACE, "team": "ratecast", **labels},
        "exp_annotations": annotations(rules, alert, summary)}]
    return {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
                                {"eval_time": fired_at, "alertname": alert, "exp_alerts": expected}]}


def test_data_stale(tmp_path):
    promtool(tmp_path, lambda rules: [case(
        [(f'ratecast_data_age_seconds{{{SEL}, pod="{POD}"}}', "30+60x20"),
         (f'ratecast_data_age_seconds{{{SEL}, pod="{FULLNAME}-healthy"}}', "30x20")],
        "RatecastDataStale", fired_at="8m", quiet_at="5m",
        labels={"severity": "critical", "pod": POD},
        summary=f"Pod {POD} serves rates older than 8m 30s", rules=rules)])


@pytest.mark.parametrize("failing_per_minute, fires", [(3, True), (1, False)])
def test_upstream_errors(tmp_path, failing_per_minute, fires):
    # One request succeeds per minute; 3 failing ones make 75 % errors, 1 makes 50 % (not above).
    promtool(tmp_path, lambda rules: [case(
        [(f'ratecast_upstream_requests_total{{{SEL}, pod="{POD}", outcome="ok"}}', "0+1x40"),
         (f'ratecast_upstream_requests_total{{{SEL}, pod="{POD}", outcome="timeout"}}', f"0+{failing_per_minute}x40")],
        "RatecastUpstreamErrors", fired_at="25m", quiet_at="5m",
        labels={"severity": "warning"} if fires else None,
        summary="75% of CoinGecko requests fail", rules=rules)])


def test_no_ready_pods(tmp_path):
    promtool(tmp_path, lambda rules: [case(
        [(f'kube_deployment_status_replicas_available{{namespace="{NAMESPACE}", deployment="{FULLNAME}"}}',
          "2 2 1 0 0 0 0 0 0")],
        "RatecastNoReadyPods", fired_at="6m", quiet_at="3m",
        labels={"severity": "critical", "deployment": FULLNAME},
        summary="No ratecast pod is ready: the wall display and clients are down", rules=rules)])


def test_slow_consumer_closes_rising(tmp_path):
    # 120 closes a minute = 2/s, above the 1/s threshold, for longer than 15 minutes.
    promtool(tmp_path, lambda rules: [case(
        [(f'ratecast_ws_slow_consumer_closes_total{{{SEL}, pod="{POD}"}}', "0+120x40")],
        "RatecastSlowConsumerClosesRising", fired_at="25m", quiet_at="10m",
        labels={"severity": "warning"},
        summary="2 WebSocket clients per second are dropped for not reading", rules=rules)])


def test_near_connection_limit(tmp_path):
    # 45000 of 50000 (90 %) on one pod fires; 1000 on the other does not.
    promtool(tmp_path, lambda rules: [case(
        [(f'ratecast_ws_connections{{{SEL}, pod="{POD}"}}', "45000x10"),
         (f'ratecast_ws_connections{{{SEL}, pod="{FULLNAME}-quiet"}}', "1000x10")],
        "RatecastNearConnectionLimit", fired_at="6m", quiet_at="3m",
        labels={"severity": "warning", "pod": POD},
        summary=f"Pod {POD} holds 45000 WebSockets, near its limit", rules=rules)])
