"""What the platform module installs into each cluster: monitoring that reaches a person and that
EKS can actually scrape, Prometheus on persistent storage, the install order those need, and a
cluster autoscaler matched to the cluster's minor."""
import re

import yaml

from hcl import ENVS, INFRA, blocks, env_module, resources

PLATFORM = INFRA / "modules" / "platform"


def locals_():
    return blocks(PLATFORM / "main.tf", "locals")


def controller_values(name):
    """The values of a controller, as the HCL object before yamlencode()."""
    text = (PLATFORM / "main.tf").read_text()
    start = text.index(f"    {name} = {{")
    return text[start:text.index("\n    }\n", start)]


def test_kube_prometheus_stack_scrapes_nothing_eks_hides():
    kps = controller_values("kube-prometheus-stack")
    # EKS runs the control plane; kube-proxy binds metrics to localhost: targets always down.
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert re.search(rf"{component}\s+= {{ enabled = false }}", kps), component
    for rule in ("etcd", "kubeControllerManager", "kubeSchedulerAlerting", "kubeSchedulerRecording", "kubeProxy"):
        assert re.search(rf"\b{rule}\s+= false", kps), rule


def test_prometheus_and_alertmanager_keep_their_data_on_encrypted_ebs():
    kps = controller_values("kube-prometheus-stack")
    assert kps.count("storageClassName = local.storage_class") == 2
    assert "var.prometheus_storage_size" in kps
    cluster = blocks(INFRA / "modules" / "cluster" / "main.tf", "module")["eks"]
    assert "aws-ebs-csi-driver" in cluster["addons"]


def test_alerts_reach_slack_and_critical_ones_page_in_prod():
    config = locals_()["alertmanager_config"]
    assert config["route"]["receiver"] == "slack"
    text = str(config)
    assert "api_url_file" in text and "routing_key_file" in text, "credentials from mounted files, never in values"
    routes = config["route"]["routes"]
    assert r'receiver = "pagerduty", matchers = ["severity = \"critical\""], continue = true' in routes
    assert "var.alert_receivers.pagerduty ?" in routes
    kps = controller_values("kube-prometheus-stack")
    assert "optional = true" in kps, "Alertmanager must start before the receivers' secret has a value"
    receivers = {e: env_module(e)["alert_receivers"] for e in ENVS}
    assert receivers["prod"]["pagerduty"] is True
    assert not receivers["dev"].get("pagerduty") and not receivers["staging"].get("pagerduty")
    assert all(r["slack_channel"].startswith("#") for r in receivers.values())
    secret = resources(PLATFORM, "aws_secretsmanager_secret")["alertmanager_receivers"]
    assert secret["name"] == "ratecast/${var.environment}/alertmanager-receivers"
    # ESO may read it (and the API key) only.
    assert locals_()["eso_readable_secret_arns"] == (
        "${concat([aws_secretsmanager_secret.api_key.arn], aws_secretsmanager_secret.alertmanager_receivers[*].arn, "
        "var.extra_readable_secret_arns)}")


def test_monitoring_installs_after_the_bootstrap_chart_and_that_after_the_controllers():
    stages = blocks(PLATFORM / "main.tf", "module")
    releases = resources(PLATFORM, "helm_release")
    assert stages["controllers"]["source"] == stages["monitoring"]["source"] == "./releases"
    assert " in local.controllers :" in stages["controllers"]["releases"]
    assert " in local.monitoring_releases :" in stages["monitoring"]["releases"]
    assert releases["bootstrap"]["depends_on"] == ["${module.controllers}"]
    assert "${helm_release.bootstrap}" in stages["monitoring"]["depends_on"]
    assert stages["monitoring"]["create_namespace"] is False, "the bootstrap chart owns the monitoring namespace"
    # Every release is atomic and waits: a broken controller fails the apply.
    (release,) = resources(PLATFORM / "releases", "helm_release").values()
    assert release["atomic"] is True and release["wait"] is True


