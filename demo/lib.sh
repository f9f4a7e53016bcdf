# shellcheck shell=bash
# Helpers shared by the drills: the same drill runs against the compose stack (a laptop with
# Docker: DEMO_TARGET=compose, the default) or against the native stack that
# demo/stack-native.sh starts from Debian packages (DEMO_TARGET=native: the e2e test stage).
# Source, don't run.
set -euo pipefail

DEMO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$DEMO_DIR/.." && pwd)
DEMO_TARGET=${DEMO_TARGET:-compose}
# Where each drill writes its figures (JSON) for the slides and the runbook.
DEMO_OUT=${DEMO_OUT:-$REPO_ROOT/target/demo}
mkdir -p "$DEMO_OUT"
REPLICAS=(1 2 3)

if [ "$DEMO_TARGET" = native ]; then
  # Set by stack-native.sh; see its header for the layout of the run directory.
  : "${DEMO_RUN:?DEMO_RUN: the run directory of the native stack (demo/stack-native.sh up)}"
  # shellcheck source=/dev/null
  source "$DEMO_RUN/env"
  LB_HTTP=http://127.0.0.1:$LB_PORT
  LB_WS=ws://127.0.0.1:$LB_PORT/ws
  PROM=http://127.0.0.1:$PROM_PORT
else
  LB_HTTP=http://127.0.0.1:8080
  LB_WS=ws://127.0.0.1:8080/ws
  PROM=http://127.0.0.1:9090
fi

# dc ARGS... : docker compose on this repo's compose.yaml, from any directory ("${DC[@]}" where
# a command such as timeout must run it, which cannot run a shell function).
DC=(docker compose --project-directory "$REPO_ROOT" -f "$REPO_ROOT/compose.yaml")
dc() { "${DC[@]}" "$@"; }

# ---- what the audience reads -------------------------------------------------------------
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
watch_for() { printf '   WATCH: %s\n' "$*"; }
happened() { printf '   RESULT: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }

# ---- time --------------------------------------------------------------------------------
now_ms() { date +%s%3N; }

# wait_until SECONDS DESCRIPTION CMD... : polls CMD every 0.2 s; fails the drill on timeout.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -ge "$deadline" ] && fail "not within ${limit}s: $what"
    sleep 0.2
  done
}

# ---- the service through the load balancer -----------------------------------------------
rates_json() { curl -fsS --max-time 3 "$LB_HTTP/api/v1/rates"; }
lb_ready() { curl -fsS --max-time 2 -o /dev/null "$LB_HTTP/readyz"; }

# ---- one replica ---------------------------------------------------------------------------
# replica_metric N NAME : the value of metric NAME of replica N, its first series if labelled
# (empty when unknown).
# Natively from the replica's metrics port; in compose from Prometheus (the metrics ports are
# not published to the host, on purpose; replica 1's is, for one drill: replica_metrics_url).
replica_metric() {
  local n=$1 name=$2
  if [ "$DEMO_TARGET" = native ]; then
    local port_var="METRICS_PORT_$n"
    curl -fsS --max-time 2 "http://127.0.0.1:${!port_var}/metrics" 2>/dev/null \
      | awk -v m="$name" '$1 == m || index($1, m "{") == 1 { print $2; exit }' || true
  else
    prom_value "$name{pod=\"ratecast-$n\"}"
  fi
}

# replica_metrics_url N : replica N's /metrics as this host reaches it, read directly (no
# scrape interval in between): natively its metrics port; in compose only replica 1's is
# published (on loopback), for the slow-client drill.
replica_metrics_url() {
  if [ "$DEMO_TARGET" = native ]; then
    local port_var="METRICS_PORT_$1"
    echo "http://127.0.0.1:${!port_var}/metrics"
  else
    echo "http://127.0.0.1:919$1/metrics"
  fi
}

replica_ready() {
  if [ "$DEMO_TARGET" = native ]; then
    local port_var="PORT_$1"
    curl -fs --max-time 2 -o /dev/null "http://127.0.0.1:${!port_var}/readyz"
  else
    [ "$(dc ps --format '{{.Health}}' "ratecast-$1" 2>/dev/null)" = healthy ]
  fi
}

