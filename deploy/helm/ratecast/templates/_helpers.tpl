{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "ratecast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or just the release when it already holds the chart name. */}}
{{- define "ratecast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ratecast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels. The component keeps the helm test pod out of the server's selector and NetworkPolicy. */}}
{{- define "ratecast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ratecast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "ratecast.labels" -}}
helm.sh/chart: {{ include "ratecast.chart" . }}
{{ include "ratecast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ratecast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ratecast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ratecast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ratecast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secret holding the API key: chart-managed when apiKey.value is set, otherwise the existing one. */}}
{{- define "ratecast.apiKeySecretName" -}}
{{- if .Values.apiKey.value }}
{{- printf "%s-api-key" (include "ratecast.fullname" .) }}
{{- else }}
{{- .Values.apiKey.existingSecret }}
{{- end }}
{{- end }}

{{/* Seconds a pod keeps serving after it is told to stop: the preStop pause, then the server's own drain. */}}
{{- define "ratecast.drainSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.config.shutdownGraceSeconds }}
{{- end }}

{{/* Pod grace period: the drain plus a 10 s margin, or the set value when it covers the drain. */}}
{{- define "ratecast.terminationGracePeriodSeconds" -}}
{{- $needed := add (include "ratecast.drainSeconds" . | int) 10 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $needed }}
{{- else if lt (int .Values.terminationGracePeriodSeconds) (int (include "ratecast.drainSeconds" .)) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must cover preStopSleepSeconds + config.shutdownGraceSeconds (%s)" (int .Values.terminationGracePeriodSeconds) (include "ratecast.drainSeconds" .)) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Hardened container securityContext, shared by the server and the helm test pod. */}}
{{- define "ratecast.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* PromQL label matcher selecting this release's scrape targets (job is the Service, or ns/PodMonitor). */}}
{{- define "ratecast.promSelector" -}}
{{- if .Values.metrics.podMonitor.enabled -}}
namespace="{{ .Release.Namespace }}", job="{{ .Release.Namespace }}/{{ include "ratecast.fullname" . }}"
{{- else -}}
namespace="{{ .Release.Namespace }}", job="{{ include "ratecast.fullname" . }}"
{{- end }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "ratecast.validate" -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are exclusive: pick one" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable" }}
{{- end }}
{{- if and .Values.apiKey.value .Values.externalSecret.enabled }}
{{- fail "apiKey.value and externalSecret.enabled are exclusive: the ExternalSecret writes apiKey.existingSecret" }}
{{- end }}
{{- if and .Values.externalSecret.enabled (not .Values.apiKey.existingSecret) }}
{{- fail "externalSecret.enabled needs apiKey.existingSecret: the name of the Secret it writes" }}
{{- end }}
{{- if and .Values.ingress.enabled (eq .Values.ingress.controller "alb") (not .Values.ingress.alb.certificateArn) }}
{{- fail "ingress.alb.certificateArn is required with the ALB controller (HTTPS listener)" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.ingress.enabled (eq .Values.ingress.controller "alb") (not .Values.networkPolicy.ingressFrom.cidrs) }}
{{- fail "networkPolicy.ingressFrom.cidrs must hold the VPC CIDR: with ALB target-type ip traffic reaches pods from the ALB's VPC addresses" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.ingress.enabled (eq .Values.ingress.controller "generic") (not .Values.networkPolicy.ingressFrom.namespaces) }}
{{- fail "networkPolicy.ingressFrom.namespaces must name the ingress controller's namespace" }}
{{- end }}
{{- if and .Values.ingress.enabled (eq .Values.ingress.controller "generic") (not .Values.ingress.className) }}
{{- fail "ingress.className is required with ingress.controller generic (the IngressClass of your controller)" }}
{{- end }}
{{- if and .Values.cluster.redis.enabled .Values.networkPolicy.enabled (not .Values.cluster.redis.egressCidrs) }}
{{- fail "cluster.redis.egressCidrs must hold the Redis endpoints' CIDR (the VPC CIDR): the NetworkPolicy allows no other egress" }}
{{- end }}
{{- if lt (float64 .Values.config.crosscheckHoldPercent) (float64 .Values.config.crosscheckWarnPercent) }}
{{- fail "config.crosscheckHoldPercent must not be below config.crosscheckWarnPercent: a unit is reported before it is held" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/*
A number as the app reads it: Helm reads values-file numbers as float64, and `quote` prints
1000000.0 as "1e+06", which the server rejects. Integers print as integers; anything else as is.
*/}}
{{- define "ratecast.str" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end }}

{{/*
IPv4 CIDR arithmetic for the NetworkPolicy: (dict "cidr" C "ip" I) renders "true" when the block
I (a.b.c.d/n) lies inside C. IPv6 blocks are never inside an IPv4 one and vice versa; between two
IPv6 blocks only C = ::/0 is decided (true).
*/}}
{{- define "ratecast.ipv4" -}}
{{- $o := splitList "." . -}}
{{- add (mul (atoi (index $o 0)) 16777216) (mul (atoi (index $o 1)) 65536) (mul (atoi (index $o 2)) 256) (atoi (index $o 3)) -}}
{{- end }}
{{- define "ratecast.cidrContains" -}}
{{- $outer := splitList "/" .cidr -}}
{{- $inner := splitList "/" .ip -}}
{{- $v6 := contains ":" .cidr -}}
{{- if ne $v6 (contains ":" .ip) -}}
false
{{- else if $v6 -}}
{{- eq .cidr "::/0" -}}
{{- else -}}
{{- $bits := atoi (index $outer 1) -}}
{{- $block := 1 -}}
{{- range until (sub 32 $bits | int) }}{{ $block = mul $block 2 }}{{ end -}}
{{- $a := include "ratecast.ipv4" (index $outer 0) | atoi -}}
{{- $b := include "ratecast.ipv4" (index $inner 0) | atoi -}}
{{- and (ge (atoi (index $inner 1)) $bits) (eq (div $a $block) (div $b $block)) -}}
{{- end -}}
{{- end }}
