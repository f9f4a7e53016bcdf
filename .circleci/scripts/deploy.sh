#!/usr/bin/env bash
# Deploys the chart version and image digest published by this pipeline to one environment:
# logs in to ECR (cosign reads the registry credentials from the Docker config file, helm from
# its own), verifies the image signature (signed = passed trivy), helm upgrade --install --atomic
# --wait with that environment's values file, then the chart's helm test. The deploy role may
# read the image repository (the .sig lives there) and both chart repositories:
# tests/infra/test_deploy_access.py holds this script and the role's policy together.
# Usage: deploy.sh ENV   (dev | staging | prod)
# Env: EKS_CLUSTER_NAME, AWS_REGION, ECR_REGISTRY, COSIGN_PUBLIC_KEY (PEM),
#      INGRESS_CERTIFICATE_ARN (the chart refuses an ALB ingress without one); WORKSPACE holding
#      image.env and chart.env (CHART_VERSION, CHART_REPOSITORY).
set -euo pipefail
env=${1:?usage: deploy.sh ENV}
: "${EKS_CLUSTER_NAME:?}" "${AWS_REGION:?}" "${ECR_REGISTRY:?}" "${COSIGN_PUBLIC_KEY:?}" "${INGRESS_CERTIFICATE_ARN:?}"
workspace=${WORKSPACE:-/tmp/workspace}
values="deploy/helm/ratecast/values-$env.yaml"
namespace=ratecast
# shellcheck disable=SC1091
source "$workspace/image.env"
# shellcheck disable=SC1091
source "$workspace/chart.env"
: "${IMAGE_DIGEST:?}" "${CHART_VERSION:?}"
# Releases in charts/ratecast, main-branch pre-releases in charts/main/ratecast.
chart_repository=${CHART_REPOSITORY:-charts/ratecast}

# One ECR token for both clients, before anything reads the registry.
token=$(aws ecr get-login-password --region "$AWS_REGION")
printf '%s' "$token" | cosign login "$ECR_REGISTRY" --username AWS --password-stdin
printf '%s' "$token" | helm registry login --username AWS --password-stdin "$ECR_REGISTRY"

cosign verify --key env://COSIGN_PUBLIC_KEY "$ECR_REGISTRY/ratecast@$IMAGE_DIGEST" >/dev/null
echo "signature ok: $ECR_REGISTRY/ratecast@$IMAGE_DIGEST"

aws eks update-kubeconfig --name "$EKS_CLUSTER_NAME" --region "$AWS_REGION"

args=(--set "image.repository=$ECR_REGISTRY/ratecast" --set "image.digest=$IMAGE_DIGEST"
  --set "ingress.alb.certificateArn=$INGRESS_CERTIFICATE_ARN")

helm upgrade --install ratecast "oci://$ECR_REGISTRY/$chart_repository" --version "$CHART_VERSION" \
  --namespace "$namespace" --values "$values" "${args[@]}" \
  --atomic --wait --timeout 10m --history-max 20
helm test ratecast --namespace "$namespace" --logs --timeout 5m
echo "deployed ratecast $CHART_VERSION ($IMAGE_DIGEST) to $env"
