"""Every argument a registry `module` call passes is an input of the exact release it pins, and
every required input is given: what `terraform validate` checks, held against input lists
recorded from the real module releases (infra/module-inputs, written by
infra/tools/record-module-inputs.py), since neither Terraform nor the registry is reachable here.
For inputs typed object / map(object), the keys of the literal maps passed are checked against
the type's attributes too (node groups, add-ons)."""
import json
import re
import subprocess
import sys

import pytest

from hcl import INFRA, META_ARGS, blocks, parse, tf_files

INPUTS = INFRA / "module-inputs"


def recorded_release(call):
    source, version = call["source"], call["version"]
    path = INPUTS / f"{source.replace('/', '_')}@{version}.json"
    assert path.is_file(), (f"no input list for {source} {version}: run "
                            f"infra/tools/record-module-inputs.py {source} {version}")
    data = json.loads(path.read_text())
    assert data["source"] == source and data["version"] == version
    return data


def recorded(source, version):
    return recorded_release({"source": source, "version": version})["inputs"]


def registry_calls():
    for path in tf_files():
        for name, body in blocks(path, "module").items():
            if not body["source"].startswith("."):
                yield path, name, body


def contract_errors(body, inputs):
    """What `terraform validate` would reject in a call `body` of a module with `inputs`."""
    passed = set(body) - META_ARGS
    errors = [f"unsupported argument {a!r}" for a in sorted(passed - set(inputs))]
    errors += [f"missing required argument {v!r}" for v, spec in sorted(inputs.items())
               if spec["required"] and v not in passed]
    for arg in sorted(passed & set(inputs)):
        attributes = set(inputs[arg]["attributes"])
        value = body[arg]
        if not attributes or not isinstance(value, dict):
            continue  # not an object type, or an expression evaluated by Terraform
        # object(...) directly, or map(object(...)): a dict of dicts is the map form.
        entries = value.values() if all(isinstance(v, dict) for v in value.values()) and set(value) - attributes else [value]
        for entry in entries:
            if isinstance(entry, dict):
                errors += [f"{arg}: unsupported attribute {k!r}" for k in sorted(set(entry) - attributes)]
    return errors


def test_there_are_registry_module_calls():
    assert len(list(registry_calls())) >= 4


@pytest.mark.parametrize("path,name,body", list(registry_calls()),
                         ids=[f"{p.relative_to(INFRA)}:{n}" for p, n, _ in registry_calls()])
def test_registry_module_call_matches_the_inputs_of_its_pinned_release(path, name, body):
    inputs = recorded(body["source"], body["version"])
    assert not contract_errors(body, inputs), f"{path}: module {name}"


def test_node_group_entries_are_checked_against_the_eks_type():
    # The cluster module builds node groups in a local; the literal shape it passes per group
    # must be attributes of eks_managed_node_groups' object type.
    eks_inputs = recorded("terraform-aws-modules/eks/aws", "21.19.0")
    locals_ = blocks(INFRA / "modules" / "cluster" / "main.tf", "locals")
    group_shape = locals_["node_groups"]
    # `{ for name, g in ... : name => { ... } }` is an expression: read the keys from the source.
    text = (INFRA / "modules" / "cluster" / "main.tf").read_text()
    body = text[text.index("node_groups = { for name, g in local.expanded_node_groups"):text.index("module \"eks\"")]
    keys = set(re.findall(r"^    ([a-z_]+)\s+=", body, re.M))
    assert keys >= {"ami_type", "capacity_type", "subnet_ids", "metadata_options"}, keys
    unknown = keys - set(eks_inputs["eks_managed_node_groups"]["attributes"])
    assert not unknown, f"node group attributes unknown to eks 21.19.0: {unknown}"
    assert group_shape  # parsed


def test_the_checker_catches_the_renamed_eso_argument():
    # The argument that broke `terraform validate` in every env: eks-pod-identity v1.0.0 renamed
    # it to external_secrets_create_permission. Held against the pinned release, it is refused.
    inputs = recorded("terraform-aws-modules/eks-pod-identity/aws", "2.8.1")
    call = {"source": "terraform-aws-modules/eks-pod-identity/aws", "version": "2.8.1",
            "external_secrets_secrets_manager_create_permission": False}
    assert contract_errors(call, inputs) == ["unsupported argument 'external_secrets_secrets_manager_create_permission'"]
    assert "external_secrets_create_permission" in inputs


def test_the_checker_catches_an_unknown_addon_attribute():
    inputs = recorded("terraform-aws-modules/eks/aws", "21.19.0")
    call = {"name": "x", "addons": {"coredns": {"before_compute": True, "pod_identity_role": "arn"}}}
    assert contract_errors(call, inputs) == ["addons: unsupported attribute 'pod_identity_role'"]


def test_every_recorded_list_belongs_to_a_pinned_release():
    pinned = {f"{b['source'].replace('/', '_')}@{b['version']}.json" for _, _, b in registry_calls()}
    on_disk = {p.name for p in INPUTS.glob("*.json")}
    assert on_disk == pinned, f"stale or missing input lists: {on_disk ^ pinned}"


def test_the_recorder_lists_the_pinned_modules():
    # The regeneration script finds the same pins the tests check (so `--all` re-records them all).
    out = subprocess.run([sys.executable, "-c",
                          "import importlib.util, sys; "
                          f"spec = importlib.util.spec_from_file_location('r', {str(INFRA / 'tools' / 'record-module-inputs.py')!r}); "
                          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
                          "print(sorted(m.pinned_modules()))"], capture_output=True, text=True, check=True).stdout
    pins = sorted({(b["source"], b["version"]) for _, _, b in registry_calls()})
    assert out.strip() == str(pins)


def lower_bound(constraint):
    m = re.match(r"(?:~>|>=)\s*(\d+)\.(\d+)", constraint)
    assert m, constraint
    return int(m.group(1)), int(m.group(2))


def test_the_roots_provider_constraints_allow_what_the_pinned_releases_require():
    # A root that allowed an older AWS provider than a module needs would lock (and plan with)
    # a provider the module refuses; the module releases' own versions.tf were recorded.
    root = parse(INFRA / "envs" / "_common" / "versions.tf")["terraform"][0]["required_providers"][0]
    for _, _, body in registry_calls():
        for provider, constraint in recorded_release(body)["providers"].items():
            if provider in root:
                assert lower_bound(root[provider]["version"]) >= lower_bound(constraint), (
                    f"{body['source']} {body['version']} needs {provider} {constraint}, roots allow {root[provider]['version']}")
    # The repo's own modules ask for no less either.
    for versions in (INFRA / "modules").rglob("versions.tf"):
        aws = parse(versions)["terraform"][0]["required_providers"][0].get("aws")
        if aws:
            assert lower_bound(aws["version"]) >= lower_bound(root["aws"]["version"]), versions
