"""The chart through the real tools: helm lint, Helm 3 vs 4, schema validation of every manifest."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CHART, REPO, VALUE_SETS, helm, helm_binaries, render_error, render_text, template_args, value_args

# Current EKS and the chart's kubeVersion floor.
KUBE_VERSIONS = ["1.35.0", "1.30.0"]
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
CRD_VALIDATOR = REPO / ".ci/helm/crd/validate-crds.mjs"


@pytest.mark.parametrize("helm_name", ["HELM3", "HELM4"])
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm_name, value_set):
    out = helm(helm_binaries()[helm_name], "lint", "--strict", str(CHART), *value_args(value_set), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def test_helm_versions_are_3_and_4():
    versions = {name: helm(path, "version", "--template", "{{.Version}}").stdout
                for name, path in helm_binaries().items()}
    assert versions["HELM3"].startswith("v3.") and versions["HELM4"].startswith("v4."), versions


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm3_and_helm4_render_the_same(value_set):
    assert render_text(value_set, "HELM3") == render_text(value_set, "HELM4")


def kubernetes_validate(path, version):
    out = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "-k", version, str(path)],
                         capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_manifest_validates(value_set, version, tmp_path):
    """Built-in kinds through kubernetes-validate --strict, custom kinds through their CRD schemas;
    every rendered resource must pass one of them."""
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(render_text(value_set))
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]

    rc, out = kubernetes_validate(manifest, version)
    assert rc == 0, out
    builtin = set(re.findall(r"passed for resource (\S+) against", out))
    no_schema = set(re.findall(r"Couldn't find schema for kind (\S+) ", out))

    crd = subprocess.run(["node", str(CRD_VALIDATOR), str(manifest)], capture_output=True, text=True)
    assert crd.returncode == 0, crd.stdout + crd.stderr
    custom = set(re.findall(r"^ok +(\S+)", crd.stdout, re.M))

    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in no_schema:
            assert f"{kind}/{name}" in custom, f"{kind}/{name} validated by neither tool"
        else:
            assert f"{kind.lower()}/{name}" in builtin, f"{kind}/{name} not validated:\n{out}"


def test_validators_reject_broken_manifests(tmp_path):
    """The validators above must actually fail on bad input, or their green means nothing."""
    docs = [d for d in yaml.safe_load_all(render_text("all")) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    rc, out = kubernetes_validate(broken, KUBE_VERSIONS[0])
    assert rc != 0 and "pathh" in out, out

    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["port"] = 9090
    broken.write_text(yaml.safe_dump(monitor))
    crd = subprocess.run(["node", str(CRD_VALIDATOR), str(broken)], capture_output=True, text=True)
    assert crd.returncode != 0 and "port must be string" in crd.stdout, crd.stdout + crd.stderr


@pytest.mark.parametrize("bad, message", [
    ("replicaCount=two", "replicaCount"),
    ("bogusTopLevelKey=1", "bogusTopLevelKey"),
    ("config.demo=yes", "demo"),
    ("config.logFormat=xml", "logFormat"),
    ("config.pollInterval=soon", "pollInterval"),
    ("ingress.controller=traefik", "controller"),
    # ingress-nginx is retired upstream (March 2026): no branch of its own any more.
    ("ingress.controller=nginx", "controller"),
    # A day-long cookie keeps returning clients on the old pods after a scale-out.
    ("ingress.alb.stickinessDurationSeconds=86400", "stickinessDurationSeconds"),
    # A budget that allows no disruption blocks every node drain.
    ("podDisruptionBudget.maxUnavailable=0", "maxUnavailable"),
    ("podDisruptionBudget.maxUnavailable=0%", "maxUnavailable"),
    ("podDisruptionBudget.minAvailable=100%", "minAvailable"),
    ("service.nodePort=8080", "nodePort"),
    ("ingress.alb.idleTimeoutSeconds=60", "idleTimeoutSeconds"),
    ("networkPolicy.ingressFrom.cidrs[0]=everyone", "cidrs"),
    ("autoscaling.minReplicas=0", "minReplicas"),
    ("metrics.serviceMonitor.bogus=true", "bogus"),
])
def test_schema_rejects_bad_values(bad, message):
    assert message in render_error(bad)


@pytest.mark.parametrize("sets, message", [
    (["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"], "exclusive"),
    (["podDisruptionBudget.maxUnavailable=null"], "minAvailable or maxUnavailable"),
    (["terminationGracePeriodSeconds=15"], "must cover"),
    (["ingress.enabled=true"], "certificateArn is required"),
    (["ingress.enabled=true", "ingress.alb.certificateArn=arn:x"], "VPC CIDR"),
    (["ingress.enabled=true", "ingress.controller=generic", "ingress.className=traefik"], "ingress controller's namespace"),
    (["ingress.enabled=true", "ingress.controller=generic", "networkPolicy.ingressFrom.namespaces={traefik}"],
     "className is required"),
    (["apiKey.value=k", "externalSecret.enabled=true"], "exclusive"),
    (["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=3"], "must not exceed"),
    (["cluster.redis.enabled=true"], "cluster.redis.egressCidrs"),
])
def test_inconsistent_values_fail_with_a_reason(sets, message):
    assert message in render_error(*sets)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_environment_files_need_the_pipeline_certificate(env):
    """No placeholder ARN in the files: a deploy without the certificate fails instead of serving no TLS."""
    args = ["template", "ratecast", str(CHART), "-f", str(CHART / f"values-{env}.yaml")]
    out = helm(helm_binaries()["HELM4"], *args, check=False)
    assert out.returncode != 0 and "certificateArn is required" in out.stderr


def test_readme_values_table_is_current():
    out = subprocess.run([sys.executable, str(REPO / ".ci/helm/values_table.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_packaged_chart_renders_like_the_source(tmp_path):
    """CI publishes `helm package` output: .helmignore must keep everything the templates read."""
    helm4 = helm_binaries()["HELM4"]
    helm(helm4, "package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("ratecast-*.tgz")
    assert helm(helm4, *template_args("all", chart=package)).stdout == render_text("all")


def test_an_enabled_ingress_needs_a_host(tmp_path):
    # An Ingress with no rules and no default backend is rejected by the API server at deploy
    # time; the schema refuses it at render time. (A values file: `--set hosts={}` is [""].)
    no_hosts = tmp_path / "no-hosts.yaml"
    no_hosts.write_text("ingress: {hosts: []}\n")
    ready = ["--set", "ingress.enabled=true", "--set", "ingress.alb.certificateArn=arn:x",
             "--set", "networkPolicy.ingressFrom.cidrs={10.0.0.0/16}"]
    out = helm(helm_binaries()["HELM4"], *template_args("default"), "-f", str(no_hosts), *ready, check=False)
    assert out.returncode != 0 and "/ingress/hosts" in out.stderr and "minItems" in out.stderr
    # The same values with the default host render; disabled, an empty list is fine.
    helm(helm_binaries()["HELM4"], *template_args("default"), *ready)
    helm(helm_binaries()["HELM4"], *template_args("default"), "-f", str(no_hosts))
