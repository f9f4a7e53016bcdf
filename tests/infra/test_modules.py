"""What the reusable modules promise: EKS v21 inputs, VPC v6 subnet tags, ECR settings, the API key
path from Secrets Manager to the chart's existingSecret, and OIDC-only CI access."""
import json
import re

import yaml

from hcl import ENVS, INFRA, blocks, env_module, resources

MODULES = INFRA / "modules"


def eks_call():
    return blocks(MODULES / "cluster" / "main.tf", "module")["eks"]


def locals_of(directory):
    return blocks(directory, "locals")


def test_eks_uses_v21_input_names():
    eks = eks_call()
    for name in ("name", "kubernetes_version", "addons", "encryption_config", "enabled_log_types",
                 "endpoint_private_access", "endpoint_public_access", "endpoint_public_access_cidrs",
                 "access_entries", "authentication_mode", "eks_managed_node_groups"):
        assert name in eks, name
    v20 = [k for k in eks if k.startswith("cluster_") or k in ("create_aws_auth_configmap", "manage_aws_auth_configmap")]
    assert not v20, f"v20-era inputs: {v20}"


def test_eks_private_endpoint_public_only_by_allow_list():
    eks = eks_call()
    assert eks["endpoint_private_access"] is True
    assert eks["endpoint_public_access"] == "${length(var.endpoint_public_access_cidrs) > 0}"
    validation = blocks(MODULES / "cluster", "variable")["endpoint_public_access_cidrs"]["validation"]
    assert "0.0.0.0/0" in json.dumps(validation)


def test_eks_encrypts_secrets_logs_control_plane_and_uses_access_entries():
    eks = eks_call()
    assert eks["encryption_config"] == {"resources": ["secrets"]}
    assert "create_kms_key" not in eks or eks["create_kms_key"] is True
    log_types = blocks(MODULES / "cluster", "variable")["log_types"]["default"]
    assert {"api", "audit", "authenticator"} <= set(log_types)
    assert eks["authentication_mode"] == "API"
    assert eks["enable_cluster_creator_admin_permissions"] is False
    for path in INFRA.rglob("*.tf"):
        for call in blocks(path, "module").values():
            assert "aws-auth" not in call["source"], f"{path}: the aws-auth ConfigMap is replaced by access entries"
        assert not resources(path.parent, "kubernetes_config_map"), path


def test_eks_addons():
    addons = eks_call()["addons"]
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "metrics-server",
                           "aws-ebs-csi-driver"}
    assert addons["vpc-cni"]["before_compute"] is True
    assert addons["eks-pod-identity-agent"]["before_compute"] is True
    # EBS CSI (Prometheus' volume): its role through Pod Identity, like every controller's.
    (association,) = addons["aws-ebs-csi-driver"]["pod_identity_association"]
    assert association == {"role_arn": "${module.ebs_csi_pod_identity.iam_role_arn}", "service_account": "ebs-csi-controller-sa"}
    ebs = blocks(MODULES / "cluster" / "main.tf", "module")["ebs_csi_pod_identity"]
    assert ebs["attach_aws_ebs_csi_policy"] is True


def test_eks_upgrade_policy_and_prod_deletion_protection():
    eks = eks_call()
    # STANDARD: upgraded at the end of standard support instead of billed for extended support.
    assert eks["upgrade_policy"] == {"support_type": "STANDARD"}
    assert eks["deletion_protection"] == "${var.deletion_protection}"
    assert {e: env_module(e).get("deletion_protection", False) for e in ENVS} == {"dev": False, "staging": False, "prod": True}


def test_node_groups_are_al2023_arm64_with_encrypted_disks_and_imdsv2():
    text = (MODULES / "cluster" / "main.tf").read_text()
    assert 'ami_type       = "AL2023_ARM_64_STANDARD"' in text
    assert re.search(r"encrypted\s+= true", text)
    assert re.search(r'http_tokens\s+= "required"', text)
    assert "k8s.io/cluster-autoscaler/enabled" in text


def test_kubernetes_version_is_current():
    default = blocks(MODULES / "environment", "variable")["kubernetes_version"]["default"]
    major, minor = map(int, default.split("."))
    assert (major, minor) >= (1, 33), default


