#!/usr/bin/env bash
# Drill 5: the cluster's Redis (Valkey) goes away for 30 s and comes back empty. Asserts: the
# replicas keep serving (ready, connections kept) the last data, flagged stale with the reason;
# once Redis is back a replica takes the lease again, repopulates the shared state and the
# data is fresh. Needs cluster mode (issue 13). Runbook: docs/operations.md#redis-failure.
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

t0=$(now_ms)
redis_stop
trap 'redis_start' EXIT
happened "Redis stopped"
wait_until 60 "the API reports stale data" stale
t_stale=$(now_ms)
reason=$(rates_json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("reason") or "")')
happened "stale after $(( (t_stale - t0) / 1000 )) s: ${reason:-no reason given}"
lb_ready || fail "the load balancer has no ready replica while Redis is down"
happened "still served: /readyz through the load balancer answers 200"
sleep $(( 30 - (t_stale - t0) / 1000 > 0 ? 30 - (t_stale - t0) / 1000 : 0 ))

t_back=$(now_ms)
redis_start
trap - EXIT
happened "Redis started again (empty)"
wait_until 60 "a replica leads again" has_leader
t_lead=$(now_ms)
wait_until 60 "fresh data again" fresh
t_fresh=$(now_ms)
happened "ratecast-$(leader) leads $(( (t_lead - t_back) / 1000 )) s after Redis came back; fresh after $(( (t_fresh - t_back) / 1000 )) s"
json_out redis-outage "$(python3 -c 'import json,sys; print(json.dumps({"stale_after_s": int(sys.argv[1]), "reason": sys.argv[2], "leader_after_s": int(sys.argv[3]), "fresh_after_s": int(sys.argv[4])}))' \
  "$(( (t_stale - t0) / 1000 ))" "$reason" "$(( (t_lead - t_back) / 1000 ))" "$(( (t_fresh - t_back) / 1000 ))")"
