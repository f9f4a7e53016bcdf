data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# Both created once per account by infra/global.
data "aws_iam_openid_connect_provider" "circleci" {
  url = "https://oidc.circleci.com/org/${var.circleci_org_id}"
}

data "aws_iam_role" "ci_terraform" {
  for_each = var.ci_terraform_role_names
  name     = each.value
}

locals {
  name   = "ratecast-${var.environment}"
  tags   = merge(var.tags, { Environment = var.environment })
  arn_of = "arn:${data.aws_partition.current.partition}"
  region = data.aws_region.current.region

  cluster_arn    = "${local.arn_of}:eks:${local.region}:${data.aws_caller_identity.current.account_id}:cluster/${local.name}"
  deployer_group = "ratecast:deployers"

  # The refs whose pipelines deploy each environment (the deploy-<env> filters of
  # .circleci/continue.yml): main to dev, release tags to staging and prod.
  deploy_refs = {
    dev     = ["refs/heads/main"]
    staging = ["refs/tags/v*"]
    prod    = ["refs/tags/v*"]
  }

  # Managed node group ASGs are named eks-<group>-<uuid>; on-demand groups are tried first.
  autoscaler_tiers = {
    "50" = [for n, g in var.node_groups : "^eks-${n}-.*" if g.capacity_type == "ON_DEMAND"]
    "10" = [for n, g in var.node_groups : "^eks-${n}-.*" if g.capacity_type == "SPOT"]
  }
}

module "network" {
  source = "../network"

  name                    = local.name
  cidr                    = var.vpc_cidr
  az_count                = var.az_count
  single_nat_gateway      = var.single_nat_gateway
  flow_log_retention_days = var.log_retention_days
  tags                    = local.tags
}

data "aws_iam_policy_document" "deploy" {
  statement {
    sid       = "FindCluster"
    actions   = ["eks:DescribeCluster"]
    resources = [local.cluster_arn]
  }

  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  # The chart (helm pull) and the image's cosign signature (cosign verify reads the .sig from
  # the image repository): tests/infra/test_deploy_access.py checks this covers every repository
  # .circleci/scripts/deploy.sh reads.
  statement {
    sid       = "PullChartAndVerifyImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [for r in var.deploy_repository_names : "${local.arn_of}:ecr:${local.region}:${data.aws_caller_identity.current.account_id}:repository/${r}"]
  }
}

# Assumed by the CircleCI deploy job: helm upgrade/test in app_namespace, nothing else.
module "ci_deploy_role" {
  source = "../ci-role"

  name                 = "${local.name}-ci-deploy"
  description          = "CircleCI: helm upgrade of ratecast into ${local.name}"
  oidc_provider_arn    = data.aws_iam_openid_connect_provider.circleci.arn
  circleci_org_id      = var.circleci_org_id
  circleci_project_ids = var.circleci_project_ids
  vcs_refs             = local.deploy_refs[var.environment]
  policy_json          = data.aws_iam_policy_document.deploy.json
  tags                 = local.tags
}

module "cluster" {
  source = "../cluster"

  name                         = local.name
  kubernetes_version           = var.kubernetes_version
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  subnet_azs                   = module.network.azs
  deletion_protection          = var.deletion_protection
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  node_groups                  = var.node_groups
  log_retention_days           = var.log_retention_days

  admin_principal_arns  = concat(var.admin_principal_arns, [data.aws_iam_role.ci_terraform["apply"].arn])
  viewer_principal_arns = [data.aws_iam_role.ci_terraform["plan"].arn]
  namespace_deployers = {
    ci = {
      principal_arn    = module.ci_deploy_role.arn
      namespace        = var.app_namespace
      kubernetes_group = local.deployer_group
    }
  }

  tags = local.tags
}

module "platform" {
  source = "../platform"

  environment                 = var.environment
  cluster_name                = module.cluster.cluster_name
  vpc_id                      = module.network.vpc_id
  app_namespace               = var.app_namespace
  deployer_group              = local.deployer_group
  kubernetes_version          = var.kubernetes_version
  enable_monitoring           = var.enable_monitoring
  alert_receivers             = var.alert_receivers
  extra_readable_secret_arns  = module.cache[*].url_secret_arn
  secret_recovery_window_days = var.secret_recovery_window_days
  autoscaler_priorities       = { for p, regexes in local.autoscaler_tiers : p => regexes if length(regexes) > 0 }
  tags                        = local.tags
}

# Cluster mode's Valkey (issue 13): on in staging and prod (var.redis per env).
module "cache" {
  source = "../cache"
  count  = var.redis.enabled ? 1 : 0

  name                        = local.name
  environment                 = var.environment
  node_type                   = var.redis.node_type
  node_count                  = var.redis.node_count
  vpc_id                      = module.network.vpc_id
  subnet_ids                  = module.network.private_subnet_ids
  node_security_group_id      = module.cluster.node_security_group_id
  kms_key_arn                 = module.platform.secrets_kms_key_arn
  secret_recovery_window_days = var.secret_recovery_window_days
  tags                        = local.tags
}
