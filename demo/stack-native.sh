#!/usr/bin/env bash
# The demo stack without Docker, from Debian packages, on loopback only: what the e2e test stage
# runs the drills against (DEMO_TARGET=native). The same shape as compose.yaml: 3 replicas (in
# cluster mode on redis-server when the binary has it, issue 13), haproxy in front rendered from
# deploy/compose/haproxy.cfg, Prometheus rendered from deploy/compose/prometheus/prometheus.yml
# with the chart's rules. No Grafana (not packaged). Unlike compose.yaml the replicas poll a fake
# CoinGecko (fake-coingecko.py, the recorded payload moving; its Coinbase endpoint is their
# fallback, --coinbase-url) instead of running --demo, so the drills' staleness, failover and
# alert timings are those of the production code path.
#
# Usage: DEMO_RUN=DIR RATECAST_BIN=PATH demo/stack-native.sh up|down|start-replica N|start-redis
# DIR gets env (the ports, sourced by demo/lib.sh), *.pid, *.log and the rendered configs.
# PROMETHEUS_BIN (default: prometheus) and HAPROXY_BIN (default: haproxy) may be set.
set -euo pipefail

DEMO_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(cd "$DEMO_DIR/.." && pwd)
: "${DEMO_RUN:?set DEMO_RUN to a directory for the files of the stack}"
mkdir -p "$DEMO_RUN"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# spawn NAME CMD... : starts CMD in the background, logs to NAME.log, pid in NAME.pid.
spawn() {
  local name=$1; shift
  "$@" >"$DEMO_RUN/$name.log" 2>&1 &
  echo $! >"$DEMO_RUN/$name.pid"
}

wait_http() {
  local url=$1 limit=${2:-30} deadline=$((SECONDS + ${2:-30}))
  until curl -fs --max-time 2 -o /dev/null "$url"; do
    [ "$SECONDS" -ge "$deadline" ] && { echo "not up within ${limit}s: $url" >&2; return 1; }
    sleep 0.2
  done
}

start_redis() {
  # shellcheck source=/dev/null
  source "$DEMO_RUN/env"
  spawn redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
}

start_upstream() {
  # shellcheck source=/dev/null
  source "$DEMO_RUN/env"
  spawn upstream python3 "$DEMO_DIR/fake-coingecko.py" "$UPSTREAM_PORT" \
    "$REPO_ROOT/tests/fixtures/coingecko-exchange-rates-2022.json"
  wait_http "http://127.0.0.1:$UPSTREAM_PORT/api/v3/exchange_rates"
}

start_replica() {
  local n=$1
  # shellcheck source=/dev/null
  source "$DEMO_RUN/env"
  local port_var="PORT_$n" metrics_var="METRICS_PORT_$n"
  local redis=()
  # shellcheck disable=SC2153 # CLUSTER comes from the env file sourced above
  # A 5 s lease (default 10 s) as in compose.yaml, so a takeover shows within the drill.
  [ "$CLUSTER" = 1 ] && redis=(--redis-url "redis://127.0.0.1:$REDIS_PORT" --cluster-lease-ttl 5s)
  # The compose stack's settings (compose.yaml), plus the caps lifted for 1,000 loopback
  # subscribers.
  spawn "ratecast-$n" env RUST_LOG=info RATECAST_LOG_FORMAT=json "$RATECAST_BIN" serve \
    --upstream-url "http://127.0.0.1:$UPSTREAM_PORT" --coinbase-url "http://127.0.0.1:$UPSTREAM_PORT" \
    --listen "127.0.0.1:${!port_var}" --metrics-listen "127.0.0.1:${!metrics_var}" \
    --poll-interval 1s --stale-after 10s --max-backoff 10s --shutdown-grace 10s --write-timeout 5s \
    --socket-send-buffer 8192 \
    --trusted-proxy 127.0.0.1/32 --max-connections-per-ip 100000 --connection-rate-per-second 0 \
    "${redis[@]}"
  wait_http "http://127.0.0.1:${!port_var}/readyz"
}

