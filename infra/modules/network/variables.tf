variable "name" {
  description = "Name of the VPC and prefix of its subnets, route tables and NAT gateways."
  type        = string
}

variable "cidr" {
  description = "IPv4 CIDR of the VPC. A /16 is expected: each private subnet gets a /20 (the VPC CNI gives every pod a VPC address), each public subnet a /24."
  type        = string

  validation {
    condition     = can(cidrhost(var.cidr, 0)) && tonumber(split("/", var.cidr)[1]) <= 16
    error_message = "cidr must be a valid IPv4 CIDR of size /16 or larger."
  }
}

variable "az_count" {
  description = "Number of availability zones to spread the subnets over (EKS needs at least 2)."
  type        = number

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "az_suffixes" {
  description = "Candidate zones, as suffixes of the region name; the first az_count are used. Change it if a zone lacks the instance types or EKS capacity."
  type        = list(string)
  default     = ["a", "b", "c"]
}

variable "single_nat_gateway" {
  description = "true: one NAT gateway shared by every private subnet (cheaper, loses egress when its AZ fails); false: one NAT gateway per AZ."
  type        = bool
}

variable "flow_log_retention_days" {
  description = "Retention of the VPC flow log CloudWatch log group, in days."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
