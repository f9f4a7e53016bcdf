#!/usr/bin/env bash
# Drill 5: the cluster's Redis (Valkey) goes away for 30 s and comes back empty. Asserts: the
# replicas keep serving the last data, flagged stale with the reason the API gives (the shared
# state lost), every replica and the load balancer ready in every readiness sample taken every
# ~0.5 s from Redis stopping to fresh data again; once Redis is back a replica takes the lease
# again, repopulates the shared state and the data is fresh. Needs cluster mode (issue 13).
# Runbook: docs/operations.md#redis-failure.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 5: Redis lost -> replicas serve the last data, flagged stale -> Redis back -> fresh"
needs_cluster "the Redis outage drill"
stale() { rates_json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["stale"] else 1)'; }
fresh() { ! stale; }
has_leader() { [ -n "$(leader)" ]; }
wait_until 30 "fresh data and a leader before the drill" fresh
wait_until 30 "a leader before the drill" has_leader
watch_for "the wall: 'Stale' with the reason (the shared state is unreachable); the page stays up"
watch_for "Grafana 'Data age' climbing on every pod; ratecast_cluster_leader 0 everywhere"

# sample_readiness FILE : until killed, appends "ms,lb,replica 1..3" lines (1 ready, 0 not).
sample_readiness() {
  local n line
  while true; do
    line="$(now_ms),$(lb_ready && echo 1 || echo 0)"
    for n in "${REPLICAS[@]}"; do line+=",$(replica_ready "$n" && echo 1 || echo 0)"; done
    echo "$line" >>"$1"
    sleep 0.5
  done
}
readiness=$(mktemp)
t0=$(now_ms)
redis_stop
sample_readiness "$readiness" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true; rm -f "$readiness"; redis_start' EXIT
happened "Redis stopped; readiness of haproxy and each replica sampled every 0.5 s from now"
wait_until 60 "the API reports stale data" stale
t_stale=$(now_ms)
reason=$(rates_json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("reason") or "")')
happened "stale after $(( (t_stale - t0) / 1000 )) s: ${reason:-no reason given}"
# The reason a viewer reads must name the cause (crates/ratecast-server/src/store.rs, reason()).
[[ $reason == *"lost contact with the cluster's shared state"* ]] \
  || fail "the stale reason does not say the shared state was lost: '${reason}'"
sleep $(( 30 - (t_stale - t0) / 1000 > 0 ? 30 - (t_stale - t0) / 1000 : 0 ))

t_back=$(now_ms)
redis_start
trap 'kill "$sampler" 2>/dev/null || true; rm -f "$readiness"' EXIT
happened "Redis started again (empty)"
wait_until 60 "a replica leads again" has_leader
t_lead=$(now_ms)
wait_until 60 "fresh data again" fresh
t_fresh=$(now_ms)
kill "$sampler"; wait "$sampler" 2>/dev/null || true
read -r samples not_ready < <(awk -F, '{ n++; for (i = 2; i <= NF; i++) if ($i != 1) { bad++; break } } END { print n + 0, bad + 0 }' "$readiness")
[ "$samples" -ge 20 ] || fail "only $samples readiness samples over the outage"
[ "$not_ready" -eq 0 ] || fail "not ready in $not_ready of $samples samples: $(grep -v ',1,1,1,1$' "$readiness" | head -n3 | tr '\n' ' ')"
happened "haproxy and every replica ready in all $samples samples, from Redis stopping to fresh data"
happened "ratecast-$(leader) leads $(( (t_lead - t_back) / 1000 )) s after Redis came back; fresh after $(( (t_fresh - t_back) / 1000 )) s"
json_out redis-outage "$(python3 -c 'import json,sys; a=sys.argv; print(json.dumps({"stale_after_s": int(a[1]), "reason": a[2], "leader_after_s": int(a[3]), "fresh_after_s": int(a[4]), "outage_s": int(a[5]), "readiness_samples": int(a[6]), "readiness_not_ready": int(a[7])}))' \
  "$(( (t_stale - t0) / 1000 ))" "$reason" "$(( (t_lead - t_back) / 1000 ))" "$(( (t_fresh - t_back) / 1000 ))" \
  "$(( (t_back - t0) / 1000 ))" "$samples" "$not_ready")"
