output "state_bucket" {
  description = "State bucket: pass it to every root's init with -backend-config=bucket=..."
  value       = aws_s3_bucket.state.bucket
}

output "repository_urls" {
  description = "ECR repository URLs (image and OCI chart)."
  value       = module.registry.repository_urls
}

output "ci_role_arns" {
  description = "Pipeline roles, by purpose (set them in the CircleCI contexts)."
  value       = { for k, m in module.ci_role : k => m.arn }
}

output "cosign_key" {
  description = "cosign key reference for signing and verification."
  value       = "awskms:///${aws_kms_alias.cosign.name}"
}

output "circleci_oidc_provider_arn" {
  description = "IAM OIDC provider of the CircleCI organization."
  value       = aws_iam_openid_connect_provider.circleci.arn
}
