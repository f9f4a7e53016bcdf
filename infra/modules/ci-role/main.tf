locals {
  issuer = "oidc.circleci.com/org/${var.circleci_org_id}"
  # CircleCI's v2 token subject: org/<org>/project/<project>/user/<user>/vcs-origin/<origin>/vcs-ref/<ref>.
  # With vcs_refs set, only jobs built from those refs match; contexts and approval jobs still gate
  # who runs them, but a branch pushed by anyone can no longer reach the role.
  subjects = length(var.vcs_refs) == 0 ? [
    for p in var.circleci_project_ids : "org/${var.circleci_org_id}/project/${p}/user/*"
    ] : flatten([
      for p in var.circleci_project_ids : [
        for ref in var.vcs_refs : "org/${var.circleci_org_id}/project/${p}/user/*/vcs-origin/*/vcs-ref/${ref}"
      ]
  ])
}

# Only jobs of the listed projects in this organization get the role: CircleCI puts the org ID in
# `aud` and org/project/user (v2 token: also vcs-origin and vcs-ref) in `sub`.
data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = [var.circleci_org_id]
    }

    condition {
      test     = "StringLike"
      variable = "${local.issuer}:sub"
      values   = local.subjects
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.name
  description          = var.description
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_duration
  tags                 = var.tags
}

resource "aws_iam_role_policy" "this" {
  count = var.policy_json == null ? 0 : 1

  name   = var.name
  role   = aws_iam_role.this.id
  policy = var.policy_json
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = var.managed_policy_arns

  role       = aws_iam_role.this.name
  policy_arn = each.value
}