up() {
  : "${RATECAST_BIN:?set RATECAST_BIN to the ratecast binary}"
  local cluster=0
  "$RATECAST_BIN" serve --help | grep -q -- '--redis-url' && cluster=1
  {
    echo "RATECAST_BIN=$RATECAST_BIN"
    echo "CLUSTER=$cluster"
    for n in 1 2 3; do echo "PORT_$n=$(free_port)"; echo "METRICS_PORT_$n=$(free_port)"; done
    echo "LB_PORT=$(free_port)"; echo "STATS_PORT=$(free_port)"
    echo "PROM_PORT=$(free_port)"; echo "REDIS_PORT=$(free_port)"; echo "UPSTREAM_PORT=$(free_port)"
  } >"$DEMO_RUN/env"
  # shellcheck source=/dev/null
  source "$DEMO_RUN/env"

  start_upstream
  [ "$cluster" = 1 ] && start_redis
  for n in 1 2 3; do start_replica "$n"; done

  # haproxy: the compose config with loopback addresses instead of Docker's DNS.
  sed -e "s/^    bind :8080/    bind 127.0.0.1:$LB_PORT/" \
      -e "s/^    bind :8404/    bind 127.0.0.1:$STATS_PORT/" \
      -e "s/ resolvers docker init-addr last,libc,none//" \
      -e "s/^    server ratecast-1 ratecast-1:8080/    server ratecast-1 127.0.0.1:$PORT_1/" \
      -e "s/^    server ratecast-2 ratecast-2:8080/    server ratecast-2 127.0.0.1:$PORT_2/" \
      -e "s/^    server ratecast-3 ratecast-3:8080/    server ratecast-3 127.0.0.1:$PORT_3/" \
      -e '/^resolvers docker/,$d' -e '/^# Docker.s embedded DNS/d' \
      "$REPO_ROOT/deploy/compose/haproxy.cfg" >"$DEMO_RUN/haproxy.cfg"
  "${HAPROXY_BIN:-haproxy}" -c -q -f "$DEMO_RUN/haproxy.cfg"
  spawn haproxy "${HAPROXY_BIN:-haproxy}" -db -f "$DEMO_RUN/haproxy.cfg"
  wait_http "http://127.0.0.1:$LB_PORT/readyz"

  # Prometheus: the compose config with loopback targets, a 1 s scrape and evaluation so the
  # drills see alerts move within seconds, and the rules file rendered from the chart.
  cp "$REPO_ROOT/deploy/compose/prometheus/alerts.yaml" "$DEMO_RUN/alerts.yaml"
  sed -e "s/ratecast-1:9090/127.0.0.1:$METRICS_PORT_1/" \
      -e "s/ratecast-2:9090/127.0.0.1:$METRICS_PORT_2/" \
      -e "s/ratecast-3:9090/127.0.0.1:$METRICS_PORT_3/" \
      -e "s|/etc/prometheus/alerts.yaml|$DEMO_RUN/alerts.yaml|" \
      -e "s/_interval: 5s/_interval: 1s/" \
      "$REPO_ROOT/deploy/compose/prometheus/prometheus.yml" >"$DEMO_RUN/prometheus.yml"
  spawn prometheus "${PROMETHEUS_BIN:-prometheus}" --config.file="$DEMO_RUN/prometheus.yml" \
    --storage.tsdb.path="$DEMO_RUN/tsdb" --web.listen-address="127.0.0.1:$PROM_PORT"
  wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 60

  echo "native stack up in $DEMO_RUN: wall http://127.0.0.1:$LB_PORT/?wall=1," \
    "Prometheus http://127.0.0.1:$PROM_PORT, haproxy stats http://127.0.0.1:$STATS_PORT/," \
    "cluster mode: $([ "$cluster" = 1 ] && echo on || echo 'off (this binary has no --redis-url)')"
}

down() {
  local pidfile pid
  for pidfile in "$DEMO_RUN"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 1
  for pidfile in "$DEMO_RUN"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  start-replica) start_replica "${2:?replica number}" ;;
  start-redis) start_redis ;;
  *) echo "usage: $0 up|down|start-replica N|start-redis" >&2; exit 2 ;;
esac
