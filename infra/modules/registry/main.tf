data "aws_partition" "current" {}

resource "aws_ecr_repository" "this" {
  #checkov:skip=CKV_AWS_51:Immutable except cosign's sha256-<digest>.sig/.att tags (IMMUTABLE_WITH_EXCLUSION, which this check predates): cosign must re-push them on a retried publish, and each names the digest it signs.
  for_each = var.repositories

  name = each.key
  # A tag, once pushed, always names the same digest: deployments stay valid. Except cosign's
  # sha256-<digest>.sig / .att tags: cosign re-pushes them (adding a signature or attestation to
  # the same digest), so a publish retried after a partial failure would fail on IMMUTABLE. They
  # name a digest in their own tag, so they cannot be pointed at another image.
  image_tag_mutability = "IMMUTABLE_WITH_EXCLUSION"

  dynamic "image_tag_mutability_exclusion_filter" {
    for_each = var.mutable_tag_patterns
    content {
      filter      = image_tag_mutability_exclusion_filter.value
      filter_type = "WILDCARD"
    }
  }

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  # A rule never expires an image matched by a higher-priority rule, so signatures come first,
  # then releases. The tag sets are disjoint (ECR still counts an image matched by a higher rule
  # in a lower rule's count): signatures sha256-<hex>.sig/.att have one dot, releases X.Y.Z two,
  # git-SHA image tags none; pre-release charts live in their own repository (see
  # infra/global), so `*.*.*` only ever matches releases.
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Keep the signatures and attestations of the kept artefacts"
        selection = {
          tagStatus      = "tagged"
          tagPatternList = ["sha256-*"]
          countType      = "imageCountMoreThan"
          countNumber    = var.signature_keep_count
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the last ${var.release_keep_count} releases"
        selection = {
          tagStatus      = "tagged"
          tagPatternList = var.release_tag_patterns
          countType      = "imageCountMoreThan"
          countNumber    = var.release_keep_count
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 3
        description  = "Expire untagged manifests after ${var.untagged_expiry_days} days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.untagged_expiry_days
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 4
        description  = "Keep the last ${var.keep_count} other artefacts"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.keep_count
        }
        action = { type = "expire" }
      },
    ]
  })
}

data "aws_iam_policy_document" "cross_account_pull" {
  count = length(var.pull_account_ids) > 0 ? 1 : 0

  statement {
    sid = "CrossAccountPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]

    principals {
      type        = "AWS"
      identifiers = [for id in var.pull_account_ids : "arn:${data.aws_partition.current.partition}:iam::${id}:root"]
    }
  }
}

resource "aws_ecr_repository_policy" "this" {
  for_each = length(var.pull_account_ids) > 0 ? aws_ecr_repository.this : {}

  repository = each.value.name
  policy     = data.aws_iam_policy_document.cross_account_pull[0].json
}
