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
        # The autoscaler's minor must match the cluster's (its scheduler simulation is built from
        # that Kubernetes release); the chart's default image follows the chart, not the cluster.
        image              = { tag = local.cluster_autoscaler_image_tag }
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
        # EKS runs the control plane: controller-manager, scheduler and etcd are not scrapeable
        # from the cluster, and kube-proxy binds its metrics to 127.0.0.1. Their targets would be
        # down forever (and their default alerts firing), so neither scrape nor alert on them.
        kubeControllerManager = { enabled = false }
        kubeScheduler         = { enabled = false }
        kubeEtcd              = { enabled = false }
        kubeProxy             = { enabled = false }
        defaultRules = {
          rules = {
            etcd                   = false
            kubeControllerManager  = false
            kubeSchedulerAlerting  = false
            kubeSchedulerRecording = false
            kubeProxy              = false
          }
        }
        prometheus = {
          prometheusSpec = {
            retention = var.prometheus_retention
            # Pick up the ServiceMonitor of any release, not only those labelled for this one.
            serviceMonitorSelectorNilUsesHelmValues = false
            podMonitorSelectorNilUsesHelmValues     = false
            ruleSelectorNilUsesHelmValues           = false
            # The chart's HPA scales on ratecast_ws_connections read from this Prometheus: its
            # data must survive a pod restart or node replacement (EBS, via the CSI add-on).
            storageSpec = { volumeClaimTemplate = { spec = {
              storageClassName = local.storage_class
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = var.prometheus_storage_size } }
            } } }
          }
        }
        alertmanager = {
          alertmanagerSpec = {
            storage = { volumeClaimTemplate = { spec = {
              storageClassName = local.storage_class
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = "2Gi" } }
            } } }
            # The receivers' credentials, synced from Secrets Manager by the bootstrap chart's
            # ExternalSecret. Optional: Alertmanager starts (and the apply finishes) before an
            # operator has put the value; it reads the files when it sends a notification.
            volumes      = [{ name = "receivers", secret = { secretName = local.receivers_secret, optional = true } }]
            volumeMounts = [{ name = "receivers", mountPath = local.receivers_dir, readOnly = true }]
          }
          config = local.alertmanager_config
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
  monitoring = ["kube-prometheus-stack", "prometheus-adapter"]
  # Installed before the bootstrap chart (which needs External Secrets' CRDs); the monitoring
  # releases after it (they need its StorageClass, namespace and receivers' ExternalSecret).
  controllers          = { for name, c in local.all_controllers : name => c if !contains(local.monitoring, name) }
  monitoring_releases  = { for name, c in local.all_controllers : name => c if var.enable_monitoring && contains(local.monitoring, name) }
  pod_identity_targets = merge(local.controllers, local.monitoring_releases)

  # Image tag of the cluster autoscaler: the one released for the cluster's minor.
  kubernetes_minor             = join(".", slice(split(".", var.kubernetes_version), 0, 2))
  cluster_autoscaler_image_tag = lookup(var.cluster_autoscaler_image_tags, local.kubernetes_minor, null)

  storage_class    = "gp3-encrypted"
  receivers_secret = "alertmanager-receivers"
  receivers_dir    = "/etc/alertmanager/receivers"

  eso_readable_secret_arns = concat(
    [aws_secretsmanager_secret.api_key.arn],
    aws_secretsmanager_secret.alertmanager_receivers[*].arn,
    var.extra_readable_secret_arns,
  )

  # Every alert goes to Slack; with PagerDuty on, critical ones page as well. Watchdog (always
  # firing, by design) is dropped rather than spamming a channel.
  alertmanager_config = {
    global = { resolve_timeout = "5m" }
    route = {
      receiver        = "slack"
      group_by        = ["alertname", "namespace"]
      group_wait      = "30s"
      group_interval  = "5m"
      repeat_interval = "4h"
      routes = concat(
        [{ receiver = "null", matchers = ["alertname = \"Watchdog\""] }],
        var.alert_receivers.pagerduty ? [{ receiver = "pagerduty", matchers = ["severity = \"critical\""], continue = true }] : [],
      )
    }
    receivers = concat(
      [
        { name = "null" },
        { name = "slack", slack_configs = [{
          api_url_file  = "${local.receivers_dir}/slack-webhook-url"
          channel       = var.alert_receivers.slack_channel
          send_resolved = true
          title         = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} (${var.environment})"
          text          = "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.runbook_url }}\n{{ end }}"
        }] },
      ],
      var.alert_receivers.pagerduty ? [{ name = "pagerduty", pagerduty_configs = [{
        routing_key_file = "${local.receivers_dir}/pagerduty-routing-key"
        send_resolved    = true
      }] }] : [],
    )
  }
}

