# One Helm release per entry of var.releases: the platform installs its controllers in stages
# (core controllers, then its bootstrap chart, then monitoring), each stage a call of this module
# with its own depends_on, so the release settings live in one place.
resource "helm_release" "this" {
  for_each = var.releases

  name             = each.key
  namespace        = each.value.namespace
  create_namespace = var.create_namespace
  repository       = each.value.repository
  chart            = each.value.chart
  version          = each.value.version
  values           = [each.value.values]

  # Roll back a failed upgrade and wait for the workloads, so a broken controller fails the apply.
  atomic  = true
  wait    = true
  timeout = var.timeout
}
