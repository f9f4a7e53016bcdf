variable "repositories" {
  description = "ECR repositories to create, by name (e.g. the image `ratecast` and the OCI chart `charts/ratecast`)."
  type        = set(string)
}

variable "kms_key_arn" {
  description = "KMS key encrypting the repositories' layers."
  type        = string
}

variable "release_tag_patterns" {
  description = "Tag wildcards of release artefacts: the lifecycle policy keeps release_keep_count of them before anything else. The default matches semver (x.y.z, chart versions included), never a git SHA."
  type        = list(string)
  default     = ["*.*.*"]
}

variable "release_keep_count" {
  description = "How many release-tagged artefacts each repository keeps."
  type        = number
  default     = 100
}

variable "untagged_expiry_days" {
  description = "Days after which untagged manifests (superseded multi-arch parts) are expired."
  type        = number
  default     = 7
}

variable "keep_count" {
  description = "How many artefacts of any other tag (git SHAs, cosign signatures and attestations) each repository keeps."
  type        = number
  default     = 300
}

variable "pull_account_ids" {
  description = "Other AWS accounts whose principals may pull (when environments live in separate accounts). Empty: same-account pulls only."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
