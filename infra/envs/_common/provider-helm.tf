# Shared by the environment roots (symlinked).
# Talks to the cluster created in the same apply; `aws eks get-token` runs under the same AWS
# credentials as Terraform (the CI role or the operator's profile).
provider "helm" {
  kubernetes = {
    host                   = module.ratecast.cluster_endpoint
    cluster_ca_certificate = base64decode(module.ratecast.cluster_certificate_authority_data)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.ratecast.cluster_name, "--region", var.region]
    }
  }
}
