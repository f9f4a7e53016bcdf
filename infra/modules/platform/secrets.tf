data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_iam_policy_document" "secrets_key" {
  #checkov:skip=CKV_AWS_109:Key policy: "*" is the key itself and the account root is its administrator, as in the KMS default policy.
  #checkov:skip=CKV_AWS_111:Key policy: "*" is the key itself; write access is constrained by IAM policies of the account.
  #checkov:skip=CKV_AWS_356:Key policy: a key policy's resource can only be "*" (this key).
  # Key administration stays with IAM policies of the account; readers get kms:Decrypt through
  # their role (External Secrets), scoped to Secrets Manager by the condition below.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "UseThroughSecretsManager"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:CallerAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.region}.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "secrets" {
  description             = "ratecast ${var.environment}: Secrets Manager secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.secrets_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/ratecast-${var.environment}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

# Only the container: the value is put by an operator (see infra/README.md) so it never lands in
# the Terraform state or the repo.
resource "aws_secretsmanager_secret" "api_key" {
  #checkov:skip=CKV2_AWS_57:A CoinGecko API key is issued in CoinGecko's dashboard; AWS cannot rotate it. Rotation is a manual runbook step (infra/README.md).
  name                    = "ratecast/${var.environment}/coingecko-api-key"
  description             = "CoinGecko API key of ratecast ${var.environment} (plain string)"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

# Alertmanager's receiver credentials, a JSON object with the keys `slack-webhook-url` and (with
# PagerDuty on) `pagerduty-routing-key`, put by an operator like the API key (infra/README.md).
# The bootstrap chart's ExternalSecret writes it to Secret alertmanager-receivers in monitoring.
resource "aws_secretsmanager_secret" "alertmanager_receivers" {
  #checkov:skip=CKV2_AWS_57:Slack webhook URLs and PagerDuty routing keys are issued by those services; AWS cannot rotate them. Rotation is a manual runbook step (infra/README.md).
  count = var.enable_monitoring ? 1 : 0

  name                    = "ratecast/${var.environment}/alertmanager-receivers"
  description             = "Alertmanager receivers of ratecast ${var.environment}: JSON {slack-webhook-url, pagerduty-routing-key}"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}
