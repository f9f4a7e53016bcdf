# Own state object per environment; the bucket (account-specific) is given at init:
#   terraform init -backend-config="bucket=$TF_STATE_BUCKET"
terraform {
  backend "s3" {
    key          = "envs/prod/terraform.tfstate"
    region       = "eu-west-1"
    encrypt      = true
    use_lockfile = true
  }
}
