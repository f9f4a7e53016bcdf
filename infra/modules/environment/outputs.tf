output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.cluster.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.cluster.cluster_endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA bundle of the API endpoint."
  value       = module.cluster.cluster_certificate_authority_data
}

output "vpc_id" {
  description = "VPC ID."
  value       = module.network.vpc_id
}

output "vpc_cidr" {
  description = "VPC CIDR: the chart's trusted proxy range (the ALB reaches pods from VPC addresses)."
  value       = module.network.vpc_cidr
}

output "azs" {
  description = "Availability zones in use."
  value       = module.network.azs
}

output "nat_public_ips" {
  description = "Egress IPs of the NAT gateways."
  value       = module.network.nat_public_ips
}

output "ci_deploy_role_arn" {
  description = "Role for the CircleCI deploy job of this environment (AWS_ROLE_ARN in its context)."
  value       = module.ci_deploy_role.arn
}

output "app_namespace" {
  description = "Namespace to deploy ratecast into."
  value       = module.platform.app_namespace
}

output "api_key_secret_name" {
  description = "Secrets Manager secret to put the CoinGecko API key into."
  value       = module.platform.api_key_secret_name
}

output "existing_secret_name" {
  description = "Kubernetes Secret holding the key: the chart's existingSecret."
  value       = module.platform.existing_secret_name
}

output "app_hostname" {
  description = "Host name of the app (the chart's ingress host); meaningful when dns_zone_name is set."
  value       = local.create_certificate ? local.app_hostname : null
}

output "certificate_arn" {
  description = "Validated ACM certificate of app_hostname: INGRESS_CERTIFICATE_ARN of the env's deploy context. null without dns_zone_name."
  value       = local.create_certificate ? aws_acm_certificate_validation.app[0].certificate_arn : null
}

output "redis_url_secret_name" {
  description = "Secrets Manager secret with cluster mode's Valkey URL (the chart's cluster.redis.externalSecret.remoteKey); null while var.redis.enabled is false."
  value       = one(module.cache[*].url_secret_name)
}
