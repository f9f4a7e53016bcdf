"""Assertions on what the chart renders: the behaviour each template promises."""
import base64
import json
import re

import pytest
import yaml

from conftest import (CHART, REPO, FULLNAME, NAMESPACE, VALUE_SETS, container, env, find, helm, helm_binaries, kinds, render,
                      render_error, template_args)
from metrics_contract import contract, metric_names

HARDENED_CONTAINER = {
    "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Metric names of the binary contract: dashboards and alerts may use nothing else. One list,
# shared with the test that scrapes the running binary (test_metric_contract.py).
CONTRACT_METRICS = contract()
ALERTS = {"RatecastDataStale", "RatecastUpstreamErrors", "RatecastNoReadyPods",
          "RatecastSlowConsumerClosesRising", "RatecastNearConnectionLimit"}
# Rendered with two upstreams (the default `config.upstream`) and without demo mode.
SOURCE_ALERTS = {"RatecastUpstreamFailover", "RatecastSourcesDisagree", "RatecastUnitHeld",
                 "RatecastFallbackSourceDown"}
# Rendered only with cluster.redis.enabled (prod and staging have it).
CLUSTER_ALERTS = {"RatecastClusterNoLeader", "RatecastClusterSplitLeader", "RatecastClusterStreamLag",
                  "RatecastClusterRedisErrors", "RatecastClusterLeaseFlapping", "RatecastClusterLostWrites"}
ALB_SETS = ["dev", "staging", "prod", "all"]


def seconds(duration):
    assert re.fullmatch(r"[0-9]+s", duration), duration
    return int(duration[:-1])


def pod_spec(docs):
    return find(docs, "Deployment")["spec"]["template"]["spec"]


def pod_labels(docs):
    return find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def port_number(docs, name):
    return next(p["containerPort"] for p in container(docs)["ports"] if p["name"] == name)


@pytest.mark.parametrize("value_set", VALUE_SETS)
class TestWorkload:
    def test_pod_and_container_are_hardened(self, value_set):
        docs = render(value_set)
        spec = pod_spec(docs)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container(docs)["securityContext"] == HARDENED_CONTAINER
        if "ServiceAccount" in kinds(docs):
            assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False

    def test_probes_hit_the_health_endpoints_on_the_listen_port(self, value_set):
        docs = render(value_set)
        c = container(docs)
        paths = {probe: c[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        assert {c[p]["httpGet"]["port"] for p in paths} == {"http"}
        listen = env(docs)
        assert listen["RATECAST_LISTEN"].endswith(f":{port_number(docs, 'http')}")
        assert listen["RATECAST_METRICS_LISTEN"].endswith(f":{port_number(docs, 'metrics')}")
        assert port_number(docs, "http") != port_number(docs, "metrics")

    def test_drain_fits_in_the_grace_period(self, value_set):
        docs = render(value_set)
        spec = pod_spec(docs)
        pre_stop = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = seconds(env(docs)["RATECAST_SHUTDOWN_GRACE"])
        assert pre_stop > 0
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + grace + 5

    def test_rollout_never_drops_below_the_wanted_count(self, value_set):
        deployment = find(render(value_set), "Deployment")
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    def test_pods_spread_across_zones_and_nodes(self, value_set):
        docs = render(value_set)
        constraints = pod_spec(docs)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for c in constraints:
            assert selects(c["labelSelector"]["matchLabels"], pod_labels(docs))

    def test_resources_have_requests_and_limits(self, value_set):
        resources = container(render(value_set))["resources"]
        for side in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[side])

    def test_api_key_comes_from_a_secret(self, value_set):
        docs = render(value_set)
        ref = env(docs)["RATECAST_API_KEY"]["secretKeyRef"]
        assert ref["key"] == "api-key"
        secrets = [d for d in docs if d["kind"] in ("Secret", "ExternalSecret")]
        if ref["name"] != "ratecast-coingecko":
            assert [s["metadata"]["name"] for s in secrets] == [ref["name"]]

    def test_service_routes_to_the_named_ports(self, value_set):
        docs = render(value_set)
        service = find(docs, "Service")
        assert selects(service["spec"]["selector"], pod_labels(docs))
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "metrics"}


def test_config_maps_to_the_contract_environment():
    e = env(render("all"))
    assert e["RATECAST_UPSTREAM_URL"] == "https://api.coingecko.com"
    assert e["RATECAST_POLL_INTERVAL"] == "30s" and e["RATECAST_REQUEST_TIMEOUT"] == "10s"
    assert e["RATECAST_DEMO"] == "false" and e["RATECAST_LOG_FORMAT"] == "json" and e["RUST_LOG"] == "info"
    assert e["RATECAST_SHUTDOWN_GRACE"] == "20s" and e["RATECAST_HEARTBEAT_INTERVAL"] == "15s"
    assert e["RATECAST_MAX_CONNECTIONS"] == "50000" and e["RATECAST_MAX_CONNECTIONS_PER_IP"] == "50"
    assert e["RATECAST_TRUSTED_PROXY"] == "10.0.0.0/16"
    assert e["RATECAST_ALLOWED_ORIGIN"] == "https://ratecast.example.com"
    assert e["RATECAST_STALE_AFTER"] == "2m" and e["EXTRA"] == "1"
    # Two upstreams (issue 22): the order is the priority.
    assert e["RATECAST_UPSTREAM"] == "coingecko,coinbase" and e["RATECAST_COINBASE_URL"] == "https://api.coinbase.com"
    assert e["RATECAST_CROSSCHECK_INTERVAL"] == "5m"
    assert e["RATECAST_CROSSCHECK_WARN_PERCENT"] == "2" and e["RATECAST_CROSSCHECK_HOLD_PERCENT"] == "10"
    assert env(render("default", ["config.upstream={coingecko}", "config.failoverAfter=90s"]))["RATECAST_UPSTREAM"] == "coingecko"
    assert env(render("default", ["config.failoverAfter=90s"]))["RATECAST_FAILOVER_AFTER"] == "90s"
    assert env(render("default", ["config.demo=true"]))["RATECAST_DEMO"] == "true"
    # Unset optional settings are left to the server's defaults.
    assert not {"RATECAST_TRUSTED_PROXY", "RATECAST_MAX_CONNECTIONS_PER_IP", "RATECAST_ALLOWED_ORIGIN",
                "RATECAST_STALE_AFTER", "RATECAST_FAILOVER_AFTER"} & set(env(render("default")))


def test_chart_managed_secret_rolls_the_pods():
    docs = render("all-generic")
    secret = find(docs, "Secret", f"{FULLNAME}-api-key")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == "dev-key-not-secret"
    assert env(docs)["RATECAST_API_KEY"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert "checksum/api-key" in find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_external_secret_writes_the_existing_secret():
    docs = render("prod")
    es = find(docs, "ExternalSecret", "ratecast-coingecko")["spec"]
    assert es["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "aws-secrets-manager"}
    assert es["target"]["name"] == env(docs)["RATECAST_API_KEY"]["secretKeyRef"]["name"]
    assert es["data"] == [{"secretKey": "api-key", "remoteRef": {"key": "ratecast/prod/coingecko-api-key"}}]
    assert env(docs)["RATECAST_API_KEY"]["secretKeyRef"]["optional"] is False


@pytest.mark.parametrize("value_set", ALB_SETS)
def test_alb_ingress_is_sticky_and_keeps_websockets_open(value_set):
    docs = render(value_set)
    ingress = find(docs, "Ingress")
    a = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert a["alb.ingress.kubernetes.io/target-type"] == "ip"
    tg = dict(kv.split("=") for kv in a["alb.ingress.kubernetes.io/target-group-attributes"].split(","))
    assert tg["stickiness.enabled"] == "true" and tg["stickiness.type"] == "lb_cookie"
    assert int(tg["stickiness.lb_cookie.duration_seconds"]) >= 3600
    # Not a day: after a scale-out, returning clients would keep landing on the old pods.
    assert int(tg["stickiness.lb_cookie.duration_seconds"]) <= 3600
    # The ALB drains a target exactly as long as the pod keeps serving after it is told to stop.
    pre_stop = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert int(tg["deregistration_delay.timeout_seconds"]) == pre_stop + seconds(env(docs)["RATECAST_SHUTDOWN_GRACE"])
    idle = a["alb.ingress.kubernetes.io/load-balancer-attributes"]
    assert int(re.fullmatch(r"idle_timeout.timeout_seconds=([0-9]+)", idle).group(1)) >= 600
    assert a["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
    assert json.loads(a["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert a["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert a["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}


def test_alb_deregistration_delay_override_and_user_annotations():
    docs = render("all", ["ingress.alb.deregistrationDelaySeconds=45"])
    a = find(docs, "Ingress")["metadata"]["annotations"]
    assert "deregistration_delay.timeout_seconds=45" in a["alb.ingress.kubernetes.io/target-group-attributes"]
    assert a["alb.ingress.kubernetes.io/tags"] == "service=ratecast"
    assert a["alb.ingress.kubernetes.io/group.name"] == "ratecast"


def test_generic_ingress_carries_only_the_users_annotations():
    # Any controller other than the ALB: its class, TLS and its own affinity/timeout annotations
    # come from the values; the chart adds none (and no ALB ones).
    ingress = find(render("all-generic"), "Ingress")
    a = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert a == {"traefik.ingress.kubernetes.io/service.sticky.cookie": "true"}
    assert ingress["spec"]["tls"] == [{"hosts": ["ratecast.example.com"], "secretName": "ratecast-tls"}]


def test_chart_has_no_ingress_nginx_branch():
    # Retired upstream in March 2026: no security fixes, so the chart no longer steers anyone to it.
    for path in (p for p in (CHART / "templates").rglob("*") if p.is_file()):
        assert "nginx.ingress.kubernetes.io" not in path.read_text(), path


def test_httproute_targets_the_service():
    docs = render("all")
    route = find(docs, "HTTPRoute")["spec"]
    service_port = find(docs, "Service")["spec"]["ports"][0]
    assert route["parentRefs"] == [{"name": "public", "namespace": "gateway"}]
    assert route["rules"][0]["backendRefs"] == [{"name": FULLNAME, "port": service_port["port"]}]
    assert route["rules"][0]["timeouts"] == {"request": "0s"}


@pytest.mark.parametrize("value_set, bounds", [("staging", (2, 4)), ("prod", (3, 12)), ("all", (2, 6))])
def test_hpa_bounds_and_stabilisation(value_set, bounds):
    docs = render(value_set)
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == bounds
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert "replicas" not in find(docs, "Deployment")["spec"], "the HPA owns the replica count"
    resources = {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


@pytest.mark.parametrize("value_set", ["prod", "all"])
def test_hpa_scales_on_websocket_connections(value_set):
    hpa = find(render(value_set), "HorizontalPodAutoscaler")["spec"]
    pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert len(pods) == 1 and pods[0]["metric"]["name"] == "ratecast_ws_connections"
    assert pods[0]["target"]["type"] == "AverageValue"


@pytest.mark.parametrize("value_set, replicas", [("default", 2), ("dev", 1)])
def test_fixed_replicas_without_hpa(value_set, replicas):
    docs = render(value_set)
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    assert find(docs, "Deployment")["spec"]["replicas"] == replicas


@pytest.mark.parametrize("value_set, budget", [
    ("default", {"maxUnavailable": 1}), ("staging", {"minAvailable": 1}), ("prod", {"maxUnavailable": 1}),
    ("all-generic", {"minAvailable": "50%"}), ("dev", None)])
def test_pod_disruption_budget(value_set, budget):
    docs = render(value_set)
    if budget is None:
        assert "PodDisruptionBudget" not in kinds(docs), "one replica: a PDB would block node drains"
        return
    pdb = find(docs, "PodDisruptionBudget")["spec"]
    assert {k: v for k, v in pdb.items() if k in ("minAvailable", "maxUnavailable")} == budget
    assert selects(pdb["selector"]["matchLabels"], pod_labels(docs))


def network_policy_rules(value_set):
    docs = render(value_set)
    policy = find(docs, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(docs))
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = {tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in policy["ingress"]}
    return docs, policy, ingress


@pytest.mark.parametrize("value_set, app_sources", [
    ("default", []),
    ("prod", [{"ipBlock": {"cidr": "10.30.0.0/16"}}]),
    ("all", [{"ipBlock": {"cidr": "10.0.0.0/16"}},
             {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}]),
    ("all-generic", [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}}]),
])
def test_network_policy_ingress(value_set, app_sources):
    docs, _, ingress = network_policy_rules(value_set)
    assert set(ingress) == {("http",), ("metrics",)}, "only the app and metrics ports, each with sources"
    test_pod = find(docs, "Pod", f"{FULLNAME}-test")["metadata"]["labels"]
    app = ingress[("http",)]
    assert app[:-1] == app_sources
    assert selects(app[-1]["podSelector"]["matchLabels"], test_pod), "the helm test pod reaches the app port"
    assert not selects(find(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], test_pod)
    assert ingress[("metrics",)] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_network_policy_egress_is_dns_and_https_only(value_set):
    # ... and Redis in cluster mode (its rule: test_staging_and_prod_run_cluster_mode_…). The one
    # HTTPS rule serves both upstreams (CoinGecko, api.coinbase.com: CDNs, no fixed addresses).
    _, policy, _ = network_policy_rules(value_set)
    cluster = value_set in CLUSTER_ENVS or value_set == "all"
    ports = sorted((p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), *([("TCP", 6379)] if cluster else []), ("UDP", 53)]
    dns, *redis, https = policy["egress"]
    assert len(redis) == int(cluster)
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert https["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]


def test_service_monitor_scrapes_the_metrics_port():
    docs = render("all")
    monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("metrics", "/metrics")]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_pod_monitor_option():
    docs = render("all-generic")
    assert "ServiceMonitor" not in kinds(docs)
    monitor = find(docs, "PodMonitor")["spec"]
    assert selects(monitor["selector"]["matchLabels"], pod_labels(docs))
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"]
    # Alerts select the PodMonitor's job label, namespace/name.
    rule = find(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]
    assert f'job="{NAMESPACE}/{FULLNAME}"' in rule["expr"]


def alerts(value_set, sets=()):
    rule = find(render(value_set, sets), "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_alerts_cover_the_failure_modes_with_runbooks():
    rules = alerts("prod")
    assert set(rules) == ALERTS | SOURCE_ALERTS | CLUSTER_ALERTS
    # runbook_url points at docs/operations.md#<alert>: every alert has its section there.
    runbook = (REPO / "docs/operations.md").read_text()
    for name, rule in rules.items():
        assert rule["annotations"]["runbook"] and rule["annotations"]["summary"]
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        assert re.search(rf"^### {name}$", runbook, re.M), f"docs/operations.md has no section for {name}"
        assert rule["labels"]["team"] == "ratecast"
        assert metric_names(rule["expr"]) <= CONTRACT_METRICS
    assert '> 300' in rules["RatecastDataStale"]["expr"] and rules["RatecastDataStale"]["labels"]["severity"] == "critical"
    assert f'job="{FULLNAME}"' in rules["RatecastDataStale"]["expr"], "selects the ServiceMonitor's job"
    assert 'outcome!="ok"' in rules["RatecastUpstreamErrors"]["expr"]
    assert f'deployment="{FULLNAME}"' in rules["RatecastNoReadyPods"]["expr"]
    assert "ratecast_ws_slow_consumer_closes_total" in rules["RatecastSlowConsumerClosesRising"]["expr"]
    # The connection alert follows the configured per-pod limit.
    assert rules["RatecastNearConnectionLimit"]["expr"].endswith("> 0.8 * 50000")
    assert alerts("prod", ["config.maxConnections=1000"])["RatecastNearConnectionLimit"]["expr"].endswith("> 0.8 * 1000")


def test_source_alerts_follow_the_upstream_list_and_read_only_the_poller():
    rules = alerts("prod")
    # The primary is the first of config.upstream; the fallback, the second.
    assert 'source!="coingecko"' in rules["RatecastUpstreamFailover"]["expr"]
    assert rules["RatecastUpstreamFailover"]["for"] == "10m"
    assert 'source="coinbase"' in rules["RatecastFallbackSourceDown"]["expr"]
    # The warning threshold is the server's own (a percentage there, a ratio in the metric).
    assert rules["RatecastSourcesDisagree"]["expr"].endswith("> 0.02")
    assert alerts("prod", ["config.crosscheckWarnPercent=3"])["RatecastSourcesDisagree"]["expr"].endswith("> 0.03")
    assert 'flag="held"' in rules["RatecastUnitHeld"]["expr"]
    # Cluster mode: only the leader polls, and a pod that led keeps its last gauges.
    for name in SOURCE_ALERTS:
        assert "ratecast_cluster_leader" in rules[name]["expr"], name
        assert "ratecast_cluster_leader" not in alerts("all", ["cluster.redis.enabled=false"])[name]["expr"], name
    # One source, or the demo source: nothing to fail over to or cross-check.
    assert not SOURCE_ALERTS & set(alerts("prod", ["config.upstream={coingecko}"]))
    assert not SOURCE_ALERTS & set(alerts("prod", ["config.demo=true"]))
    assert "crosscheckHoldPercent must not be below" in render_error("config.crosscheckHoldPercent=1")


@pytest.mark.parametrize("value_set, on", [("dev", False), ("staging", True), ("prod", True), ("default", False)])
def test_alerts_per_environment(value_set, on):
    assert ("PrometheusRule" in kinds(render(value_set))) is on


def test_grafana_dashboard():
    cm = find(render("all"), "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["ratecast.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*map(metric_names, exprs))
    assert used <= CONTRACT_METRICS, used - CONTRACT_METRICS
    assert {"ratecast_ws_connections", "ratecast_ws_frames_sent_total", "ratecast_ws_delivery_delay_seconds",
            "ratecast_upstream_request_duration_seconds", "ratecast_upstream_requests_total",
            "ratecast_data_age_seconds", "ratecast_upstream_serving", "ratecast_units_by_source",
            "ratecast_units_flagged", "ratecast_crosscheck_divergence_ratio"} <= used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_helm_test_pod_uses_the_app_image_and_checks_readiness_and_a_snapshot():
    docs = render("all")
    pod = find(docs, "Pod", f"{FULLNAME}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    image = container(docs)["image"]
    port = find(docs, "Service")["spec"]["ports"][0]["port"]
    steps = spec["initContainers"] + spec["containers"]
    assert [c["args"] for c in steps] == [
        ["healthcheck", "--url", f"http://{FULLNAME}:{port}/readyz"],
        ["watch", "--url", f"ws://{FULLNAME}:{port}/ws", "--json", "--max-frames", "1"]]
    for c in steps:
        assert c["image"] == image and c["securityContext"] == HARDENED_CONTAINER
        assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize("value_set", ["staging", "prod"])
def test_shared_environments_require_the_api_key(value_set):
    docs = render(value_set)
    ref = env(docs)["RATECAST_API_KEY"]["secretKeyRef"]
    assert ref["optional"] is False
    key = find(docs, "ExternalSecret", ref["name"])["spec"]["data"][0]["remoteRef"]["key"]
    assert key == f"ratecast/{value_set}/coingecko-api-key"


def render_values_file(tmp_path, text, value_set="default"):
    """Renders with an extra values file: numbers in a file are read as float64 by Helm, unlike
    --set, which is what turned 1000000 into "1e+06"."""
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    out = helm(helm_binaries()["HELM4"], *template_args(value_set), "-f", str(extra)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_large_numbers_render_as_integers(tmp_path):
    docs = render_values_file(tmp_path, """
config: {maxConnections: 1000000, maxConnectionsPerIp: 2000000, shutdownGraceSeconds: 20}
""")
    e = env(docs)
    assert e["RATECAST_MAX_CONNECTIONS"] == "1000000"
    assert e["RATECAST_MAX_CONNECTIONS_PER_IP"] == "2000000"
    assert e["RATECAST_SHUTDOWN_GRACE"] == "20s"


@pytest.mark.parametrize("cidrs, expected", [
    # CoinGecko's CDN range alone: the metadata address is not inside it, so no except at all.
    (["104.16.0.0/12"], [{"ipBlock": {"cidr": "104.16.0.0/12"}}]),
    (["104.16.0.0/12", "0.0.0.0/0"], [{"ipBlock": {"cidr": "104.16.0.0/12"}},
                                       {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]),
    (["169.254.0.0/16"], [{"ipBlock": {"cidr": "169.254.0.0/16", "except": ["169.254.169.254/32"]}}]),
    (["169.254.169.0/25"], [{"ipBlock": {"cidr": "169.254.169.0/25"}}]),
    (["::/0"], [{"ipBlock": {"cidr": "::/0"}}]),
])
def test_https_egress_except_only_within_its_cidr(tmp_path, cidrs, expected):
    # The API server rejects an except entry outside its ipBlock's CIDR.
    docs = render_values_file(tmp_path, "networkPolicy: {httpsEgressCidrs: %s}\n" % cidrs)
    https = find(docs, "NetworkPolicy")["spec"]["egress"][1]
    assert https["to"] == expected


def test_local_values_run_offline_on_a_node_port():
    docs = render("local")
    assert "Ingress" not in kinds(docs) and "ServiceMonitor" not in kinds(docs)
    service = find(docs, "Service")["spec"]
    assert service["type"] == "NodePort"
    assert service["ports"][0]["nodePort"] == 30080 and service["ports"][0]["name"] == "http"
    c = container(docs)
    assert c["imagePullPolicy"] == "Never" and c["image"] == "ratecast:local"
    assert env(docs)["RATECAST_DEMO"] == "true"
    assert find(docs, "Deployment")["spec"]["replicas"] == 1


def test_local_values_with_an_httproute_instead(tmp_path):
    # docs/local-kubernetes.md's Gateway API variant.
    docs = render("local", ["service.type=ClusterIP", "httpRoute.enabled=true",
                            "httpRoute.parentRefs[0].name=local", "httpRoute.parentRefs[0].namespace=gateway",
                            "networkPolicy.ingressFrom.namespaces={gateway}"])
    route = find(docs, "HTTPRoute")["spec"]
    assert route["parentRefs"] == [{"name": "local", "namespace": "gateway"}]
    assert "nodePort" not in find(docs, "Service")["spec"]["ports"][0]


CLUSTER_ENVS = {"staging": "10.20.0.0/16", "prod": "10.30.0.0/16"}


def test_cluster_mode_is_off_by_default():
    for value_set in sorted(set(VALUE_SETS) - set(CLUSTER_ENVS) - {"all"}):
        docs = render(value_set)
        assert "RATECAST_REDIS_URL" not in env(docs), value_set
        assert not [d for d in docs if d["kind"] == "ExternalSecret" and d["metadata"]["name"] == "ratecast-redis"]


    # No cluster alerts without cluster metrics.
    assert not set(alerts("dev", ["metrics.prometheusRule.enabled=true"])) & CLUSTER_ALERTS


@pytest.mark.parametrize("value_set", sorted(CLUSTER_ENVS))
def test_staging_and_prod_run_cluster_mode_with_the_url_from_secrets_manager(value_set):
    # Issue 13 point 8: the URL from Secrets Manager ratecast/<env>/redis (Terraform's cache module)
    # through an ExternalSecret into the pods' env; egress to Redis on 6379 to the VPC only.
    docs = render(value_set)
    variables = env(docs)
    assert variables["RATECAST_REDIS_URL"] == {"secretKeyRef": {"name": "ratecast-redis", "key": "url"}}
    assert variables["RATECAST_CLUSTER_LEASE_TTL"] == "10s"
    es = find(docs, "ExternalSecret", "ratecast-redis")["spec"]
    assert es["target"]["name"] == "ratecast-redis"
    assert es["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "aws-secrets-manager"}
    assert es["data"] == [{"secretKey": "url", "remoteRef": {"key": f"ratecast/{value_set}/redis", "property": "url"}}]
    egress = find(docs, "NetworkPolicy")["spec"]["egress"]
    redis = [rule for rule in egress if rule["ports"] == [{"port": 6379, "protocol": "TCP"}]]
    assert redis == [{"ports": [{"port": 6379, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": CLUSTER_ENVS[value_set]}}]}]
    rules = alerts(value_set)
    assert CLUSTER_ALERTS <= set(rules)
    assert rules["RatecastClusterNoLeader"]["for"] == "20s", "2 lease TTLs"


def test_cluster_lease_ttl_and_key_prefix_flow_to_the_pods_and_the_no_leader_alert():
    sets = ["cluster.leaseTtlSeconds=15", "cluster.keyPrefix=ratecast-blue"]
    variables = env(render("prod", sets))
    assert variables["RATECAST_CLUSTER_LEASE_TTL"] == "15s"
    assert variables["RATECAST_CLUSTER_KEY_PREFIX"] == "ratecast-blue"
    assert alerts("prod", sets)["RatecastClusterNoLeader"]["for"] == "30s"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_meets_pod_security_restricted(value_set):
    # The app namespace enforces Pod Security Admission `restricted` (Terraform's bootstrap
    # chart): a pod that does not meet it, the helm test pod included, is refused at deploy time.
    docs = render(value_set)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    pods += [d["spec"] for d in docs if d["kind"] == "Pod"]
    assert pods
    for spec in pods:
        pod_ctx = spec.get("securityContext", {})
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert all("hostPath" not in v for v in spec.get("volumes", []))
        for c in spec.get("initContainers", []) + spec["containers"]:
            ctx = c.get("securityContext", {})
            assert ctx.get("allowPrivilegeEscalation") is False, c["name"]
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
            assert not set(ctx.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}, c["name"]
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, c["name"]
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), c["name"]
            assert not ctx.get("privileged"), c["name"]
