variable "name" {
  description = "Replication group ID, subnet group and security group name (ratecast-<environment>)."
  type        = string
}

variable "environment" {
  description = "Environment name: part of the Secrets Manager name ratecast/<environment>/redis."
  type        = string
}

variable "engine_version" {
  description = "Valkey <major>.<minor>; its major names the parameter group family (valkey8)."
  type        = string
  default     = "8.0"
}

variable "node_type" {
  description = "ElastiCache node type (Graviton cache.t4g / cache.m7g)."
  type        = string
}

variable "node_count" {
  description = "Nodes of the replication group: 1 (no replica, no failover) or more (one primary, replicas in other AZs, automatic failover and Multi-AZ)."
  type        = number

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 6
    error_message = "node_count is 1 to 6."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the replication group (one per AZ)."
  type        = list(string)
}

variable "node_security_group_id" {
  description = "Security group of the EKS nodes: the only source allowed on the Valkey port."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the data at rest and the URL secret."
  type        = string
}

variable "secret_recovery_window_days" {
  description = "Days a deleted URL secret can still be restored (0 deletes at once)."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
