"""Renders the ratecast chart with the real Helm binaries for the tests in this folder.

HELM3 and HELM4 name the binaries (.ci/helm/install-helm.sh installs them; .ci/stages/helm.sh
exports both). Rendering uses a fixed release, namespace and Kubernetes version.
"""
import os
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/ratecast"
VALUES = Path(__file__).resolve().parent / "values"
RELEASE = NAMESPACE = FULLNAME = "ratecast"
KUBE_VERSION = "1.35.0"

# Named value sets (values files, --set overrides): the chart defaults, each environment file with
# the certificate the deploy pipeline passes, and the everything-enabled sets.
PIPELINE_SETS = ("ingress.alb.certificateArn=arn:aws:acm:eu-west-1:123456789012:certificate/ci",)
VALUE_SETS = {
    "default": ([], ()),
    "dev": ([CHART / "values-dev.yaml"], PIPELINE_SETS),
    "staging": ([CHART / "values-staging.yaml"], PIPELINE_SETS),
    "prod": ([CHART / "values-prod.yaml"], PIPELINE_SETS),
    "all": ([VALUES / "all.yaml"], ()),
    "all-generic": ([VALUES / "all-generic.yaml"], ()),
    "local": ([CHART / "values-local.yaml"], ()),
}


def helm_binaries():
    found = {name: os.environ.get(name) for name in ("HELM3", "HELM4")}
    missing = [name for name, path in found.items() if not path or not os.access(path, os.X_OK)]
    if missing:
        pytest.exit(f"{', '.join(missing)} not set to a helm binary: run .ci/stages/helm.sh", returncode=2)
    return found


def helm(binary, *args, check=True):
    return subprocess.run([binary, *args], capture_output=True, text=True, check=check)


def value_args(value_set, sets=()):
    files, pipeline_sets = VALUE_SETS[value_set]
    args = []
    for f in files:
        args += ["-f", str(f)]
    for s in (*pipeline_sets, *sets):
        args += ["--set", s]
    return args


def template_args(value_set, sets=(), chart=CHART):
    return ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
            *value_args(value_set, sets)]


@cache
def render_text(value_set, helm_name="HELM4", sets=()):
    return helm(helm_binaries()[helm_name], *template_args(value_set, sets)).stdout


def render(value_set, sets=()):
    """The rendered documents of a value set (Helm 4), plus `--set` overrides."""
    return [d for d in yaml.safe_load_all(render_text(value_set, sets=tuple(sets))) if d]


def render_error(*sets, value_set="default"):
    """stderr of a render expected to fail."""
    out = helm(helm_binaries()["HELM4"], *template_args(value_set, sets), check=False)
    assert out.returncode != 0, f"rendering with {sets} should fail"
    return out.stderr


def find(docs, kind, name=FULLNAME):
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def container(docs, name="ratecast"):
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def env(docs):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}
