variable "name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes <major>.<minor> of the control plane and the managed node groups."
  type        = string
  default     = "1.35"
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the nodes and the control-plane ENIs (one per AZ)."
  type        = list(string)
}

variable "subnet_azs" {
  description = "Availability zone of each of subnet_ids, in the same order: names the per-AZ node groups."
  type        = list(string)

  validation {
    condition     = length(var.subnet_azs) > 0
    error_message = "Give the AZ of every subnet."
  }
}

variable "deletion_protection" {
  description = "EKS deletion protection: the cluster cannot be deleted until it is turned off (prod)."
  type        = bool
  default     = false
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint. Empty (the default) keeps the endpoint private-only; the private endpoint is always on."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.endpoint_public_access_cidrs, "0.0.0.0/0")
    error_message = "The public API endpoint must not be open to the whole internet; list the CIDRs that need it."
  }
}

variable "node_groups" {
  description = <<-EOT
    EKS managed node groups, all Graviton (arm64) on Amazon Linux 2023. Per group:
    capacity_type ON_DEMAND or SPOT; instance_types (several for SPOT, to widen the spot pools);
    min_size / max_size / desired_size (desired is only used at creation, the cluster autoscaler
    owns it afterwards); one_per_az: one group per AZ, each with these sizes (what a zone
    topology spread with DoNotSchedule needs from the autoscaler); disk_size_gib of the gp3 root
    volume; labels and taints.
  EOT
  type = map(object({
    capacity_type  = string
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    one_per_az     = optional(bool, false)
    disk_size_gib  = optional(number, 20)
    labels         = optional(map(string), {})
    taints = optional(map(object({
      key    = string
      value  = optional(string)
      effect = string
    })), {})
  }))

  validation {
    condition     = alltrue([for g in values(var.node_groups) : contains(["ON_DEMAND", "SPOT"], g.capacity_type)])
    error_message = "capacity_type must be ON_DEMAND or SPOT."
  }

  validation {
    # Graviton families carry a "g" after the generation digit: t4g, m7g, c7gn, r8g...
    condition     = alltrue(flatten([for g in values(var.node_groups) : [for t in g.instance_types : can(regex("^[a-z]+[0-9]+g[a-z]*\\.", t))]]))
    error_message = "Node groups run the arm64 AMI: every instance type must be a Graviton type."
  }

  validation {
    condition     = alltrue([for g in values(var.node_groups) : g.min_size <= g.desired_size && g.desired_size <= g.max_size])
    error_message = "Each node group needs min_size <= desired_size <= max_size."
  }
}

variable "admin_principal_arns" {
  description = "IAM principals (roles of the platform team, the Terraform apply role) given cluster-admin through EKS access entries."
  type        = list(string)
  default     = []
}

variable "viewer_principal_arns" {
  description = "IAM principals given read access to the whole cluster, secrets included (the Terraform plan role needs it to refresh Helm releases)."
  type        = list(string)
  default     = []
}

variable "namespace_deployers" {
  description = "IAM principals that deploy into one namespace (the CircleCI deploy role): namespace-scoped admin access policy, plus membership of kubernetes_group for the extra CRD permissions granted in the cluster."
  type = map(object({
    principal_arn    = string
    namespace        = string
    kubernetes_group = string
  }))
  default = {}
}

variable "log_types" {
  description = "Control-plane log types sent to CloudWatch."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "log_retention_days" {
  description = "Retention of the control-plane log group, in days."
  type        = number
  default     = 90
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
