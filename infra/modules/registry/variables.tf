variable "repositories" {
  description = "ECR repositories to create, by name (e.g. the image `ratecast` and the OCI chart `charts/ratecast`)."
  type        = set(string)
}

variable "kms_key_arn" {
  description = "KMS key encrypting the repositories' layers."
  type        = string
}

variable "release_tag_patterns" {
  description = "Tag wildcards of release artefacts: the lifecycle policy keeps release_keep_count of them. The default matches X.Y.Z, never a git SHA or a cosign tag; pre-release chart versions (X.Y.Z-g<sha>) would match too, so they are pushed to a repository of their own."
  type        = list(string)
  default     = ["*.*.*"]
}

variable "mutable_tag_patterns" {
  description = "Tag wildcards exempt from tag immutability: cosign's sha256-<digest>.sig/.att tags, which cosign re-pushes when it adds a signature or attestation to the same digest."
  type        = list(string)
  default     = ["sha256-*"]

  validation {
    condition     = length(var.mutable_tag_patterns) >= 1 && length(var.mutable_tag_patterns) <= 5
    error_message = "ECR takes 1 to 5 exclusion filters."
  }
}

variable "signature_keep_count" {
  description = "How many cosign signature/attestation artefacts (sha256-* tags) each repository keeps, newest first. Each published digest has up to 5 (index and two platform signatures, two SBOM attestations), so the signatures of the last signature_keep_count / 5 published digests (1000 by default) survive, at least 5 x (release_keep_count + keep_count): a release whose signature expired could not be verified on rollback (re-running its tag's publish job re-scans and re-signs it)."
  type        = number
  default     = 5000
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
