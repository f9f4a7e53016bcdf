locals {
  # Every entry has the same shape (values as a YAML string), so the map is well-typed whatever
  # is filtered out below.
  all_controllers = {
    aws-load-balancer-controller = {
      namespace       = "kube-system"
      repository      = "https://aws.github.io/eks-charts"
      chart           = "aws-load-balancer-controller"
      version         = var.chart_versions.aws_load_balancer_controller
      service_account = "aws-load-balancer-controller"
      values = yamlencode({
        clusterName  = var.cluster_name
        region       = data.aws_region.current.region
        vpcId        = var.vpc_id
        replicaCount = 2
        # Only Ingress/TargetGroupBinding objects are reconciled: plain LoadBalancer Services
        # keep their default behaviour and do not depend on this webhook being up.
        enableServiceMutatorWebhook = false
        serviceAccount              = { name = "aws-load-balancer-controller" }
      })
    }
    external-secrets = {
      namespace       = "external-secrets"
      repository      = "https://charts.external-secrets.io"
      chart           = "external-secrets"
      version         = var.chart_versions.external_secrets
      service_account = "external-secrets"
      values = yamlencode({
        installCRDs    = true
        serviceAccount = { name = "external-secrets" }
      })
    }
    cluster-autoscaler = {
      namespace       = "kube-system"
      repository      = "https://kubernetes.github.io/autoscaler"
      chart           = "cluster-autoscaler"
      version         = var.chart_versions.cluster_autoscaler
      service_account = "cluster-autoscaler"
      values = yamlencode({
        autoDiscovery      = { clusterName = var.cluster_name }
        awsRegion          = data.aws_region.current.region
        rbac               = { serviceAccount = { name = "cluster-autoscaler" } }
        expanderPriorities = var.autoscaler_priorities
        extraArgs = {
          expander                      = length(var.autoscaler_priorities) > 0 ? "priority" : "least-waste"
          balance-similar-node-groups   = true
          skip-nodes-with-local-storage = false
        }
      })
    }
    kube-prometheus-stack = {
      namespace       = "monitoring"
      repository      = "https://prometheus-community.github.io/helm-charts"
      chart           = "kube-prometheus-stack"
      version         = var.chart_versions.kube_prometheus_stack
      service_account = null
      values = yamlencode({
        prometheus = {
          prometheusSpec = {
            retention = var.prometheus_retention
            # Pick up the ServiceMonitor of any release, not only those labelled for this one.
            serviceMonitorSelectorNilUsesHelmValues = false
            podMonitorSelectorNilUsesHelmValues     = false
            ruleSelectorNilUsesHelmValues           = false
          }
        }
      })
    }
    # Serves the chart's HPA metric: WebSocket connections per pod, from the ratecast_ws_connections gauge.
    prometheus-adapter = {
      namespace       = "monitoring"
      repository      = "https://prometheus-community.github.io/helm-charts"
      chart           = "prometheus-adapter"
      version         = var.chart_versions.prometheus_adapter
      service_account = null
      values = yamlencode({
        prometheus = { url = "http://kube-prometheus-stack-prometheus.monitoring.svc", port = 9090 }
        rules = {
          default = false
          custom = [{
            seriesQuery  = "ratecast_ws_connections{namespace!=\"\",pod!=\"\"}"
            resources    = { overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } } }
            name         = { as = "ratecast_ws_connections" }
            metricsQuery = "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
          }]
        }
      })
    }
  }
  monitoring  = ["kube-prometheus-stack", "prometheus-adapter"]
  controllers = { for name, c in local.all_controllers : name => c if var.enable_monitoring || !contains(local.monitoring, name) }
}

# AWS permissions through EKS Pod Identity: one role per controller, bound to its service account.
module "pod_identity" {
  #checkov:skip=CKV_TF_1:Terraform Registry module, pinned to a major version (registry sources take no commit hash); the CircleCI plan shows any change before apply.
  source   = "terraform-aws-modules/eks-pod-identity/aws"
  version  = "~> 2.0"
  for_each = { for name, c in local.controllers : name => c if c.service_account != null }

  name = "${var.cluster_name}-${each.key}"

  attach_aws_lb_controller_policy = each.key == "aws-load-balancer-controller"

  attach_external_secrets_policy                     = each.key == "external-secrets"
  external_secrets_secrets_manager_arns              = [aws_secretsmanager_secret.api_key.arn]
  external_secrets_kms_key_arns                      = [aws_kms_key.secrets.arn]
  external_secrets_secrets_manager_create_permission = false

  attach_cluster_autoscaler_policy = each.key == "cluster-autoscaler"
  cluster_autoscaler_cluster_names = [var.cluster_name]

  associations = {
    this = {
      cluster_name    = var.cluster_name
      namespace       = each.value.namespace
      service_account = each.value.service_account
    }
  }

  tags = var.tags
}

resource "helm_release" "controller" {
  for_each = local.controllers

  name             = each.key
  namespace        = each.value.namespace
  create_namespace = true
  repository       = each.value.repository
  chart            = each.value.chart
  version          = each.value.version
  values           = [each.value.values]

  atomic  = true
  wait    = true
  timeout = 900

  # Credentials must exist before the pods start, or they cache "no credentials".
  depends_on = [module.pod_identity]
}

# Namespace of the app, the ClusterSecretStore, the ExternalSecret producing the chart's
# existingSecret, and the deployer RBAC: a local chart, because CRD-based objects cannot be
# planned with kubernetes_manifest before the CRDs exist.
resource "helm_release" "bootstrap" {
  name             = "ratecast-bootstrap"
  namespace        = var.app_namespace
  create_namespace = true
  chart            = "${path.module}/charts/ratecast-bootstrap"

  values = [yamlencode({
    region          = data.aws_region.current.region
    secretStoreName = var.secret_store_name
    deployerGroup   = var.deployer_group
    # The chart puts its Grafana dashboard ConfigMap there.
    dashboardNamespace = var.enable_monitoring ? "monitoring" : ""
    externalSecret = {
      enabled   = var.create_external_secret
      name      = var.api_key_secret_name
      secretKey = var.api_key_secret_key
      remoteKey = aws_secretsmanager_secret.api_key.name
    }
  })]

  atomic = true
  wait   = true

  depends_on = [helm_release.controller]
}
