#!/usr/bin/env bash
# Stage e2e: the demo stack and its failure drills, natively (no image pulls): 3 replicas polling
# a fake CoinGecko (and its Coinbase endpoint as their fallback, for the failover drill) in
# cluster mode on redis-server behind haproxy, Prometheus
# evaluating the Helm chart's alert rules; then demo/run.sh runs every drill, asserting each
# outcome, and writes the figures and pictures the slides use to docs/presentation/data/.
# Also checks what cannot run here: compose.yaml (docker-compose config), the Grafana
# provisioning (statically, and each dashboard query against the live Prometheus).
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT"
stage_start=$SECONDS

ensure_apt redis-server haproxy chromium tmux curl shellcheck docker-compose fonts-dejavu-core
ensure_pip pyyaml

# Helm (to render the chart's rules) and prometheus, taken out of Debian's package rather than
# installed (installing it would start a server), from the helm stage's installer.
tool_env=$(bash .ci/helm/install-tools.sh)
eval "export ${tool_env//$'\n'/ }"
PROMETHEUS_BIN=$PROMETHEUS
export PROMETHEUS_BIN
"$PROMETHEUS_BIN" --version 2>&1 | head -n1

log "shellcheck demo/ and the compose helpers"
shellcheck -x demo/*.sh demo/drills/*.sh deploy/compose/*.sh .ci/stages/e2e.sh .ci/stages/slides.sh

log "compose.yaml: docker-compose config (no images are pulled here)"
docker-compose -f compose.yaml config -q
"$VENV/bin/python" - <<'PY'
import yaml
c = yaml.safe_load(open("compose.yaml"))
s = c["services"]
# Third-party images pinned by version: a tag with a digit, never latest.
for name, svc in s.items():
    image = svc.get("image", "")
    if not image.startswith("ratecast:"):
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert any(ch.isdigit() for ch in tag) and "latest" not in tag, f"{name}: {image} is not pinned"
replicas = [n for n in s if n.startswith("ratecast-")]
assert len(replicas) == 3, replicas
for n in replicas:
    env = s[n]["environment"]
    assert env["RATECAST_DEMO"] == "true" and env["RATECAST_REDIS_URL"].startswith("redis://valkey:"), n
    assert s[n]["read_only"] and s[n]["cap_drop"] == ["ALL"], n
assert "8080:8080" in s["haproxy"]["ports"]
print("compose.yaml: 3 hardened demo replicas in cluster mode, third-party images pinned:",
      ", ".join(sorted(svc["image"] for svc in s.values() if not svc["image"].startswith("ratecast:"))))
PY

log "the rules Prometheus loads are the chart's (deploy/compose/render-rules.sh --check)"
bash deploy/compose/render-rules.sh --check

log "npm ci (tests/browser: playwright-core drives Debian's Chromium for the wall's pictures)"
command -v npm >/dev/null || ensure_apt nodejs npm
(cd tests/browser && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)

log "cargo build --bin ratecast"
cargo build --quiet --bin ratecast
# Where cargo put it: CARGO_TARGET_DIR when set (a worktree sharing a build), else target/.
export RATECAST_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/ratecast" RATECAST_PROFILE=debug

log "native stack: redis-server, 3 replicas, haproxy, prometheus"
DEMO_RUN=$(mktemp -d)
export DEMO_RUN DEMO_TARGET=native DEMO_OUT="$REPO_ROOT/docs/presentation/data"
cleanup() {
  bash demo/stack-native.sh down
  # Kept for a failed run's post-mortem only.
  [ "${keep_logs:-0}" = 1 ] || rm -rf "$DEMO_RUN"
}
trap cleanup EXIT
keep_logs=1
bash demo/stack-native.sh up

log "Grafana provisioning (Grafana is not packaged for Debian: checked statically, and every dashboard query run against this Prometheus)"
# shellcheck source=/dev/null
source "$DEMO_RUN/env"
"$VENV/bin/python" deploy/compose/check-grafana.py "http://127.0.0.1:$PROM_PORT"

log "drills"
# Everything in data/ is this run's output (figures, pictures, captures): none may survive from
# an older run, or a drill that stopped writing its picture would go unnoticed.
find "$DEMO_OUT" -mindepth 1 -delete
# Every drill runs here (the binary has cluster mode): none may report "not run".
export DEMO_MAY_SKIP=""
if bash demo/run.sh; then
  keep_logs=0
else
  echo "drill logs kept in $DEMO_RUN" >&2
  tail -n 20 "$DEMO_RUN"/*.log >&2 || true
  exit 1
fi
echo "e2e stage took $((SECONDS - stage_start))s"
