#!/usr/bin/env bash
# Packages deploy/helm/ratecast and pushes it to ECR as an OCI artifact.
# Version: X.Y.Z for a release tag vX.Y.Z, pushed to charts/ratecast; else <Chart.yaml
# version>-g<first 12 of the SHA> (a semver pre-release unique per commit, so the immutable tag is
# never pushed twice), pushed to charts/main/ratecast. Apart because ECR's lifecycle patterns have
# only `*`: a release pattern `*.*.*` also matches X.Y.Z-g<sha>, and main's charts would push
# releases out of the kept count.
# Env: ECR_REGISTRY, CIRCLE_SHA1, CIRCLE_TAG; WORKSPACE (chart.env for the deploy jobs).
set -euo pipefail
: "${ECR_REGISTRY:?}" "${CIRCLE_SHA1:?}"
chart_dir=deploy/helm/ratecast
workspace=${WORKSPACE:-/tmp/workspace}
mkdir -p "$workspace" /tmp/chart

if [[ "${CIRCLE_TAG:-}" =~ ^v([0-9]+\.[0-9]+\.[0-9]+)$ ]]; then
  version=${BASH_REMATCH[1]}
  app_version=$version
  namespace=charts
else
  version="$(sed -n 's/^version: *//p' "$chart_dir/Chart.yaml" | head -n1)-g${CIRCLE_SHA1:0:12}"
  app_version=$CIRCLE_SHA1
  namespace=charts/main
fi
# helm push appends the chart's name to the OCI namespace.
repository=$namespace/ratecast

if aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$version" >/dev/null 2>&1; then
  echo "chart ratecast $version already in ECR"
else
  helm lint "$chart_dir"
  helm package "$chart_dir" --version "$version" --app-version "$app_version" --destination /tmp/chart
  aws ecr get-login-password | helm registry login --username AWS --password-stdin "$ECR_REGISTRY"
  helm push "/tmp/chart/ratecast-$version.tgz" "oci://$ECR_REGISTRY/$namespace"
fi
printf 'CHART_VERSION=%s\nCHART_REPOSITORY=%s\n' "$version" "$repository" >"$workspace/chart.env"