# replica_signal N SIGNAL : e.g. USR1 (the demo outage toggle), TERM (drain), KILL.
replica_signal() {
  local n=$1 sig=$2
  if [ "$DEMO_TARGET" = native ]; then
    kill "-$sig" "$(cat "$DEMO_RUN/ratecast-$n.pid")"
  else
    dc kill -s "SIG$sig" "ratecast-$n" >/dev/null
  fi
}

replica_running() {
  if [ "$DEMO_TARGET" = native ]; then
    kill -0 "$(cat "$DEMO_RUN/ratecast-$1.pid")" 2>/dev/null
  else
    [ "$(dc ps --format '{{.State}}' "ratecast-$1" 2>/dev/null)" = running ]
  fi
}

replica_start() {
  if [ "$DEMO_TARGET" = native ]; then
    bash "$DEMO_DIR/stack-native.sh" start-replica "$1"
  else
    dc up -d --no-deps "ratecast-$1" >/dev/null
  fi
}

# replica_stop N : SIGTERM and wait for the exit (the replica drains its clients with 1001).
# In compose through `stop`, so that the restart policy does not bring it back by itself.
replica_stop() {
  if [ "$DEMO_TARGET" = native ]; then
    replica_signal "$1" TERM
  else
    dc stop -t 15 "ratecast-$1" >/dev/null
  fi
  wait_until 30 "ratecast-$1 exits after SIGTERM" not replica_running "$1"
}

not() { ! "$@"; }

# redis_stop / redis_start : the cluster's shared state goes away and comes back (empty: nothing
# is persisted, as in compose.yaml).
redis_stop() {
  if [ "$DEMO_TARGET" = native ]; then
    kill "$(cat "$DEMO_RUN/redis.pid")"
  else
    dc stop valkey >/dev/null
  fi
}
redis_start() {
  if [ "$DEMO_TARGET" = native ]; then
    bash "$DEMO_DIR/stack-native.sh" start-redis
  else
    dc start valkey >/dev/null
  fi
}

# ---- Prometheus --------------------------------------------------------------------------
# prom_value QUERY : the first sample's value of an instant query (empty when none).
prom_value() {
  curl -fsS --max-time 3 -G "$PROM/api/v1/query" --data-urlencode "query=$1" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' \
    2>/dev/null || true
}

