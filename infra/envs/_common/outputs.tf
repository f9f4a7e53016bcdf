# Shared by the environment roots (symlinked); read by the pipeline with `terraform output -raw`.
output "cluster_name" {
  description = "EKS cluster name."
  value       = module.ratecast.cluster_name
}

output "ci_deploy_role_arn" {
  description = "Role of the CircleCI deploy job of this environment."
  value       = module.ratecast.ci_deploy_role_arn
}

output "vpc_cidr" {
  description = "VPC CIDR: the chart's trusted proxy range."
  value       = module.ratecast.vpc_cidr
}

output "nat_public_ips" {
  description = "Egress IPs of the NAT gateways."
  value       = module.ratecast.nat_public_ips
}

output "app_namespace" {
  description = "Namespace ratecast is deployed into."
  value       = module.ratecast.app_namespace
}

output "api_key_secret_name" {
  description = "Secrets Manager secret holding the CoinGecko API key."
  value       = module.ratecast.api_key_secret_name
}

output "existing_secret_name" {
  description = "Kubernetes Secret the chart's existingSecret names."
  value       = module.ratecast.existing_secret_name
}

output "certificate_arn" {
  description = "ACM certificate for the ALB: INGRESS_CERTIFICATE_ARN of the deploy context (null without dns_zone_name)."
  value       = module.ratecast.certificate_arn
}
