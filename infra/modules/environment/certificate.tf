# TLS certificate of the app's host name for the ALB (the chart's ingress.alb.certificateArn),
# validated through DNS in the public zone. Host names follow the chart's values files:
# ratecast.<env>.<zone>, and ratecast.<zone> for prod.
locals {
  create_certificate = var.dns_zone_name != null
  app_hostname       = var.environment == "prod" ? "ratecast.${coalesce(var.dns_zone_name, "-")}" : "ratecast.${var.environment}.${coalesce(var.dns_zone_name, "-")}"
}

data "aws_route53_zone" "public" {
  count = local.create_certificate ? 1 : 0

  name         = var.dns_zone_name
  private_zone = false
}

resource "aws_acm_certificate" "app" {
  count = local.create_certificate ? 1 : 0

  domain_name       = local.app_hostname
  validation_method = "DNS"

  options {
    certificate_transparency_logging_preference = "ENABLED"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "certificate_validation" {
  for_each = local.create_certificate ? {
    for o in aws_acm_certificate.app[0].domain_validation_options : o.domain_name => o
  } : {}

  zone_id = data.aws_route53_zone.public[0].zone_id
  name    = each.value.resource_record_name
  type    = each.value.resource_record_type
  records = [each.value.resource_record_value]
  ttl     = 300
}

resource "aws_acm_certificate_validation" "app" {
  count = local.create_certificate ? 1 : 0

  certificate_arn         = aws_acm_certificate.app[0].arn
  validation_record_fqdns = [for r in aws_route53_record.certificate_validation : r.fqdn]
}
