output "vpc_id" {
  description = "ID of the VPC."
  value       = module.vpc.vpc_id
}

output "vpc_cidr" {
  description = "CIDR of the VPC: the ALB (target-type ip) reaches pods from addresses in it, so it is the chart's trusted proxy range."
  value       = module.vpc.vpc_cidr_block
}

output "azs" {
  description = "Availability zones used."
  value       = local.azs
}

output "private_subnet_ids" {
  description = "Private subnets (nodes, pods, control-plane ENIs)."
  value       = module.vpc.private_subnets
}

output "public_subnet_ids" {
  description = "Public subnets (internet-facing ALB, NAT gateways)."
  value       = module.vpc.public_subnets
}

output "nat_public_ips" {
  description = "Egress addresses of the NAT gateways (what CoinGecko sees)."
  value       = module.vpc.nat_public_ips
}
