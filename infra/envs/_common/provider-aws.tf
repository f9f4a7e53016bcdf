# Shared by every root (symlinked).
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "ratecast"
      ManagedBy = "terraform"
    }
  }
}

variable "region" {
  description = "AWS region of the root's resources (keep it equal to the region in its backend.tf)."
  type        = string
  default     = "eu-west-1"
}
