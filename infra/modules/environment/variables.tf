variable "environment" {
  description = "Environment name: dev, staging or prod. Names the cluster (ratecast-<environment>), the VPC and the secrets."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "vpc_cidr" {
  description = "IPv4 /16 of the environment's VPC; distinct per environment so they can be peered later."
  type        = string
}

variable "az_count" {
  description = "Availability zones of the VPC and the node groups (2 or 3)."
  type        = number
}

variable "single_nat_gateway" {
  description = "One shared NAT gateway (true) or one per AZ (false)."
  type        = bool
}

variable "kubernetes_version" {
  description = "Kubernetes <major>.<minor> of the EKS cluster. Upgrade one minor at a time, dev first."
  type        = string
  default     = "1.35"
}

variable "deletion_protection" {
  description = "EKS deletion protection (prod): the cluster cannot be deleted until it is turned off."
  type        = bool
  default     = false
}

variable "node_groups" {
  description = "Graviton managed node groups, typed and validated by the cluster module's node_groups. The cluster autoscaler fills ON_DEMAND groups first, SPOT groups after."
  type        = any
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed on the public Kubernetes API endpoint (CircleCI IP ranges, VPN egress). Empty: private endpoint only."
  type        = list(string)
  default     = []
}

variable "admin_principal_arns" {
  description = "IAM roles of people given cluster-admin (the CircleCI Terraform apply role is added automatically)."
  type        = list(string)
  default     = []
}

variable "circleci_org_id" {
  description = "CircleCI organization ID (Organization Settings > Overview)."
  type        = string
}

variable "circleci_project_ids" {
  description = "CircleCI project IDs allowed to assume the environment's deploy role."
  type        = list(string)
}

variable "ci_terraform_role_names" {
  description = "Names of the CircleCI Terraform roles created by infra/global: apply gets cluster-admin, plan gets cluster-wide read."
  type = object({
    apply = string
    plan  = string
  })
  default = {
    apply = "ratecast-ci-terraform-apply"
    plan  = "ratecast-ci-terraform-plan"
  }
}

variable "deploy_repository_names" {
  description = "ECR repositories (created by infra/global) the deploy role reads: the released and main-branch OCI charts it installs and the image repository holding the cosign signatures it verifies."
  type        = list(string)
  default     = ["ratecast", "charts/ratecast", "charts/main/ratecast"]
}

variable "app_namespace" {
  description = "Namespace of the ratecast release."
  type        = string
  default     = "ratecast"
}

variable "dns_zone_name" {
  description = "Public Route 53 zone (e.g. example.com) for the app's ACM certificate: ratecast.<env>.<zone>, ratecast.<zone> in prod. null: no certificate here, bring your own ARN to the deploy context."
  type        = string
  default     = null
}

variable "enable_monitoring" {
  description = "Install kube-prometheus-stack and prometheus-adapter (namespace monitoring): needed when the chart renders a ServiceMonitor, PrometheusRule, dashboard or the connections-based HPA."
  type        = bool
  default     = false
}

variable "alert_receivers" {
  description = "Alertmanager receivers (with enable_monitoring): slack_channel gets every alert, pagerduty = true also pages critical ones. Credentials: Secrets Manager ratecast/<environment>/alertmanager-receivers."
  type = object({
    slack_channel = string
    pagerduty     = optional(bool, false)
  })
  default = { slack_channel = "#ratecast-alerts" }
}

variable "redis" {
  description = "Cluster mode's ElastiCache Valkey (issue 13): enabled, node_type, node_count (1: one node; more: primary + replicas with automatic failover and Multi-AZ). Its URL goes to Secrets Manager ratecast/<environment>/redis."
  type = object({
    enabled    = optional(bool, false)
    node_type  = optional(string, "cache.t4g.micro")
    node_count = optional(number, 1)
  })
  default = {}
}

variable "log_retention_days" {
  description = "Retention of the control-plane and VPC flow log groups, in days."
  type        = number
  default     = 30
}

variable "secret_recovery_window_days" {
  description = "Recovery window of the API key secret after deletion, in days (0: immediate)."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Extra tags on every resource (Environment is added)."
  type        = map(string)
  default     = {}
}
