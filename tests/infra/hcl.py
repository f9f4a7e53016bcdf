"""Offline view of the Terraform code: parse with python-hcl2 (Terraform and its providers cannot
be downloaded where these tests run)."""
from functools import lru_cache
from pathlib import Path

import hcl2

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
ENVS = ("dev", "staging", "prod")
META_ARGS = {"source", "version", "for_each", "count", "depends_on", "providers"}

_OPTIONS = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def tf_files():
    return sorted(p for p in INFRA.rglob("*.tf") if ".terraform" not in p.parts)


@lru_cache(maxsize=None)
def parse(path):
    with open(path, encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=_OPTIONS)


def blocks(path_or_dir, kind):
    """{label: body} of every `kind` block (module, variable, output...) in a file or directory."""
    paths = sorted(Path(path_or_dir).glob("*.tf")) if Path(path_or_dir).is_dir() else [Path(path_or_dir)]
    found = {}
    for p in paths:
        for entry in parse(p).get(kind, []):
            found.update(entry)
    return found


def resources(directory, rtype):
    """{name: body} of the resources (or data sources with rtype 'data.x') of a directory."""
    kind, rtype = ("data", rtype[5:]) if rtype.startswith("data.") else ("resource", rtype)
    paths = sorted(Path(directory).glob("*.tf")) if Path(directory).is_dir() else [Path(directory)]
    found = {}
    # Merged per name: each resource block is its own {type: {name: body}} entry.
    for p in paths:
        for entry in parse(p).get(kind, []):
            found.update(entry.get(rtype, {}))
    return found


def env_module(env):
    """Inputs of the single module call of an environment root."""
    modules = blocks(INFRA / "envs" / env / "main.tf", "module")
    assert list(modules) == ["ratecast"], f"{env}: expected one module call 'ratecast', got {list(modules)}"
    return modules["ratecast"]


def node_group_totals(env):
    """The env's node groups with sizes summed over their AZs: a group with one_per_az = true is
    one managed node group per AZ, each with the sizes given."""
    az_count = env_module(env)["az_count"]
    totals = {}
    for name, group in env_module(env)["node_groups"].items():
        per = az_count if group.get("one_per_az") else 1
        totals[name] = {**group, **{k: group[k] * per for k in ("min_size", "desired_size", "max_size")}}
    return totals
