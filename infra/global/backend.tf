# Account-wide resources; bootstrapped once with local state (see infra/README.md), then migrated here.
terraform {
  backend "s3" {
    key          = "global/terraform.tfstate"
    region       = "eu-west-1"
    encrypt      = true
    use_lockfile = true
  }
}