# alert_state NAME : firing, pending or inactive, from Prometheus' own view of its rules.
alert_state() {
  curl -fsS --max-time 3 "$PROM/api/v1/alerts" 2>/dev/null | python3 -c '
import json, sys
states = [a["state"] for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"]["alertname"] == sys.argv[1]]
print("firing" if "firing" in states else "pending" if "pending" in states else "inactive")
' "$1" 2>/dev/null || echo unknown
}
alert_is() { [ "$(alert_state "$1")" = "$2" ]; }

# ---- clients -----------------------------------------------------------------------------
# replica_ws N : replica N's stream straight from this host, bypassing the load balancer.
replica_ws() {
  if [ "$DEMO_TARGET" = native ]; then
    local port_var="PORT_$1"
    echo "ws://127.0.0.1:${!port_var}/ws"
  else
    echo "ws://127.0.0.1:808$1/ws"
  fi
}

# ratecast_cli ARGS... : the CLI (watch, loadtest) against the stack. In ARGS, {WS} stands for
# the load balancer's stream and {WS1} for replica 1's, as seen from where the CLI runs.
ratecast_cli() {
  local args=() a
  if [ "$DEMO_TARGET" = native ]; then
    for a in "$@"; do a=${a//\{WS\}/$LB_WS}; args+=("${a//\{WS1\}/$(replica_ws 1)}"); done
    ${CLI_TIMEOUT:+timeout "$CLI_TIMEOUT"} "$RATECAST_BIN" "${args[@]}"
  else
    for a in "$@"; do a=${a//\{WS\}/ws://haproxy:8080/ws}; args+=("${a//\{WS1\}/ws://ratecast-1:8080/ws}"); done
    ${CLI_TIMEOUT:+timeout "$CLI_TIMEOUT"} "${DC[@]}" run --rm -T cli "${args[@]}"
  fi
}

# cluster_mode : whether the replicas run cluster mode (issue 13): the leader gauge exists.
cluster_mode() {
  local n
  for n in "${REPLICAS[@]}"; do
    [ -n "$(replica_metric "$n" ratecast_cluster_leader)" ] && return 0
  done
  return 1
}

# leader : the replica number whose ratecast_cluster_leader is 1 (empty when none).
leader() {
  local n
  for n in "${REPLICAS[@]}"; do
    [ "$(replica_metric "$n" ratecast_cluster_leader)" = 1 ] && { echo "$n"; return; }
  done
}

# json_out NAME JSON : writes the drill's figures to $DEMO_OUT/NAME.json, stamped with the run
# they came from ($DEMO_OUT/run.json: commit, machine, load, build; written by demo/run.sh).
json_out() {
  python3 - "$DEMO_OUT" "$1" "$2" <<'PY'
import json, os, sys
out, name, figures = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
run = os.path.join(out, "run.json")
figures["run"] = json.load(open(run)) if os.path.exists(run) else None
with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump(figures, f, indent=2)
PY
}

# ---- pictures for the slides (where Chromium and tmux are installed) ---------------------
have_chromium() { command -v chromium >/dev/null; }

# screenshot FILE URL [WIDTHxHEIGHT] : headless Chromium's picture of a page after it ran ~5 s.
screenshot() {
  local size=${3:-1920x1080}
  # --no-sandbox: the e2e stage runs as root, where Chromium's sandbox refuses to start.
  timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="${size/x/,}" --virtual-time-budget=5000 --screenshot="$1.tmp.png" "$2" \
    >/dev/null 2>&1 || true
  [ -s "$1.tmp.png" ] && mv "$1.tmp.png" "$1"
}

# terminal_picture FILE TEXTFILE : a captured terminal screen rendered as a dark PNG.
terminal_picture() {
  local html
  html=$(mktemp --suffix=.html)
  python3 - "$2" >"$html" <<'PY'
import html, sys
text = open(sys.argv[1]).read().rstrip()
print('<html><body style="margin:0;background:#111;color:#ddd">'
      '<pre style="font:15px/1.25 DejaVu Sans Mono,monospace;padding:16px;margin:0">'
      + html.escape(text) + '</pre></body></html>')
PY
  screenshot "$1" "file://$html" 1100x700
  rm -f "$html"
}

# ---- drills under load (leader kill, rolling restart) ------------------------------------
# sample_timeline FILE : until killed, appends "ms,connections 1..3,ready 1..3,leader" lines.
sample_timeline() {
  local n line conns ready lead
  while true; do
    line=$(now_ms) conns="" ready="" lead=""
    for n in "${REPLICAS[@]}"; do
      conns+=",$(replica_metric "$n" ratecast_ws_connections)"
      ready+=",$(replica_ready "$n" && echo 1 || echo 0)"
      [ "$(replica_metric "$n" ratecast_cluster_leader)" = 1 ] && lead=$n
    done
    echo "$line$conns$ready,$lead" >>"$1"
    sleep 0.3
  done
}

# freeze_feed / thaw_feed : stop and restart new deltas, so that every subscriber can settle on
# one final seq before the load generator stops. Natively the fake CoinGecko keeps answering the
# same rates (fresh, no change); in compose the demo source fails on every replica (SIGUSR1).
freeze_feed() {
  if [ "$DEMO_TARGET" = native ]; then fake_upstream freeze; else toggle_demo_source; fi
}
thaw_feed() {
  if [ "$DEMO_TARGET" = native ]; then fake_upstream thaw; else toggle_demo_source; fi
}

# ---- the upstream ----------------------------------------------------------------------------
# fake_upstream outage|recover|freeze|thaw : the native stack's fake CoinGecko (fake-coingecko.py),
# which also serves the Coinbase endpoint the replicas poll as their fallback (--coinbase-url),
# from the same moving rates (so the cross-check finds the two in agreement).
fake_upstream() { curl -fsS --max-time 3 -X POST -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/fake/$1"; }
# SIGUSR1 toggles the demo source's outage on every running replica (compose: --demo).
toggle_demo_source() { local n; for n in "${REPLICAS[@]}"; do replica_running "$n" && replica_signal "$n" USR1; done; }
# upstream_outage / upstream_recover : every upstream failing (natively CoinGecko and its
# Coinbase fallback both answer 503), then answering again.
upstream_outage() {
  if [ "$DEMO_TARGET" = native ]; then fake_upstream outage; fake_upstream coinbase/outage; else toggle_demo_source; fi
}
upstream_recover() {
  if [ "$DEMO_TARGET" = native ]; then fake_upstream recover; fake_upstream coinbase/recover; else toggle_demo_source; fi
}
# coingecko_outage / coingecko_recover : only CoinGecko fails (503); the fallback still answers.
# Native stack only (the failover drill).
coingecko_outage() { fake_upstream outage; }
coingecko_recover() { fake_upstream recover; }

# ---- drills that cannot run here -------------------------------------------------------------
# The exit status of a drill that did not run, and only that: no tool a drill calls exits with
# it (curl's codes stop near 100, bash's own start at 126), so a failing command is never
# mistaken for a skip. demo/run.sh accepts it only for drills in DEMO_MAY_SKIP.
NOT_RUN=112

# not_run REASON : records why this drill did not run ($DEMO_OUT/not-run/<drill>) and exits NOT_RUN.
not_run() {
  local drill
  drill=$(basename "$0" .sh); drill=${drill#[0-9]-}
  mkdir -p "$DEMO_OUT/not-run"
  printf '%s\n' "$1" >"$DEMO_OUT/not-run/$drill"
  happened "NOT RUN: $1; not run, not passed"
  exit "$NOT_RUN"
}

# needs_cluster DRILL : not run when the stack runs without cluster mode (a binary without it).
needs_cluster() {
  if ! cluster_mode; then
    # A binary with cluster mode whose replicas show no leader gauge is a failure, not a skip.
    if [ "$DEMO_TARGET" = native ] && [ "${CLUSTER:-0}" = 1 ]; then
      fail "the replicas run with --redis-url but expose no ratecast_cluster_leader"
    fi
    not_run "$1 needs cluster mode: the replicas expose no ratecast_cluster_leader"
  fi
}

# reconnect_figures FILE : the load generator's --json summary, cut to what these drills assert.
reconnect_figures() {
  python3 - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
keys = ("clients", "connected", "reconnects", "reconnect_snapshots", "missed_on_reconnect",
        "reconnect_failures", "missing_seqs", "out_of_order", "resyncs", "epoch_changes", "checksum_mismatches",
        "final_seq_min", "final_seq_max", "deltas", "latency")
print(json.dumps({k: s.get(k) for k in keys}))
PY
}

# assert_nothing_missed JSON MIN_RECONNECTS : what "no client missed a delta" means here.
assert_nothing_missed() {
  python3 - "$1" "$2" <<'PY' || fail "a client missed something: $1"
import json, sys
f, least = json.loads(sys.argv[1]), int(sys.argv[2])
problems = [k for k, ok in (
    ("every subscriber connected", f["connected"] == f["clients"]),
    (f"at least {least} reconnects", f["reconnects"] >= least),
    ("0 missed on reconnect", f["missed_on_reconnect"] == 0),
    ("every resume replayed (no snapshot)", f["reconnect_snapshots"] == 0),
    ("0 missing seqs", f["missing_seqs"] == 0),
    # A snapshot on a live connection skips deltas too: none is explained by these drills.
    ("0 resyncs", f["resyncs"] == 0),
    ("0 epoch changes", f["epoch_changes"] == 0),
    ("0 checksum mismatches (every table the server's)", f["checksum_mismatches"] == 0),
    ("0 out of order", f["out_of_order"] == 0),
    ("one final seq", f["final_seq_min"] is not None and f["final_seq_min"] == f["final_seq_max"]),
) if not ok]
if problems:
    print("   not met:", ", ".join(problems))
    sys.exit(1)
PY
}