# AWS permissions through EKS Pod Identity: one role per controller, bound to its service account.
module "pod_identity" {
  #checkov:skip=CKV_TF_1:Terraform Registry module, pinned to a major version (registry sources take no commit hash); the CircleCI plan shows any change before apply.
  source   = "terraform-aws-modules/eks-pod-identity/aws"
  version  = "2.8.1"
  for_each = { for name, c in local.pod_identity_targets : name => c if c.service_account != null }

  # Exact names, not prefixes: a name_prefix ("<name>-" + 26 generated characters) may be 38
  # characters at most, and "ratecast-staging-aws-load-balancer-controller-" is 46. The policy
  # names then carry the cluster name, so the three environments of one account do not collide
  # on the module's fixed "AmazonEKS_<Controller>" names. tests/infra/test_iam_names.py checks both.
  name               = "${var.cluster_name}-${each.key}"
  use_name_prefix    = false
  policy_name_prefix = "${var.cluster_name}-"

  attach_aws_lb_controller_policy = each.key == "aws-load-balancer-controller"

  # Read-only: external_secrets_create_permission (v1.0.0's rename of the old
  # ..._secrets_manager_create_permission) defaults to false, so ESO can never create secrets.
  attach_external_secrets_policy        = each.key == "external-secrets"
  external_secrets_secrets_manager_arns = local.eso_readable_secret_arns
  external_secrets_kms_key_arns         = [aws_kms_key.secrets.arn]

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

# The release fields only (the map also carries each controller's service account).
locals {
  release_fields = ["namespace", "repository", "chart", "version", "values"]
}

# The cluster autoscaler's image must exist for the cluster's minor: fail the plan otherwise.
resource "terraform_data" "autoscaler_image_for_this_minor" {
  input = local.cluster_autoscaler_image_tag

  lifecycle {
    precondition {
      condition     = local.cluster_autoscaler_image_tag != null
      error_message = "cluster_autoscaler_image_tags has no tag for Kubernetes ${local.kubernetes_minor}: add the autoscaler release of that minor before upgrading the cluster."
    }
  }
}

module "controllers" {
  source = "./releases"

  releases         = { for name, c in local.controllers : name => { for k in local.release_fields : k => c[k] } }
  create_namespace = true

  # Credentials must exist before the pods start, or they cache "no credentials".
  depends_on = [module.pod_identity, terraform_data.autoscaler_image_for_this_minor]
}

module "monitoring" {
  source = "./releases"

  releases = { for name, c in local.monitoring_releases : name => { for k in local.release_fields : k => c[k] } }
  # The bootstrap chart creates (and labels) the monitoring namespace, the StorageClass of
  # Prometheus' volume and the ExternalSecret of Alertmanager's receivers.
  create_namespace = false

  depends_on = [module.pod_identity, helm_release.bootstrap]
}

# The app and monitoring namespaces (with their labels), the ClusterSecretStore, the
# ExternalSecrets, the encrypted gp3 StorageClass and the deployer RBAC: a local chart, because
# CRD-based objects cannot be planned with kubernetes_manifest before the CRDs exist. Its release
# lives in kube-system, so it can own the namespaces it creates (Helm's create_namespace cannot
# label them).
resource "helm_release" "bootstrap" {
  name      = "ratecast-bootstrap"
  namespace = "kube-system"
  chart     = "${path.module}/charts/ratecast-bootstrap"

  values = [yamlencode({
    region          = data.aws_region.current.region
    secretStoreName = var.secret_store_name
    deployerGroup   = var.deployer_group
    appNamespace    = var.app_namespace
    storageClass    = { name = local.storage_class }
    # The chart puts its Grafana dashboard ConfigMap there.
    dashboardNamespace = var.enable_monitoring ? "monitoring" : ""
    alertmanagerReceivers = {
      enabled   = var.enable_monitoring
      name      = local.receivers_secret
      remoteKey = one(aws_secretsmanager_secret.alertmanager_receivers[*].name)
    }
    externalSecret = {
      enabled   = var.create_external_secret
      name      = var.api_key_secret_name
      secretKey = var.api_key_secret_key
      remoteKey = aws_secretsmanager_secret.api_key.name
    }
  })]

  atomic = true
  wait   = true

  depends_on = [module.controllers]
}
