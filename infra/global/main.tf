data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
}

################################################################################
# Encryption keys
################################################################################

data "aws_iam_policy_document" "account_key" {
  #checkov:skip=CKV_AWS_109:Key policy: "*" is the key itself and the account root is its administrator, as in the KMS default policy.
  #checkov:skip=CKV_AWS_111:Key policy: "*" is the key itself; write access is constrained by IAM policies of the account.
  #checkov:skip=CKV_AWS_356:Key policy: a key policy's resource can only be "*" (this key).
  # Access to the keys is then granted by IAM policies (the CI roles below).
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
  }
}

resource "aws_kms_key" "state" {
  description             = "ratecast: Terraform state and ECR layers"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.account_key.json
}

resource "aws_kms_alias" "state" {
  name          = "alias/ratecast-artifacts"
  target_key_id = aws_kms_key.state.key_id
}

# cosign signs images and SBOM attestations with this key (cosign --key awskms:///alias/ratecast-cosign):
# the private half never leaves KMS, so CI holds no signing secret.
resource "aws_kms_key" "cosign" {
  #checkov:skip=CKV_AWS_7:Asymmetric SIGN_VERIFY keys cannot be rotated by KMS; rotating means a new key and re-publishing the verification key.
  description              = "ratecast: cosign image signing"
  customer_master_key_spec = "ECC_NIST_P256"
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = 30
  policy                   = data.aws_iam_policy_document.account_key.json
}

resource "aws_kms_alias" "cosign" {
  name          = "alias/ratecast-cosign"
  target_key_id = aws_kms_key.cosign.key_id
}

################################################################################
# Terraform state bucket (one object per root, S3-native locking: no DynamoDB)
################################################################################

resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_18:Server access logs would need their own bucket; reads and writes are audited with CloudTrail data events instead.
  #checkov:skip=CKV_AWS_144:State is versioned and small; a region outage blocks applies, not the running service, so cross-region replication is not worth its cost.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket event notifications.
  bucket = var.state_bucket_name
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.state.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    id     = "expire-superseded-state"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.state_noncurrent_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "state_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.state.arn, "${aws_s3_bucket.state.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = data.aws_iam_policy_document.state_bucket.json
}

################################################################################
# Registries
################################################################################

module "registry" {
  source = "../modules/registry"

  repositories     = var.repositories
  kms_key_arn      = aws_kms_key.state.arn
  pull_account_ids = var.pull_account_ids
}

################################################################################
# CircleCI OIDC and the pipeline's roles
################################################################################

# AWS validates the issuer through its own trust store, so no thumbprint is pinned.
resource "aws_iam_openid_connect_provider" "circleci" {
  url            = "https://oidc.circleci.com/org/${var.circleci_org_id}"
  client_id_list = [var.circleci_org_id]
}

data "aws_iam_policy_document" "publish" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushImageAndChart"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:DescribeImageScanFindings",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = values(module.registry.repository_arns)
  }

  statement {
    sid       = "CosignSign"
    actions   = ["kms:DescribeKey", "kms:GetPublicKey", "kms:Sign"]
    resources = [aws_kms_key.cosign.arn]
  }
}

data "aws_iam_policy_document" "terraform_state" {
  statement {
    sid       = "ListState"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.state.arn]
  }

  statement {
    sid       = "ReadState"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.state.arn}/*"]
  }

  # A plan holds the S3 lock file (<key>.tflock) while it runs.
  statement {
    sid       = "Lock"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.state.arn}/*.tflock"]
  }

  statement {
    sid       = "StateKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.state.arn]
  }
}

locals {
  ci_roles = {
    # vcs_refs: the git refs (CircleCI v2 token `sub` ... /vcs-ref/<ref>) whose jobs may assume
    # the role, matching the workflow filters of .circleci/continue.yml; [] = any ref (plan runs
    # on every branch and is read-only).
    publish = {
      description = "CircleCI: push the image and the chart to ECR, sign with cosign"
      policy_json = data.aws_iam_policy_document.publish.json
      managed     = {}
      vcs_refs    = ["refs/heads/main", "refs/tags/v*"]
    }
    terraform-plan = {
      description = "CircleCI: terraform plan of every root (read-only)"
      policy_json = data.aws_iam_policy_document.terraform_state.json
      managed     = { read-only = "arn:${data.aws_partition.current.partition}:iam::aws:policy/ReadOnlyAccess" }
      vcs_refs    = []
    }
    terraform-apply = {
      description = "CircleCI: terraform apply, behind an approval job"
      policy_json = null
      managed     = {}
      vcs_refs    = ["refs/heads/main"]
    }
  }
}

module "ci_role" {
  source   = "../modules/ci-role"
  for_each = local.ci_roles

  name                 = "ratecast-ci-${each.key}"
  description          = each.value.description
  oidc_provider_arn    = aws_iam_openid_connect_provider.circleci.arn
  circleci_org_id      = var.circleci_org_id
  circleci_project_ids = var.circleci_project_ids
  policy_json          = each.value.policy_json
  managed_policy_arns  = each.value.managed
  vcs_refs             = each.value.vcs_refs
  max_session_duration = 7200
}

resource "aws_iam_role_policy_attachment" "terraform_apply_admin" {
  #checkov:skip=CKV_AWS_274:Applying these roots creates IAM roles, KMS keys, VPCs and clusters: only admin can. The role is usable only by this CircleCI project, from a restricted context, after a manual approval job.
  role       = module.ci_role["terraform-apply"].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AdministratorAccess"
}
