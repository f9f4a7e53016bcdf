# prod: on-demand base in every AZ, a NAT gateway per AZ, and a spot group the autoscaler only
# uses once the base group is at its maximum.
module "ratecast" {
  source = "../../modules/environment"

  environment        = "prod"
  vpc_cidr           = "10.30.0.0/16"
  az_count           = 3
  single_nat_gateway = false

  # One group per AZ (sizes are per AZ): the chart spreads prod's pods across zones with
  # DoNotSchedule, and the autoscaler can only add a node in a given zone through a group that
  # lives in that zone alone.
  node_groups = {
    # 4 vCPU / 16 GiB: room for tens of thousands of WebSocket connections per node.
    base = {
      capacity_type  = "ON_DEMAND"
      instance_types = ["m7g.xlarge"]
      one_per_az     = true
      min_size       = 1
      desired_size   = 1
      max_size       = 2
      disk_size_gib  = 30
    }
    overflow = {
      capacity_type  = "SPOT"
      instance_types = ["m7g.xlarge", "m6g.xlarge", "m8g.xlarge"]
      one_per_az     = true
      min_size       = 0
      desired_size   = 0
      max_size       = 3
      disk_size_gib  = 30
    }
  }

  deletion_protection = true

  enable_monitoring           = true
  alert_receivers             = { slack_channel = "#ratecast-alerts", pagerduty = true }
  log_retention_days          = 90
  secret_recovery_window_days = 30

  # Cluster mode's Valkey (issue 13): primary + 2 replicas, one per AZ, automatic failover and
  # Multi-AZ. values-prod.yaml turns the chart's side on.
  redis = { enabled = true, node_type = "cache.m7g.large", node_count = 3 }

  circleci_org_id              = var.circleci_org_id
  circleci_project_ids         = var.circleci_project_ids
  admin_principal_arns         = var.admin_principal_arns
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  dns_zone_name                = var.dns_zone_name
}
