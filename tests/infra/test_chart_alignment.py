"""The Helm chart's per-env values (deploy/helm/ratecast) and the Terraform of the same env must
agree: VPC CIDR as trusted proxy, secret names, and the cluster add-ons the chart relies on."""
import re

import pytest
import yaml

from hcl import ENVS, INFRA, REPO, blocks, env_module, node_group_totals

CHART = REPO / "deploy" / "helm" / "ratecast"


def merged(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def values(env):
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    return merged(base, yaml.safe_load((CHART / f"values-{env}.yaml").read_text()) or {})


def platform_default(name):
    return blocks(INFRA / "modules" / "platform", "variable")[name]["default"]


@pytest.mark.parametrize("env", ENVS)
def test_trusted_proxy_and_network_policy_are_the_vpc_cidr(env):
    cidr = env_module(env)["vpc_cidr"]
    v = values(env)
    assert v["config"]["trustedProxies"] == [cidr], "the ALB (target-type ip) reaches pods from VPC addresses"
    assert cidr in v["networkPolicy"]["ingressFrom"]["cidrs"]


@pytest.mark.parametrize("env", ENVS)
def test_api_key_secret_names_match(env):
    v = values(env)
    assert v["apiKey"]["existingSecret"] == platform_default("api_key_secret_name")
    assert v["apiKey"]["secretKey"] == platform_default("api_key_secret_key")
    assert v["externalSecret"]["secretStoreName"] == platform_default("secret_store_name")
    assert v["externalSecret"]["remoteKey"] == f"ratecast/{env}/coingecko-api-key"
    assert v["externalSecret"]["remoteProperty"] == "", "Terraform's secret holds a plain string"
    # Exactly one ExternalSecret writes the Secret: the chart's, or Terraform's bootstrap one.
    assert v["externalSecret"]["enabled"] != platform_default("create_external_secret")
    assert "create_external_secret" not in blocks(INFRA / "modules" / "environment" / "main.tf", "module")["platform"]


@pytest.mark.parametrize("env", ENVS)
def test_cluster_has_what_the_chart_renders(env):
    v = values(env)
    needs_monitoring = (
        v["metrics"]["serviceMonitor"]["enabled"]
        or v["metrics"].get("prometheusRule", {}).get("enabled")
        or v["dashboard"]["enabled"]
        or (v["autoscaling"]["enabled"] and v["autoscaling"]["wsConnections"]["enabled"])
    )
    if needs_monitoring:
        assert env_module(env)["enable_monitoring"] is True, f"{env}: the chart needs the monitoring stack"
    if v["dashboard"]["enabled"]:
        assert v["dashboard"]["namespace"] == "monitoring"


@pytest.mark.parametrize("env", ENVS)
def test_pods_fit_the_zones(env):
    v = values(env)
    if v.get("topologySpread", {}).get("zoneWhenUnsatisfiable") == "DoNotSchedule":
        groups = node_group_totals(env).values()
        assert min(g["min_size"] for g in groups if g["capacity_type"] == "ON_DEMAND") >= env_module(env)["az_count"]
        # A pod held Pending by DoNotSchedule needs a node in one particular zone: the cluster
        # autoscaler can only add one through a node group confined to that zone.
        for name, g in env_module(env)["node_groups"].items():
            assert g.get("one_per_az") is True, f"{env}/{name}: DoNotSchedule zone spread needs one node group per AZ"


def test_network_policies_are_enforced_and_let_prometheus_in():
    v = values("prod")
    assert v["networkPolicy"]["enabled"]
    cluster = (INFRA / "modules" / "cluster" / "main.tf").read_text()
    assert re.search(r'enableNetworkPolicy\s*=\s*"true"', cluster), "VPC CNI must enforce the chart's NetworkPolicy"
    assert v["networkPolicy"]["monitoringNamespace"] == "monitoring"


@pytest.mark.parametrize("env", ENVS)
def test_ingress_host_follows_the_certificates_naming(env):
    certificate = (INFRA / "modules" / "environment" / "certificate.tf").read_text()
    assert '"ratecast.${coalesce(var.dns_zone_name, "-")}"' in certificate
    assert '"ratecast.${var.environment}.${coalesce(var.dns_zone_name, "-")}"' in certificate
    expected = r"ratecast\.[a-z0-9.-]+" if env == "prod" else rf"ratecast\.{env}\.[a-z0-9.-]+"
    (host,) = values(env)["ingress"]["hosts"]
    assert re.fullmatch(expected, host), host
    assert values(env)["ingress"]["alb"]["certificateArn"] == "", "the pipeline passes the certificate ARN"
