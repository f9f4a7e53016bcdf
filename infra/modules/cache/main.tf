# Cluster mode's Redis (issue 13): one ElastiCache Valkey replication group per environment, in
# the private subnets, reachable only from the nodes, TLS in transit, encrypted at rest, with an
# AUTH token. The connection URL (it carries the token) goes to Secrets Manager
# ratecast/<environment>/redis as {"url": "rediss://..."}, which the chart's ExternalSecret reads.
resource "random_password" "auth_token" {
  length = 48
  # ElastiCache AUTH tokens: printable ASCII without @, ", / or spaces.
  override_special = "!&#$^<>-"
}

module "valkey" {
  #checkov:skip=CKV_TF_1:Terraform Registry module, pinned to an exact version (registry sources take no commit hash); the CircleCI plan shows any change before apply.
  source  = "terraform-aws-modules/elasticache/aws"
  version = "1.10.3"

  replication_group_id = var.name
  description          = "ratecast cluster mode (${var.name})"

  engine                 = "valkey"
  engine_version         = var.engine_version
  parameter_group_family = "valkey${split(".", var.engine_version)[0]}"
  create_parameter_group = true
  node_type              = var.node_type
  num_cache_clusters     = var.node_count

  # Failover needs a replica; prod gets one per extra node, spread over the AZs.
  automatic_failover_enabled = var.node_count > 1
  multi_az_enabled           = var.node_count > 1

  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.auth_token.result
  at_rest_encryption_enabled = true
  kms_key_arn                = var.kms_key_arn

  snapshot_retention_limit = var.node_count > 1 ? 1 : 0
  maintenance_window       = "sun:03:00-sun:04:00"
  snapshot_window          = "01:00-02:00"
  apply_immediately        = false

  vpc_id                   = var.vpc_id
  subnet_ids               = var.subnet_ids
  subnet_group_name        = var.name
  security_group_name      = "${var.name}-valkey"
  security_group_rules = {
    ingress_nodes = {
      description                  = "Valkey from the EKS nodes (ratecast pods)"
      referenced_security_group_id = var.node_security_group_id
    }
  }

  tags = var.tags
}

resource "aws_secretsmanager_secret" "url" {
  #checkov:skip=CKV2_AWS_57:The AUTH token is rotated by changing random_password (a Terraform apply), which rewrites this secret; Secrets Manager rotation cannot reach ElastiCache's token.
  name                    = "ratecast/${var.environment}/redis"
  description             = "Valkey URL of ratecast ${var.environment} cluster mode (JSON: url)"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id = aws_secretsmanager_secret.url.id
  secret_string = jsonencode({
    url = "rediss://:${urlencode(random_password.auth_token.result)}@${module.valkey.replication_group_primary_endpoint_address}:${module.valkey.replication_group_port}"
  })
}
