#!/usr/bin/env bash
# Drill 4: a rolling restart under 1,000 subscribers (`ratecast loadtest --reconnect` through the
# load balancer): each replica in turn gets SIGTERM (readiness 503 at once, WebSockets closed
# with 1001 within the grace period), exits, starts again and turns ready before the next one.
# Asserts 0 missed deltas, every resume a replay, one final seq; records the connections per
# replica over time for the slides' timeline. Needs cluster mode (issue 13): without a
# cluster-wide seq a resume on another replica is a snapshot, not a replay.
# The lead's draft of this test (haproxy + redis-server + 3 replicas + 1,000 subscribers) is
# the model; this drill runs the same steps against either stack.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 4: rolling restart under 1,000 subscribers -> 0 missed deltas"
needs_cluster "the rolling-restart drill"
watch_for "haproxy stats: each replica goes DOWN (503 on /readyz) then UP in turn"
watch_for "Grafana 'WebSocket connections per pod': each replica's clients move to the others"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true' EXIT
timeline=$DEMO_OUT/rolling-restart-timeline.csv
events=$DEMO_OUT/rolling-restart-events.csv
echo "ms,conn_1,conn_2,conn_3,ready_1,ready_2,ready_3,leader" >"$timeline"
echo "ms,event" >"$events"
sample_timeline "$timeline" &
sampler=$!

ratecast_cli loadtest --url '{WS}' --clients 1000 --ramp 500/s --duration 45s --reconnect --json >"$tmp/load.json" &
load=$!
start=$SECONDS
sleep 5
for n in "${REPLICAS[@]}"; do
  echo "$(now_ms),SIGTERM ratecast-$n" >>"$events"
  replica_stop "$n"
  echo "$(now_ms),exited ratecast-$n" >>"$events"
  replica_start "$n"
  wait_until 60 "ratecast-$n ready again" replica_ready "$n"
  echo "$(now_ms),ready ratecast-$n" >>"$events"
  happened "ratecast-$n restarted"
  # haproxy needs two good checks (rise 2, 1 s apart) before it routes to it again.
  sleep 3
done
[ $((SECONDS - start)) -lt 42 ] || fail "the restarts took longer than the load test; lengthen it"
sleep $(( start + 43 - SECONDS ))
echo "$(now_ms),feed frozen" >>"$events"
freeze_feed
wait "$load" || { thaw_feed; fail "the load generator failed"; }
thaw_feed
kill "$sampler" 2>/dev/null || true
figures=$(reconnect_figures "$tmp/load.json")
echo "   load generator: $figures"
assert_nothing_missed "$figures" 900
happened "1,000 subscribers through 3 restarts: 0 missed deltas, one final seq"
json_out rolling-restart "$figures"
