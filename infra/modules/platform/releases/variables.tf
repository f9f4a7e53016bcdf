variable "releases" {
  description = "Helm releases by name: namespace, chart repository URL, chart, version and values (one YAML string)."
  type = map(object({
    namespace  = string
    repository = string
    chart      = string
    version    = string
    values     = string
  }))
}

variable "create_namespace" {
  description = "Let Helm create each release's namespace (false when another release owns and labels it)."
  type        = bool
}

variable "timeout" {
  description = "Seconds Helm waits for each release's resources to become ready."
  type        = number
  default     = 900
}
