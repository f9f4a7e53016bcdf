variable "state_bucket_name" {
  description = "Globally unique name of the S3 bucket holding every root's Terraform state (e.g. ratecast-tfstate-<account-id>)."
  type        = string
}

variable "repositories" {
  description = "ECR repositories: the image, the released OCI Helm chart (X.Y.Z) and the main-branch charts (X.Y.Z-g<sha>), apart so the release lifecycle pattern never matches a pre-release."
  type        = set(string)
  default     = ["ratecast", "charts/ratecast", "charts/main/ratecast"]
}

variable "pull_account_ids" {
  description = "Other AWS accounts allowed to pull from the repositories (environments in separate accounts)."
  type        = list(string)
  default     = []
}

variable "state_noncurrent_days" {
  description = "Days superseded state versions are kept (the undo window for a bad apply)."
  type        = number
  default     = 90
}
