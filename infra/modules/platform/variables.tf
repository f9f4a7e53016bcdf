variable "environment" {
  description = "Environment name (dev, staging, prod): part of the Secrets Manager key ratecast/<environment>/coingecko-api-key."
  type        = string
}

variable "cluster_name" {
  description = "EKS cluster the controllers are installed into."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster: given to the load balancer controller, which cannot read it from IMDS (hop limit 1)."
  type        = string
}

variable "app_namespace" {
  description = "Namespace of the ratecast release; created here so the deploy role can stay namespace-scoped."
  type        = string
  default     = "ratecast"
}

variable "deployer_group" {
  description = "Kubernetes group of the CircleCI deploy role: granted the CRD kinds (ServiceMonitor, ExternalSecret...) the EKS namespace admin policy lacks."
  type        = string
  default     = "ratecast:deployers"
}

variable "secret_store_name" {
  description = "Name of the ClusterSecretStore reading AWS Secrets Manager."
  type        = string
  default     = "aws-secrets-manager"
}

variable "api_key_secret_name" {
  description = "Name of the Kubernetes Secret holding the CoinGecko API key (the chart's existingSecret)."
  type        = string
  default     = "ratecast-coingecko"
}

variable "api_key_secret_key" {
  description = "Key inside that Secret."
  type        = string
  default     = "api-key"
}

variable "create_external_secret" {
  description = "Create here the ExternalSecret that writes the API key Secret. Off by default: the app chart renders its own (externalSecret.enabled in values-<env>.yaml) against the same ClusterSecretStore; two would fight over one Secret."
  type        = bool
  default     = false
}

variable "secret_recovery_window_days" {
  description = "Days a deleted Secrets Manager secret can still be restored (0 deletes at once)."
  type        = number
  default     = 7
}

variable "enable_monitoring" {
  description = "Install kube-prometheus-stack in the monitoring namespace (the ServiceMonitor/PrometheusRule CRDs the chart renders, Grafana for its dashboard) and prometheus-adapter (the ratecast_ws_connections Pods metric of the chart's HPA)."
  type        = bool
  default     = false
}

variable "kubernetes_version" {
  description = "Kubernetes <major>.<minor> of the cluster: selects the cluster autoscaler image of that minor."
  type        = string
}

variable "cluster_autoscaler_image_tags" {
  description = "Cluster autoscaler image tag per Kubernetes minor (the autoscaler is released per minor and supports only its own). Add the next minor's tag before upgrading the cluster: the plan fails otherwise."
  type        = map(string)
  default = {
    "1.33" = "v1.33.0"
    "1.34" = "v1.34.0"
    "1.35" = "v1.35.0"
  }
}

variable "prometheus_storage_size" {
  description = "Size of Prometheus' persistent volume (encrypted gp3, EBS CSI) when enable_monitoring is true."
  type        = string
  default     = "20Gi"
}

variable "alert_receivers" {
  description = "Where Alertmanager sends alerts: slack_channel gets every alert (webhook URL from the Secrets Manager secret ratecast/<environment>/alertmanager-receivers, key slack-webhook-url); pagerduty = true also pages critical alerts (key pagerduty-routing-key)."
  type = object({
    slack_channel = string
    pagerduty     = optional(bool, false)
  })
  default = { slack_channel = "#ratecast-alerts" }
}

variable "prometheus_retention" {
  description = "Prometheus retention when enable_monitoring is true."
  type        = string
  default     = "7d"
}

variable "autoscaler_priorities" {
  description = "Priority-expander config of the cluster autoscaler: priority => node-group-name regexes; higher is tried first (on-demand base before the spot overflow)."
  type        = map(list(string))
  default     = {}
}

variable "chart_versions" {
  description = "Versions of the controller charts. Bump them deliberately, after reading their changelogs."
  type = object({
    aws_load_balancer_controller = optional(string, "1.13.4")
    external_secrets             = optional(string, "0.19.2")
    cluster_autoscaler           = optional(string, "9.48.0")
    kube_prometheus_stack        = optional(string, "75.15.1")
    prometheus_adapter           = optional(string, "4.11.0")
  })
  default = {}
}

variable "extra_readable_secret_arns" {
  description = "Other Secrets Manager secrets External Secrets may read (cluster mode's Valkey URL), besides the API key and the Alertmanager receivers."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
