variable "name" {
  description = "Name of the IAM role."
  type        = string
}

variable "description" {
  description = "Description of the IAM role (what the pipeline uses it for)."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider of the CircleCI organization (https://oidc.circleci.com/org/<org-id>)."
  type        = string
}

variable "circleci_org_id" {
  description = "CircleCI organization ID: the token audience and the prefix of its subject."
  type        = string
}

variable "circleci_project_ids" {
  description = "CircleCI project IDs whose jobs may assume the role (the token subject is org/<org>/project/<project>/user/<user>)."
  type        = list(string)

  validation {
    condition     = length(var.circleci_project_ids) > 0
    error_message = "Scope the role to at least one project."
  }
}

variable "vcs_refs" {
  description = "Git refs whose jobs may assume the role, matched against the vcs-ref of CircleCI's v2 OIDC token subject (IAM StringLike: refs/heads/main, refs/tags/v*). Empty: any ref of the projects."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.vcs_refs : startswith(r, "refs/heads/") || startswith(r, "refs/tags/")])
    error_message = "vcs_refs are full git refs: refs/heads/<branch> or refs/tags/<tag>."
  }
}

variable "policy_json" {
  description = "Inline policy of the role (JSON). null for none."
  type        = string
  default     = null
}

variable "managed_policy_arns" {
  description = "Managed policies attached to the role, by a static key."
  type        = map(string)
  default     = {}
}

variable "max_session_duration" {
  description = "Longest session, in seconds (a Terraform apply of a new cluster takes ~30 min)."
  type        = number
  default     = 3600
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
