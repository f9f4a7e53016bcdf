output "url_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the Valkey URL (read by External Secrets)."
  value       = aws_secretsmanager_secret.url.arn
}

output "url_secret_name" {
  description = "Name of that secret: the chart's cluster.redis.externalSecret.remoteKey."
  value       = aws_secretsmanager_secret.url.name
}

output "primary_endpoint" {
  description = "Primary endpoint address of the replication group."
  value       = module.valkey.replication_group_primary_endpoint_address
}
