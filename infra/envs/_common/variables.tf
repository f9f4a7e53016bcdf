# Shared by the environment roots (symlinked). Values come from TF_VAR_* (CircleCI contexts) or a
# local, untracked *.auto.tfvars.
variable "admin_principal_arns" {
  description = "IAM roles of the platform team, given cluster-admin."
  type        = list(string)
  default     = []
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed on the public API endpoint (CircleCI IP ranges, VPN); empty keeps it private."
  type        = list(string)
  default     = []
}

variable "dns_zone_name" {
  description = "Public Route 53 zone for the app's certificate (ratecast.<env>.<zone>; ratecast.<zone> in prod). null: no certificate."
  type        = string
  default     = null
}
