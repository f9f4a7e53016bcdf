# dev: cheapest shape that still runs what prod runs: 2 AZs, one NAT, spot nodes only.
module "ratecast" {
  source = "../../modules/environment"

  environment        = "dev"
  vpc_cidr           = "10.10.0.0/16"
  az_count           = 2
  single_nat_gateway = true

  node_groups = {
    # 2 vCPU / 4 GiB types, so the autoscaler's node template fits whichever spot pool it gets.
    base = {
      capacity_type  = "SPOT"
      instance_types = ["t4g.medium", "c7g.large", "c6g.large"]
      min_size       = 1
      desired_size   = 2
      max_size       = 3
    }
  }

  # The chart renders a ServiceMonitor in every env: its CRD must exist.
  enable_monitoring           = true
  alert_receivers             = { slack_channel = "#ratecast-dev" }
  log_retention_days          = 7
  secret_recovery_window_days = 0

  # Cluster mode's Valkey (issue 13): off. dev runs one replica, which cluster mode gives nothing
  # (one poller already); CI covers cluster mode against a real redis-server and staging runs it.
  # Sized at one node for a test of it here: enabled = true and the values file as in staging.
  redis = { enabled = false, node_type = "cache.t4g.micro", node_count = 1 }

  circleci_org_id              = var.circleci_org_id
  circleci_project_ids         = var.circleci_project_ids
  admin_principal_arns         = var.admin_principal_arns
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  dns_zone_name                = var.dns_zone_name
}
