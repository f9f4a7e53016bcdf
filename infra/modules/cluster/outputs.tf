output "cluster_name" {
  description = "Name of the EKS cluster, known once nodes, add-ons and access entries exist too (what Helm releases need)."
  value       = module.eks.cluster_name
  depends_on  = [module.eks]
}

output "cluster_arn" {
  description = "ARN of the EKS cluster."
  value       = module.eks.cluster_arn
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.eks.cluster_endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA bundle of the API endpoint."
  value       = module.eks.cluster_certificate_authority_data
}

output "kubernetes_version" {
  description = "Kubernetes version of the control plane."
  value       = module.eks.cluster_version
}

output "node_security_group_id" {
  description = "Security group shared by the nodes."
  value       = module.eks.node_security_group_id
}
