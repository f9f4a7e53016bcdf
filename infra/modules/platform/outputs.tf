output "api_key_secret_arn" {
  description = "ARN of the Secrets Manager secret to put the CoinGecko API key into."
  value       = aws_secretsmanager_secret.api_key.arn
}

output "api_key_secret_name" {
  description = "Name (remote key) of that secret: ratecast/<environment>/coingecko-api-key."
  value       = aws_secretsmanager_secret.api_key.name
}

output "app_namespace" {
  description = "Namespace the pipeline deploys ratecast into."
  value       = var.app_namespace
}

output "existing_secret_name" {
  description = "Kubernetes Secret the chart's existingSecret must name."
  value       = var.api_key_secret_name
}

output "controller_role_arns" {
  description = "Pod Identity role ARNs of the controllers, by controller."
  value       = { for name, m in module.pod_identity : name => m.iam_role_arn }
}

output "secrets_kms_key_arn" {
  description = "KMS key of the environment's Secrets Manager secrets (also encrypts cluster mode's Valkey)."
  value       = aws_kms_key.secrets.arn
}
