"""The intended differences between dev, staging and prod, read from the parsed env roots, and the
rule that env roots hold no logic of their own."""
import os
import re

import pytest

from hcl import ENVS, INFRA, blocks, env_module, node_group_totals, parse

SHARED = ("versions.tf", "provider-aws.tf", "provider-helm.tf", "variables.tf", "variables-circleci.tf", "outputs.tf")
# Graviton families carry a "g" after the generation digit (t4g, m7g, c7gn...).
GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*\.(medium|large|xlarge|\d+xlarge)$")
SIZE_VCPU = {"medium": 1, "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}


def node_groups(env):
    """Sizes are the group's total over its AZs (one_per_az groups are one group per AZ)."""
    return node_group_totals(env)


def nat_gateways(env):
    inputs = env_module(env)
    return 1 if inputs["single_nat_gateway"] else inputs["az_count"]


def vcpus(instance_type):
    family, size = instance_type.split(".")
    # t4g.medium is 2 vCPUs unlike m*/c*.medium; the only burstable family used here.
    return 2 if family.startswith("t") and size == "medium" else SIZE_VCPU[size]


@pytest.mark.parametrize("env", ENVS)
def test_env_root_is_one_module_call_plus_shared_files(env):
    root = INFRA / "envs" / env
    files = sorted(p.name for p in root.iterdir() if p.suffix == ".tf")
    assert files == sorted(("backend.tf", "main.tf") + SHARED)
    for name in SHARED:
        path = root / name
        assert path.is_symlink() and os.readlink(path) == f"../_common/{name}", f"{path} must link the shared file"
    main = parse(root / "main.tf")
    assert set(main) == {"module"}, f"{env}/main.tf may only call the environment module, found {set(main)}"
    assert env_module(env)["source"] == "../../modules/environment"
    backend = parse(root / "backend.tf")
    assert set(backend) == {"terraform"} and set(backend["terraform"][0]) == {"backend"}


def test_shared_root_files_hold_no_resources():
    for name in SHARED:
        assert set(parse(INFRA / "envs" / "_common" / name)) <= {"terraform", "provider", "variable", "output"}


def test_global_root_shares_versions_provider_and_ci_variables():
    for name in ("versions.tf", "provider-aws.tf", "variables-circleci.tf"):
        path = INFRA / "global" / name
        assert path.is_symlink() and os.readlink(path) == f"../envs/_common/{name}"


@pytest.mark.parametrize("env", ENVS)
def test_environment_name_matches_directory(env):
    assert env_module(env)["environment"] == env


def test_vpc_cidrs_do_not_overlap():
    cidrs = [env_module(e)["vpc_cidr"] for e in ENVS]
    assert len(set(cidrs)) == 3 and all(c.endswith("/16") for c in cidrs)


def test_az_count_two_in_dev_three_elsewhere():
    assert [env_module(e)["az_count"] for e in ENVS] == [2, 3, 3]


def test_nat_single_in_dev_and_staging_one_per_az_in_prod():
    assert [nat_gateways(e) for e in ENVS] == [1, 1, 3]


@pytest.mark.parametrize("env", ENVS)
def test_nodes_are_graviton(env):
    for name, group in node_groups(env).items():
        for itype in group["instance_types"]:
            assert GRAVITON.match(itype), f"{env}/{name}: {itype} is not a Graviton type"


@pytest.mark.parametrize("env", ("dev", "staging"))
def test_dev_and_staging_run_on_spot_only(env):
    assert {g["capacity_type"] for g in node_groups(env).values()} == {"SPOT"}


def test_prod_has_on_demand_base_in_every_az_and_a_spot_overflow():
    groups = node_groups("prod")
    on_demand = [g for g in groups.values() if g["capacity_type"] == "ON_DEMAND"]
    spot = [g for g in groups.values() if g["capacity_type"] == "SPOT"]
    assert len(on_demand) == 1 and len(spot) == 1
    assert on_demand[0]["min_size"] >= env_module("prod")["az_count"]
    # Overflow only: it scales from zero and can absorb at least the base group's size again.
    assert spot[0]["min_size"] == 0 and spot[0]["desired_size"] == 0
    assert spot[0]["max_size"] >= on_demand[0]["max_size"]
    assert len(spot[0]["instance_types"]) >= 3, "several spot pools, so one reclaimed type does not empty the group"


@pytest.mark.parametrize("env", ENVS)
def test_sizes_are_consistent(env):
    for name, g in node_groups(env).items():
        assert g["min_size"] <= g["desired_size"] <= g["max_size"], f"{env}/{name}"
        # The autoscaler models a group from one instance type: all types of a group must match in vCPUs.
        assert len({vcpus(t) for t in g["instance_types"]}) == 1, f"{env}/{name}: mixed sizes {g['instance_types']}"


def test_capacity_grows_from_dev_to_prod():
    def minimum_vcpus(env):
        return sum(g["min_size"] * vcpus(g["instance_types"][0]) for g in node_groups(env).values())

    def maximum_vcpus(env):
        return sum(g["max_size"] * vcpus(g["instance_types"][0]) for g in node_groups(env).values())

    assert minimum_vcpus("dev") < minimum_vcpus("staging") < minimum_vcpus("prod")
    assert maximum_vcpus("dev") < maximum_vcpus("staging") < maximum_vcpus("prod")


def test_prod_nodes_are_larger_than_dev_and_staging():
    def largest(env):
        return max(vcpus(t) for g in node_groups(env).values() for t in g["instance_types"])

    assert largest("prod") > largest("staging") >= largest("dev")


def test_retention_grows_towards_prod():
    retention = [env_module(e)["log_retention_days"] for e in ENVS]
    assert retention == sorted(retention) and retention[0] < retention[-1]
    assert env_module("prod")["secret_recovery_window_days"] >= 7


def test_readme_documents_every_input_of_the_environment_module():
    readme = (INFRA / "README.md").read_text()
    for name in blocks(INFRA / "modules" / "environment", "variable"):
        assert f"| `{name}` |" in readme, f"infra/README.md does not document input {name}"