def test_vpc_v6_with_load_balancer_subnet_tags_and_nat_switch():
    vpc = blocks(MODULES / "network" / "main.tf", "module")["vpc"]
    assert vpc["source"] == "terraform-aws-modules/vpc/aws" and vpc["version"].startswith("6.")
    assert vpc["public_subnet_tags"] == {"kubernetes.io/role/elb": "1"}
    assert vpc["private_subnet_tags"] == {"kubernetes.io/role/internal-elb": "1"}
    assert vpc["single_nat_gateway"] == "${var.single_nat_gateway}"
    assert vpc["one_nat_gateway_per_az"] == "${!var.single_nat_gateway}"
    assert vpc["enable_flow_log"] is True


def test_ecr_repositories_are_immutable_scanned_encrypted_and_expire():
    (repo,) = resources(MODULES / "registry", "aws_ecr_repository").values()
    # Immutable but for cosign's sha256-<digest>.sig/.att tags, which cosign re-pushes on a retry.
    assert repo["image_tag_mutability"] == "IMMUTABLE_WITH_EXCLUSION"
    (exclusion,) = repo["dynamic"][0]["image_tag_mutability_exclusion_filter"]["content"]
    assert exclusion["filter_type"] == "WILDCARD"
    variables = blocks(MODULES / "registry", "variable")
    assert variables["mutable_tag_patterns"]["default"] == ["sha256-*"]
    assert repo["image_scanning_configuration"][0]["scan_on_push"] is True
    assert repo["encryption_configuration"][0]["encryption_type"] == "KMS"
    assert resources(MODULES / "registry", "aws_ecr_lifecycle_policy")
    global_vars = blocks(INFRA / "global", "variable")
    assert set(global_vars["repositories"]["default"]) == {"ratecast", "charts/ratecast", "charts/main/ratecast"}


def test_api_key_flows_from_secrets_manager_to_the_charts_existing_secret():
    platform = MODULES / "platform"
    secret = resources(platform, "aws_secretsmanager_secret")["api_key"]
    assert secret["name"] == "ratecast/${var.environment}/coingecko-api-key"
    assert secret["kms_key_id"] == "${aws_kms_key.secrets.arn}"
    variables = blocks(platform, "variable")
    assert variables["secret_store_name"]["default"] == "aws-secrets-manager"
    assert variables["api_key_secret_name"]["default"] == "ratecast-coingecko"
    assert variables["api_key_secret_key"]["default"] == "api-key"
    assert variables["app_namespace"]["default"] == "ratecast"

    chart = platform / "charts" / "ratecast-bootstrap"
    store = yaml.safe_load((chart / "templates" / "cluster-secret-store.yaml").read_text().replace("{{", "#").replace("}}", ""))
    assert store["kind"] == "ClusterSecretStore" and store["spec"]["provider"]["aws"]["service"] == "SecretsManager"
    external = (chart / "templates" / "external-secret.yaml").read_text()
    for ref in (".Values.secretStoreName", ".Values.externalSecret.name", ".Values.externalSecret.secretKey",
                ".Values.externalSecret.remoteKey"):
        assert ref in external
    # The values Terraform passes are the ones the chart reads.
    values = yaml.safe_load((chart / "values.yaml").read_text())
    bootstrap = resources(platform, "helm_release")["bootstrap"]
    passed = bootstrap["values"][0]
    for key in ("region", "secretStoreName", "deployerGroup", "externalSecret"):
        assert key in values and key in passed
    assert set(values["externalSecret"]) >= {"enabled", "name", "secretKey", "remoteKey"}


def test_controllers_get_aws_access_through_pod_identity():
    platform = MODULES / "platform"
    pod_identity = blocks(platform / "main.tf", "module")["pod_identity"]
    assert pod_identity["source"] == "terraform-aws-modules/eks-pod-identity/aws"
    text = (platform / "main.tf").read_text()
    for flag in ("attach_aws_lb_controller_policy", "attach_external_secrets_policy", "attach_cluster_autoscaler_policy"):
        assert flag in text
    # ESO reads only: the module's create permission (external_secrets_create_permission since
    # v1.0.0, default false) is never turned on, and the pre-1.0 name is gone.
    assert "external_secrets_secrets_manager_create_permission" not in text
    assert pod_identity.get("external_secrets_create_permission", False) is False
    assert pod_identity["use_name_prefix"] is False
    # Controllers in the helm_release map: the load balancer controller knows its VPC (IMDS hop limit 1).
    for name in ("aws-load-balancer-controller", "external-secrets", "cluster-autoscaler", "kube-prometheus-stack"):
        assert f"{name} = {{" in text
    assert "vpcId" in text


