"""Every IAM role and policy name (or name prefix) the configuration builds, in every environment,
fits AWS's limits and is unique in the account. `terraform validate` cannot see this (names are
computed); `terraform plan` fails on it. The names are computed here from the parsed HCL and the
naming rules of the pinned module releases, read from their sources:
  eks-pod-identity 2.8.1   main.tf: role `name` or name_prefix "<name>-" (use_name_prefix, default
                           true); policies "<policy_name_prefix><Controller>" (or that + "-" as prefix)
  eks 21.19.0              main.tf: cluster role "<name>-cluster" + "-" as prefix (iam_role_use_name_prefix
                           default true); its encryption policy prefix "<role>-ClusterEncryption";
                           modules/eks-managed-node-group: role prefix "<group>-eks-node-group-"
  vpc 6.6.0                vpc-flow-logs.tf: role prefix "vpc-flow-log-role-"
"""
import re

import pytest

from hcl import ENVS, INFRA, blocks, env_module

ROLE_NAME, ROLE_PREFIX = 64, 38  # a prefix gets 26 generated characters
POLICY_NAME, POLICY_PREFIX = 128, 96
# Policy name of each controller's attach_* policy in eks-pod-identity 2.8.1.
POD_IDENTITY_POLICY = {
    "aws-load-balancer-controller": "LoadBalancerController",
    "external-secrets": "ExternalSecrets",
    "cluster-autoscaler": "ClusterAutoscaler",
    "ebs-csi": "EBS_CSI",
}


def substitute(expr, scope):
    def value(m):
        assert m.group(1) in scope, f"cannot evaluate ${{{m.group(1)}}} in {expr!r}"
        return scope[m.group(1)]
    return re.sub(r"\$\{([a-z_.]+)\}", value, expr)


def pod_identity_names(call, keys, scope):
    """(kind, name, is_prefix) of the role and policy an eks-pod-identity call makes for each
    controller key (its for_each key, and which attach_* policy it gets)."""
    use_prefix = call.get("use_name_prefix", True)
    policy_prefix = substitute(call.get("policy_name_prefix", "AmazonEKS_"), scope)
    for key in keys:
        name = substitute(call["name"], {**scope, "each.key": key})
        yield "role", name + ("-" if use_prefix else ""), use_prefix
        policy = policy_prefix + POD_IDENTITY_POLICY[key]
        yield "policy", policy + ("-" if use_prefix else ""), use_prefix


def controllers_with_roles():
    text = (INFRA / "modules" / "platform" / "main.tf").read_text()
    body = text[text.index("all_controllers = {"):text.index("monitoring = [")]
    found = re.findall(r"^    ([a-z-]+) = \{.*?service_account\s+=\s+(\S+)", body, re.M | re.S)
    return sorted(name for name, sa in found if sa != "null")


def names_of(env):
    cluster = f"ratecast-{env}"
    platform = blocks(INFRA / "modules" / "platform" / "main.tf", "module")["pod_identity"]
    yield from pod_identity_names(platform, controllers_with_roles(), {"var.cluster_name": cluster})
    ebs = blocks(INFRA / "modules" / "cluster" / "main.tf", "module")["ebs_csi_pod_identity"]
    yield from pod_identity_names(ebs, ["ebs-csi"], {"var.name": cluster})
    eks = blocks(INFRA / "modules" / "cluster" / "main.tf", "module")["eks"]
    cluster_role_prefix = eks.get("iam_role_use_name_prefix", True)
    cluster_role = f"{cluster}-cluster"
    yield "role", cluster_role + ("-" if cluster_role_prefix else ""), cluster_role_prefix
    yield "policy", f"{cluster_role}-ClusterEncryption", True
    az_letters = "abc"[:env_module(env)["az_count"]]
    for group, g in env_module(env)["node_groups"].items():
        for expanded in ([f"{group}-{z}" for z in az_letters] if g.get("one_per_az") else [group]):
            yield "role", f"{expanded}-eks-node-group-", True
    yield "role", "vpc-flow-log-role-", True
    deploy = blocks(INFRA / "modules" / "environment" / "main.tf", "module")["ci_deploy_role"]
    yield "role", substitute(deploy["name"], {"local.name": cluster}), False


def global_names():
    ci_roles = blocks(INFRA / "global" / "main.tf", "locals")["ci_roles"]
    call = blocks(INFRA / "global" / "main.tf", "module")["ci_role"]
    for key in ci_roles:
        yield "role", substitute(call["name"], {"each.key": key}), False


def over_limit(names):
    limits = {("role", False): ROLE_NAME, ("role", True): ROLE_PREFIX,
              ("policy", False): POLICY_NAME, ("policy", True): POLICY_PREFIX}
    return [(kind, name, len(name), limits[kind, prefix]) for kind, name, prefix in names
            if len(name) > limits[kind, prefix]]


@pytest.mark.parametrize("env", ENVS)
def test_every_iam_name_fits_aws_limits(env):
    names = list(names_of(env))
    assert len(names) >= 10
    assert not over_limit(names), f"{env}: (kind, name, length, limit): {over_limit(names)}"


def test_global_iam_names_fit_aws_limits():
    assert not over_limit(global_names())


def test_exact_names_are_unique_in_the_account():
    # dev, staging, prod and global share one account: an exact name used twice fails the apply
    # of the second root (the module's default policy names, e.g. AmazonEKS_ExternalSecrets, would).
    exact = [(kind, name) for env in ENVS for kind, name, prefix in names_of(env) if not prefix]
    exact += [(kind, name) for kind, name, prefix in global_names()]
    duplicates = {n for n in exact if exact.count(n) > 1}
    assert not duplicates, duplicates


def test_the_check_catches_the_load_balancer_controller_prefix():
    # What `terraform plan` failed on: with the module's default use_name_prefix = true, the role
    # name prefix of the staging load balancer controller is 46 characters.
    call = {"name": "${var.cluster_name}-${each.key}"}
    names = list(pod_identity_names(call, ["aws-load-balancer-controller"], {"var.cluster_name": "ratecast-staging"}))
    assert ("role", "ratecast-staging-aws-load-balancer-controller-", 46, ROLE_PREFIX) in over_limit(names)
