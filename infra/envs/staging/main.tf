# staging: prod's topology (3 AZs) on spot capacity and a single NAT, for release candidates and
# load tests.
module "ratecast" {
  source = "../../modules/environment"

  environment        = "staging"
  vpc_cidr           = "10.20.0.0/16"
  az_count           = 3
  single_nat_gateway = true

  node_groups = {
    # 2 vCPU / 8 GiB types.
    base = {
      capacity_type  = "SPOT"
      instance_types = ["m7g.large", "m6g.large", "m8g.large"]
      min_size       = 2
      desired_size   = 2
      max_size       = 4
    }
  }

  enable_monitoring           = true
  alert_receivers             = { slack_channel = "#ratecast-staging" }
  log_retention_days          = 30
  secret_recovery_window_days = 7

  # Cluster mode's Valkey (issue 13): primary + replica, automatic failover across 2 AZs, so a
  # failover is rehearsed here before prod. values-staging.yaml turns the chart's side on.
  redis = { enabled = true, node_type = "cache.t4g.small", node_count = 2 }

  circleci_org_id              = var.circleci_org_id
  circleci_project_ids         = var.circleci_project_ids
  admin_principal_arns         = var.admin_principal_arns
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  dns_zone_name                = var.dns_zone_name
}