def test_cluster_autoscaler_image_matches_the_cluster_minor():
    assert "image              = { tag = local.cluster_autoscaler_image_tag }" in controller_values("cluster-autoscaler")
    tags = blocks(PLATFORM, "variable")["cluster_autoscaler_image_tags"]["default"]
    default_version = blocks(INFRA / "modules" / "environment", "variable")["kubernetes_version"]["default"]
    assert tags[default_version] == f"v{default_version}.0"
    for minor, tag in tags.items():
        assert tag.startswith(f"v{minor}."), (minor, tag)
    # An upgrade to a minor without a tag stops at plan time.
    check = resources(PLATFORM, "terraform_data")["autoscaler_image_for_this_minor"]
    (precondition,) = check["lifecycle"][0]["precondition"]
    assert precondition["condition"] == "${local.cluster_autoscaler_image_tag != null}"
    controllers = blocks(PLATFORM / "main.tf", "module")["controllers"]
    assert "${terraform_data.autoscaler_image_for_this_minor}" in controllers["depends_on"]
    platform_call = blocks(INFRA / "modules" / "environment" / "main.tf", "module")["platform"]
    assert platform_call["kubernetes_version"] == "${var.kubernetes_version}"


def test_the_hpa_metric_is_served_from_the_persistent_prometheus():
    adapter = controller_values("prometheus-adapter")
    assert "ratecast_ws_connections" in adapter
    assert "kube-prometheus-stack-prometheus.monitoring.svc" in adapter


def test_cluster_mode_valkey_is_on_in_staging_and_prod_private_and_encrypted():
    # Issue 13 point 8: staging and prod run cluster mode; dev stays standalone (one replica).
    sizes = {e: env_module(e)["redis"] for e in ENVS}
    assert {e: s["enabled"] for e, s in sizes.items()} == {"dev": False, "staging": True, "prod": True}
    assert [sizes[e]["node_count"] for e in ENVS] == [1, 2, 3], "one node in dev, failover from staging on"
    # prod: a node per AZ, so failover and Multi-AZ (both `node_count > 1`) have a replica in
    # another zone to promote.
    assert sizes["prod"]["node_count"] == env_module("prod")["az_count"] == 3
    cache = INFRA / "modules" / "cache"
    valkey = blocks(cache / "main.tf", "module")["valkey"]
    assert valkey["engine"] == "valkey"
    assert valkey["transit_encryption_enabled"] is True and valkey["transit_encryption_mode"] == "required"
    assert valkey["at_rest_encryption_enabled"] is True and valkey["auth_token"] == "${random_password.auth_token.result}"
    assert valkey["automatic_failover_enabled"] == valkey["multi_az_enabled"] == "${var.node_count > 1}"
    # Reachable from the nodes only.
    (rule,) = valkey["security_group_rules"].values()
    assert set(rule) == {"description", "referenced_security_group_id"}
    assert rule["referenced_security_group_id"] == "${var.node_security_group_id}"
    call = blocks(INFRA / "modules" / "environment" / "main.tf", "module")["cache"]
    assert call["node_security_group_id"] == "${module.cluster.node_security_group_id}"
    assert call["count"] == "${var.redis.enabled ? 1 : 0}"
    # Its URL is readable by External Secrets, for the chart's cluster.redis.externalSecret.
    assert resources(cache, "aws_secretsmanager_secret")["url"]["name"] == "ratecast/${var.environment}/redis"
    platform = blocks(INFRA / "modules" / "environment" / "main.tf", "module")["platform"]
    assert platform["extra_readable_secret_arns"] == "${module.cache[*].url_secret_arn}"
    # The secret's URL is TLS (rediss://) to the primary endpoint, carrying the AUTH token.
    version = resources(cache, "aws_secretsmanager_secret_version")["url"]
    assert 'url = "rediss://:${urlencode(random_password.auth_token.result)}@' in version["secret_string"]
    assert "module.valkey.replication_group_primary_endpoint_address" in version["secret_string"]


def test_the_chart_values_read_the_secret_terraform_writes():
    # The env's values file reads ratecast/<env>/redis (the name the cache module writes) and opens
    # egress to that env's VPC CIDR, where the cache subnets are; only where Terraform creates it.
    for e in ENVS:
        values = yaml.safe_load((INFRA.parent / "deploy" / "helm" / "ratecast" / f"values-{e}.yaml").read_text())
        redis = values.get("cluster", {}).get("redis", {})
        assert bool(redis.get("enabled")) == env_module(e)["redis"]["enabled"], e
        if redis.get("enabled"):
            assert redis["externalSecret"] == {"enabled": True, "remoteKey": f"ratecast/{e}/redis"}
            assert redis["egressCidrs"] == [env_module(e)["vpc_cidr"]]
