#!/usr/bin/env bash
# Drill 2: every upstream out. Natively the fake's CoinGecko and Coinbase sides both answer 503
# (the replicas take the production path: last success older
# than --stale-after, upstream down; CoinGecko alone failing is drill 8's failover); in compose the demo
# source is told to fail (SIGUSR1 to every replica: in cluster mode only the leader polls, and
# leadership may move during the drill). Asserts: the data turns stale with its age shown,
# Prometheus fires RatecastDataStale (the chart's rule), and after the source recovers the data
# is fresh again and the alert resolves.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

stale() { rates_json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["stale"] else 1)'; }
fresh() { ! stale; }
max_age() { prom_value 'max(ratecast_data_age_seconds{namespace="demo"})'; }

say "Drill 2: every upstream out (CoinGecko and Coinbase) -> stale banner with the data's age -> recovery"
wait_until 30 "fresh data before the drill" fresh
wait_until 60 "RatecastDataStale inactive before the drill" alert_is RatecastDataStale inactive
watch_for "the wall: the status turns 'Stale' with the data's age counting up"
watch_for "Prometheus $PROM/alerts : RatecastDataStale pending, then firing; Grafana 'Data age'"

# A wall that was open before the outage, as a real one is: its picture once it shows Stale.
# Natively it is the slides' picture: no playwright-core (tests/browser's npm ci) is a failure.
shot=""
if [ "$DEMO_TARGET" = native ]; then
  [ -d "$REPO_ROOT/tests/browser/node_modules/playwright-core" ] \
    || fail "no playwright-core in tests/browser/node_modules (npm ci there): no picture of the stale wall"
  shot_out=$(mktemp)
  node "$DEMO_DIR/wall-shot.mjs" "$LB_HTTP/?wall=1&symbols=usd,eur,gbp,eth,xau&base=usd" \
    "$DEMO_OUT/wall-stale.png" Stale 6000 90000 >"$shot_out" &
  shot=$!
  sleep 4
fi

t0=$(now_ms)
upstream_outage
# Whatever happens below, the drills after this one need a working source.
trap 'upstream_recover' EXIT
happened "the upstreams now fail like an unreachable CoinGecko and Coinbase"
wait_until 60 "the API reports stale data" stale
t_stale=$(now_ms)
rates_json | python3 -c 'import json,sys; b=json.load(sys.stdin); print("   API:", json.dumps({k: b.get(k) for k in ("stale", "upstream", "reason") if k in b}))'
happened "stale after $(( (t_stale - t0) / 1000 )) s"
if [ -n "$shot" ]; then
  wait "$shot" || fail "the open wall never showed Stale"
  wall_status=$(cat "$shot_out")
  rm -f "$shot_out"
  echo "   the open wall: $wall_status"
  python3 -c 'import json,sys; w=json.loads(sys.argv[1]); sys.exit(0 if w["status"].startswith("Stale") and "ago" in w["age"] else 1)' "$wall_status" \
    || fail "the wall does not show Stale with the age of the data"
  happened "the wall shows '$(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print(w["status"] + " · " + w["age"])' "$wall_status")' ($DEMO_OUT/wall-stale.png)"
fi
wait_until 120 "RatecastDataStale fires" alert_is RatecastDataStale firing
t_fire=$(now_ms)
age_at_fire=$(max_age)
happened "RatecastDataStale firing after $(( (t_fire - t0) / 1000 )) s (data age ${age_at_fire%.*} s)"

upstream_recover
trap - EXIT
t_back=$(now_ms)
happened "the upstream answers again; the poller retries on its backoff"
wait_until 120 "fresh data again" fresh
t_fresh=$(now_ms)
happened "fresh again $(( (t_fresh - t_back) / 1000 )) s after the source came back"
wait_until 60 "RatecastDataStale resolves" alert_is RatecastDataStale inactive
t_resolved=$(now_ms)
happened "RatecastDataStale resolved $(( (t_resolved - t_back) / 1000 )) s after the source came back"

json_out outage "$(printf '{"wall": %s, "stale_after_s": %s, "alert_firing_after_s": %s, "data_age_at_firing_s": %s, "fresh_after_recovery_s": %s, "alert_resolved_after_recovery_s": %s, "outage_s": %s}' \
  "${wall_status:-null}" "$(( (t_stale - t0) / 1000 ))" "$(( (t_fire - t0) / 1000 ))" "${age_at_fire:-null}" \
  "$(( (t_fresh - t_back) / 1000 ))" "$(( (t_resolved - t_back) / 1000 ))" "$(( (t_back - t0) / 1000 ))")"
