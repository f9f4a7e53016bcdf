data "aws_region" "current" {}

# An explicit allow-list of zone names: a zone added (or briefly unavailable) in the region never
# shifts which AZs the subnets live in.
data "aws_availability_zones" "selected" {
  filter {
    name   = "zone-name"
    values = [for s in var.az_suffixes : "${data.aws_region.current.region}${s}"]
  }
}

locals {
  azs = slice(sort(data.aws_availability_zones.selected.names), 0, var.az_count)
}

module "vpc" {
  #checkov:skip=CKV_TF_1:Terraform Registry module, pinned to a major version (registry sources take no commit hash); the CircleCI plan shows any change before apply.
  source  = "terraform-aws-modules/vpc/aws"
  version = "6.6.0"

  name = var.name
  cidr = var.cidr
  azs  = local.azs

  # Private /20s from the bottom of the range; public /24s start after the third /20 (index 48 of
  # the /24s), so the layout is the same whatever az_count is.
  private_subnets = [for i in range(var.az_count) : cidrsubnet(var.cidr, 4, i)]
  public_subnets  = [for i in range(var.az_count) : cidrsubnet(var.cidr, 8, 48 + i)]

  enable_nat_gateway     = true
  single_nat_gateway     = var.single_nat_gateway
  one_nat_gateway_per_az = !var.single_nat_gateway

  enable_dns_hostnames = true
  enable_dns_support   = true

  # Subnet discovery tags of the AWS Load Balancer Controller: internet-facing ALBs go to the
  # public subnets, internal ones to the private subnets.
  public_subnet_tags  = { "kubernetes.io/role/elb" = "1" }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = "1" }

  # The default security group stays, but with no rules, so nothing can use it by accident.
  manage_default_security_group  = true
  default_security_group_ingress = []
  default_security_group_egress  = []

  enable_flow_log                                 = true
  create_flow_log_cloudwatch_log_group            = true
  create_flow_log_cloudwatch_iam_role             = true
  flow_log_max_aggregation_interval               = 600
  flow_log_cloudwatch_log_group_retention_in_days = var.flow_log_retention_days

  tags = var.tags
}