def test_ci_roles_trust_only_the_circleci_project_by_oidc():
    trust = blocks(MODULES / "ci-role" / "main.tf", "data")["aws_iam_policy_document"]["trust"]
    (statement,) = trust["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert conditions["${local.issuer}:aud"]["test"] == "StringEquals"
    assert conditions["${local.issuer}:sub"]["values"] == "${local.subjects}"
    subjects = blocks(MODULES / "ci-role" / "main.tf", "locals")["subjects"]
    assert "project/${p}/user/*" in json.dumps(subjects)
    assert "/vcs-origin/*/vcs-ref/${ref}" in json.dumps(subjects)
    provider = resources(INFRA / "global", "aws_iam_openid_connect_provider")["circleci"]
    assert provider["url"] == "https://oidc.circleci.com/org/${var.circleci_org_id}"
    # Nothing creates access keys: every pipeline credential comes from OIDC.
    for path in INFRA.rglob("*.tf"):
        assert "aws_iam_access_key" not in path.read_text(), path


def test_ci_deploy_role_is_namespace_scoped_on_the_cluster():
    env = MODULES / "environment" / "main.tf"
    cluster_call = blocks(env, "module")["cluster"]
    deployer = cluster_call["namespace_deployers"]["ci"]
    assert deployer["principal_arn"] == "${module.ci_deploy_role.arn}"
    assert deployer["namespace"] == "${var.app_namespace}"
    cluster_text = (MODULES / "cluster" / "main.tf").read_text()
    assert "AmazonEKSAdminPolicy" in cluster_text and 'type = "namespace"' in cluster_text


def test_ecr_lifecycle_keeps_signatures_and_matches_only_releases_as_releases():
    policy = resources(MODULES / "registry", "aws_ecr_lifecycle_policy")["this"]["policy"]
    text = json.dumps(policy)
    # Signatures are kept by the first rule, so a rolled-back release still verifies.
    assert text.index("sha256-*") < text.index("release_tag_patterns")
    variables = blocks(MODULES / "registry", "variable")
    keep = variables["signature_keep_count"]["default"]
    assert keep >= 5 * (variables["release_keep_count"]["default"] + variables["keep_count"]["default"])
    # The release pattern must not match what else is pushed to a repository: git-SHA image tags,
    # cosign tags, and (pushed apart, to charts/main/ratecast) pre-release chart versions.
    patterns = variables["release_tag_patterns"]["default"]

    def matches(tag):
        return any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), tag) for p in patterns)
    assert matches("1.4.2")
    for tag in ("3f1c2a9e0b7d4c6a8e5f1b2c3d4e5f6a7b8c9d0e", "sha256-3f1c2a.sig", "sha256-3f1c2a.att"):
        assert not matches(tag), tag
    publish = (INFRA.parent / ".circleci" / "scripts" / "publish-chart.sh").read_text()
    assert "charts/main/ratecast" in publish, "pre-release charts must not share the release repository"


def test_ci_roles_that_change_things_are_bound_to_their_git_refs():
    ci_roles = blocks(INFRA / "global" / "main.tf", "locals")["ci_roles"]
    assert ci_roles["terraform-apply"]["vcs_refs"] == ["refs/heads/main"]
    assert ci_roles["publish"]["vcs_refs"] == ["refs/heads/main", "refs/tags/v*"]
    assert ci_roles["terraform-plan"]["vcs_refs"] == []
    deploy_refs = blocks(MODULES / "environment" / "main.tf", "locals")["deploy_refs"]
    assert deploy_refs == {"dev": ["refs/heads/main"], "staging": ["refs/tags/v*"], "prod": ["refs/tags/v*"]}
    call = blocks(MODULES / "environment" / "main.tf", "module")["ci_deploy_role"]
    assert call["vcs_refs"] == "${local.deploy_refs[var.environment]}"
