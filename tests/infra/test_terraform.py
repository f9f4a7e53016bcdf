"""Static checks of infra/: it parses, versions are pinned, and every module call matches the
variables of the module it calls (what `terraform validate` would catch for local modules)."""
import re

import pytest

from hcl import INFRA, META_ARGS, blocks, parse, tf_files

ROOTS = [INFRA / "global"] + [INFRA / "envs" / e for e in ("dev", "staging", "prod")]


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_tf_file_parses(path):
    assert isinstance(parse(path), dict)


def test_there_is_terraform_to_check():
    assert len(tf_files()) >= 30


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_roots_pin_terraform_and_providers(root):
    terraform = parse(root / "versions.tf")["terraform"][0]
    assert re.fullmatch(r">= 1\.(1\d|[2-9]\d), < 2\.0", terraform["required_version"]), terraform["required_version"]
    providers = terraform["required_providers"][0]
    assert set(providers) >= {"aws", "helm"}
    for name, spec in providers.items():
        assert spec["source"] == f"hashicorp/{name}"
        assert re.fullmatch(r"~> \d+\.\d+", spec["version"]), f"{name} must be pinned with ~> X.Y, got {spec['version']}"
    assert providers["aws"]["version"].startswith("~> 6."), "vpc v6 and eks v21 need AWS provider 6"


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_roots_use_an_encrypted_s3_backend_with_native_locking(root):
    (backend,) = parse(root / "backend.tf")["terraform"][0]["backend"]
    s3 = backend["s3"]
    assert s3["encrypt"] is True
    assert s3["use_lockfile"] is True
    assert "dynamodb_table" not in s3
    assert "bucket" not in s3, "the account-specific bucket is passed with -backend-config"


def test_each_root_has_its_own_state_key():
    keys = [parse(r / "backend.tf")["terraform"][0]["backend"][0]["s3"]["key"] for r in ROOTS]
    assert len(set(keys)) == len(keys), keys
    for root, key in zip(ROOTS, keys):
        assert root.name in key


def test_no_workspaces_and_no_dynamodb_locking():
    for path in tf_files():
        text = path.read_text()
        assert "terraform.workspace" not in text, path
        assert "dynamodb_table" not in text, path


def registry_module_calls():
    for path in tf_files():
        for name, body in blocks(path, "module").items():
            if not body["source"].startswith("."):
                yield path, name, body


def test_registry_modules_are_pinned_to_exact_releases_of_the_required_majors():
    # Exact versions: the recorded input lists (infra/module-inputs, test_module_contracts.py)
    # describe one release, and a range would let `terraform init` pick another.
    majors = {
        "terraform-aws-modules/vpc/aws": 6,
        "terraform-aws-modules/eks/aws": 21,
        "terraform-aws-modules/eks-pod-identity/aws": 2,
        "terraform-aws-modules/elasticache/aws": 1,
    }
    seen = {}
    for path, name, body in registry_module_calls():
        assert body["source"] in majors, f"{path}: unexpected registry module {body['source']}"
        version = body.get("version", "")
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{path}: module {name} must pin an exact version, got {version!r}"
        assert int(version.split(".")[0]) == majors[body["source"]], f"{path}: module {name} pin {version}"
        seen.setdefault(body["source"], set()).add(version)
    assert set(seen) == set(majors)
    assert all(len(v) == 1 for v in seen.values()), f"one release per module across infra/: {seen}"


def local_module_calls():
    for path in tf_files():
        for name, body in blocks(path, "module").items():
            if body["source"].startswith("."):
                yield path, name, body


def test_local_module_calls_match_the_module_variables():
    calls = list(local_module_calls())
    assert len(calls) >= 8
    for path, name, body in calls:
        target = (path.parent / body["source"]).resolve()
        assert target.is_dir(), f"{path}: module {name} source {body['source']} does not exist"
        variables = blocks(target, "variable")
        passed = set(body) - META_ARGS
        unknown = passed - set(variables)
        assert not unknown, f"{path}: module {name} passes undeclared inputs {sorted(unknown)}"
        missing = {v for v, spec in variables.items() if "default" not in spec} - passed
        assert not missing, f"{path}: module {name} misses required inputs {sorted(missing)}"


def test_every_variable_and_output_is_documented():
    for path in tf_files():
        for kind in ("variable", "output"):
            for name, body in blocks(path, kind).items():
                assert body.get("description", "").strip(), f"{path}: {kind} {name} has no description"


def test_every_checkov_skip_gives_a_reason():
    skips = 0
    for path in tf_files():
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                skips += 1
                match = re.search(r"checkov:skip=(CKV2?_[A-Z]+_\d+):(.*)", line)
                assert match and len(match.group(2).strip()) >= 20, f"{path}: skip without a reason: {line.strip()}"
    assert skips > 0
