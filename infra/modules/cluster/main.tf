data "aws_partition" "current" {}

locals {
  access_policy_prefix = "arn:${data.aws_partition.current.partition}:eks::aws:cluster-access-policy"

  # Access entries only: the aws-auth ConfigMap is not used (authentication_mode = "API").
  access_entries = merge(
    { for arn in distinct(var.admin_principal_arns) : "admin-${basename(arn)}" => {
      principal_arn = arn
      policy_associations = {
        admin = {
          policy_arn   = "${local.access_policy_prefix}/AmazonEKSClusterAdminPolicy"
          access_scope = { type = "cluster" }
        }
      }
    } },
    { for arn in distinct(var.viewer_principal_arns) : "viewer-${basename(arn)}" => {
      principal_arn = arn
      policy_associations = {
        view = {
          policy_arn   = "${local.access_policy_prefix}/AmazonEKSAdminViewPolicy"
          access_scope = { type = "cluster" }
        }
      }
    } },
    { for key, d in var.namespace_deployers : "deployer-${key}" => {
      principal_arn     = d.principal_arn
      kubernetes_groups = [d.kubernetes_group]
      policy_associations = {
        namespace-admin = {
          policy_arn   = "${local.access_policy_prefix}/AmazonEKSAdminPolicy"
          access_scope = { type = "namespace", namespaces = [d.namespace] }
        }
      }
    } },
  )

  # A group with one_per_az becomes one managed node group per AZ (<name>-<zone letter>), each in
  # its AZ's subnet only: the cluster autoscaler can then add a node in the zone a pending pod
  # needs, which a topology spread with whenUnsatisfiable DoNotSchedule requires (it cannot pick
  # the AZ of a node group that spans several).
  expanded_node_groups = merge([for name, g in var.node_groups : (
    g.one_per_az
    ? { for i, subnet in var.subnet_ids : "${name}-${substr(var.subnet_azs[i], -1, 1)}" => merge(g, { group = name, subnet_ids = [subnet] }) }
    : { (name) = merge(g, { group = name, subnet_ids = var.subnet_ids }) }
  )]...)

  node_groups = { for name, g in local.expanded_node_groups : name => {
    ami_type       = "AL2023_ARM_64_STANDARD"
    capacity_type  = g.capacity_type
    instance_types = g.instance_types
    min_size       = g.min_size
    max_size       = g.max_size
    desired_size   = g.desired_size
    subnet_ids     = g.subnet_ids

    labels = merge(g.labels, {
      "ratecast.io/node-group" = g.group
      "ratecast.io/capacity"   = lower(g.capacity_type)
    })
    taints = g.taints

    block_device_mappings = {
      xvda = {
        device_name = "/dev/xvda"
        ebs = {
          volume_size           = g.disk_size_gib
          volume_type           = "gp3"
          encrypted             = true
          delete_on_termination = true
        }
      }
    }

    # IMDSv2 only, one hop: pods get AWS credentials from EKS Pod Identity, never from the node role.
    metadata_options = {
      http_endpoint               = "enabled"
      http_tokens                 = "required"
      http_put_response_hop_limit = 1
    }

    # The cluster autoscaler discovers the groups by these tags.
    tags = {
      "k8s.io/cluster-autoscaler/enabled"     = "true"
      "k8s.io/cluster-autoscaler/${var.name}" = "owned"
    }
  } }
}

module "eks" {
  #checkov:skip=CKV_TF_1:Terraform Registry module, pinned to a major version (registry sources take no commit hash); the CircleCI plan shows any change before apply.
  source  = "terraform-aws-modules/eks/aws"
  version = "21.19.0"

  name               = var.name
  kubernetes_version = var.kubernetes_version

  # STANDARD: when a version leaves standard support, EKS upgrades the control plane instead of
  # moving it to extended support, billed at six times the standard hourly rate.
  upgrade_policy = { support_type = "STANDARD" }
  # prod: `terraform destroy` or a console click cannot delete the cluster until this is turned off.
  deletion_protection = var.deletion_protection

  vpc_id     = var.vpc_id
  subnet_ids = var.subnet_ids

  endpoint_private_access      = true
  endpoint_public_access       = length(var.endpoint_public_access_cidrs) > 0
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs

  # Secrets are envelope-encrypted with a KMS key created (with rotation) by the module.
  encryption_config = { resources = ["secrets"] }

  enabled_log_types                      = var.log_types
  cloudwatch_log_group_retention_in_days = var.log_retention_days

  authentication_mode                      = "API"
  enable_cluster_creator_admin_permissions = false
  access_entries                           = local.access_entries

  addons = {
    # Networking and Pod Identity must be up before the nodes join, or they never become Ready /
    # pods start without credentials.
    vpc-cni = {
      before_compute = true
      # Network policy agent: the chart's NetworkPolicy is enforced, not just stored. Prefix
      # delegation: a /28 per ENI slot, so small Graviton nodes are not capped at ~17 pods.
      configuration_values = jsonencode({
        enableNetworkPolicy = "true"
        env                 = { ENABLE_PREFIX_DELEGATION = "true" }
      })
    }
    eks-pod-identity-agent = { before_compute = true }
    kube-proxy             = {}
    coredns                = {}
    metrics-server         = {}
    # Persistent volumes (Prometheus' TSDB, which the HPA's connection metric is read from); the
    # controller's AWS role comes through Pod Identity, like the other controllers'.
    aws-ebs-csi-driver = {
      pod_identity_association = [{
        role_arn        = module.ebs_csi_pod_identity.iam_role_arn
        service_account = "ebs-csi-controller-sa"
      }]
    }
  }

  eks_managed_node_groups = local.node_groups

  tags = var.tags
}

# The EBS CSI controller's role; the add-on above creates the Pod Identity association.
module "ebs_csi_pod_identity" {
  #checkov:skip=CKV_TF_1:Terraform Registry module, pinned to an exact version (registry sources take no commit hash); the CircleCI plan shows any change before apply.
  source  = "terraform-aws-modules/eks-pod-identity/aws"
  version = "2.8.1"

  # Exact names: see the platform module's pod_identity (name_prefix is limited to 38 characters,
  # and the module's default policy name is the same in every environment of the account).
  name               = "${var.name}-ebs-csi"
  use_name_prefix    = false
  policy_name_prefix = "${var.name}-"

  attach_aws_ebs_csi_policy = true

  tags = var.tags
}
