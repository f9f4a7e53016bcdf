"""Renders the bootstrap chart Terraform installs (infra/modules/platform/charts/ratecast-bootstrap)
with Helm, with the values Terraform passes, and checks what reaches the cluster. The stage sets
HELM (Helm 3 from .ci/helm/install-tools.sh)."""
import os
import subprocess

import pytest
import yaml

from hcl import INFRA

CHART = INFRA / "modules" / "platform" / "charts" / "ratecast-bootstrap"
BASE = [
    "--namespace", "ratecast",
    "--set", "region=eu-west-1",
    "--set", "externalSecret.remoteKey=ratecast/dev/coingecko-api-key",
]


def helm(*args, check=True):
    binary = os.environ.get("HELM")
    if not binary:
        pytest.fail("HELM is not set: run these tests through .ci/stages/infra.sh")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=check)


def render(*extra):
    out = helm("template", "ratecast-bootstrap", str(CHART), *BASE, *extra).stdout
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
            for d in yaml.safe_load_all(out) if d}


def test_chart_lints():
    result = helm("lint", str(CHART), *BASE, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_the_store_and_the_deployer_rbac_only():
    docs = render()
    store = docs[("ClusterSecretStore", None, "aws-secrets-manager")]
    assert store["apiVersion"] == "external-secrets.io/v1"
    assert store["spec"]["provider"]["aws"] == {"service": "SecretsManager", "region": "eu-west-1"}
    assert not [k for k in docs if k[0] == "ExternalSecret"], "the app chart owns the ExternalSecret by default"
    binding = docs[("RoleBinding", "ratecast", "ratecast-deployer-extras")]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ratecast:deployers"}]
    role = docs[("Role", "ratecast", "ratecast-deployer-extras")]
    groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
    assert {"monitoring.coreos.com", "external-secrets.io"} <= groups
    assert not [k for k in docs if k[1] == "monitoring"]


def test_external_secret_writes_the_charts_existing_secret_when_enabled():
    docs = render("--set", "externalSecret.enabled=true")
    secret = docs[("ExternalSecret", "ratecast", "ratecast-coingecko")]
    assert secret["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "aws-secrets-manager"}
    assert secret["spec"]["target"]["name"] == "ratecast-coingecko"
    assert secret["spec"]["data"] == [{"secretKey": "api-key", "remoteRef": {"key": "ratecast/dev/coingecko-api-key"}}]


def test_dashboard_namespace_gets_configmap_rights():
    docs = render("--set", "dashboardNamespace=monitoring")
    role = docs[("Role", "monitoring", "ratecast-deployer-dashboards")]
    assert role["rules"][0]["resources"] == ["configmaps"]
    assert docs[("RoleBinding", "monitoring", "ratecast-deployer-dashboards")]["subjects"][0]["name"] == "ratecast:deployers"


def test_region_is_required():
    result = helm("template", "x", str(CHART), "--set", "externalSecret.remoteKey=k", check=False)
    assert result.returncode != 0 and "region is required" in result.stderr


def test_app_namespace_injects_alb_readiness_gates_and_enforces_restricted_pods():
    # Without the readiness gate, a rollout of 1-3 pods ends old pods before the new ALB targets
    # are healthy: 502/503s on every deploy.
    ns = render()[("Namespace", None, "ratecast")]
    labels = ns["metadata"]["labels"]
    assert labels["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_monitoring_namespace_storage_class_and_alertmanager_receivers():
    docs = render("--set", "dashboardNamespace=monitoring", "--set", "alertmanagerReceivers.enabled=true",
                  "--set", "alertmanagerReceivers.remoteKey=ratecast/dev/alertmanager-receivers")
    ns = docs[("Namespace", None, "monitoring")]["metadata"]["labels"]
    # node-exporter needs host namespaces: only `privileged` admits it.
    assert ns["pod-security.kubernetes.io/enforce"] == "privileged"
    sc = docs[("StorageClass", None, "gp3-encrypted")]
    assert sc["provisioner"] == "ebs.csi.aws.com"
    assert sc["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer" and sc["reclaimPolicy"] == "Retain"
    es = docs[("ExternalSecret", "monitoring", "alertmanager-receivers")]["spec"]
    assert es["target"]["name"] == "alertmanager-receivers"
    assert es["dataFrom"] == [{"extract": {"key": "ratecast/dev/alertmanager-receivers"}}]


def test_terraform_passes_what_the_bootstrap_chart_reads():
    from hcl import blocks, resources
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    bootstrap = resources(INFRA / "modules" / "platform", "helm_release")["bootstrap"]
    passed = bootstrap["values"][0]
    for key in ("appNamespace", "storageClass", "alertmanagerReceivers", "dashboardNamespace"):
        assert key in values and key in passed, key
    # The release lives outside the namespaces it creates, so it can own (and label) them.
    assert bootstrap["namespace"] == "kube-system" and "create_namespace" not in bootstrap
    assert blocks(INFRA / "modules" / "platform", "locals")["storage_class"] == values["storageClass"]["name"]
