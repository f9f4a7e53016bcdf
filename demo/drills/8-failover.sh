#!/usr/bin/env bash
# Drill 8: CoinGecko down, the wall stays live via Coinbase (issue 22). The replicas poll the fake
# CoinGecko and, with --coinbase-url, the fake's Coinbase side; only CoinGecko's side fails (503).
# Under 200 subscribers through the load balancer, asserts: the leader fails over (the REST body's
# upstream.failover.via is "coinbase", the units Coinbase carries say "source": "coinbase", the
# others are flagged stale on their own), the data is NOT stale and every replica stays ready for
# longer than --stale-after, an open wall says so, RatecastUpstreamFailover fires; CoinGecko back
# -> the failover is cleared (no unit tagged) and the alert resolves; no subscriber missed a delta
# (a switch of source is a delta, never a snapshot). Native stack only: compose's replicas run the
# demo source, with nothing to fail over to.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 8: CoinGecko down -> the wall stays live via Coinbase -> CoinGecko back"
[ "$DEMO_TARGET" = native ] \
  || not_run "the failover drill needs the native stack's fake upstreams: compose's replicas run the demo source, one source"
"$RATECAST_BIN" serve --help | grep -q -- '--coinbase-url' \
  || not_run "this binary has no second upstream (--coinbase-url)"

# sources : one line of JSON on what the load balancer serves: stale, the failover, units by
# source (absent: the primary's) and by flag.
sources() {
  rates_json | python3 -c '
import collections, json, sys
b = json.load(sys.stdin)
rates = b["rates"].values()
failover = (b.get("upstream") or {}).get("failover") or {}
print(json.dumps({
    "stale": b["stale"], "via": failover.get("via"), "primary_error": failover.get("primary_error"),
    "units": len(rates),
    "by_source": dict(collections.Counter(r.get("source", b["source"]) for r in rates)),
    "flagged": dict(collections.Counter(r["flag"] for r in rates if r.get("flag"))),
}))'
}
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else json.dumps(v))' "$1" "$2"; }
via_coinbase() { [ "$(field "$(sources)" via)" = '"coinbase"' ]; }
# No failover, and every unit the primary's, unflagged.
on_primary() {
  sources | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["via"] is None and list(s["by_source"]) == ["coingecko"] and not s["flagged"] else 1)'
}
fresh() { [ "$(field "$(sources)" stale)" = false ]; }
all_ready() { local n; for n in "${REPLICAS[@]}"; do replica_ready "$n" || return 1; done; }

wait_until 30 "fresh data from CoinGecko before the drill" fresh
wait_until 30 "every unit from CoinGecko before the drill" on_primary
wait_until 60 "RatecastUpstreamFailover inactive before the drill" alert_is RatecastUpstreamFailover inactive
watch_for "the wall: 'via Coinbase' with how long CoinGecko has been unreachable; the prices keep moving, no Stale banner"
watch_for "Prometheus $PROM/alerts : RatecastUpstreamFailover pending, then firing; Grafana 'Serving source / units by source / held units'"

tmp=$(mktemp -d)
trap 'coingecko_recover; rm -rf "$tmp"' EXIT
# A wall open before the outage, photographed once its status names Coinbase.
[ -d "$REPO_ROOT/tests/browser/node_modules/playwright-core" ] \
  || fail "no playwright-core in tests/browser/node_modules (npm ci there): no picture of the wall during the failover"
node "$DEMO_DIR/wall-shot.mjs" "$LB_HTTP/?wall=1&symbols=usd,eur,gbp,eth,xau&base=usd" \
  "$DEMO_OUT/wall-failover.png" Coinbase 4000 90000 >"$tmp/wall.json" &
shot=$!
ratecast_cli loadtest --url '{WS}' --clients 200 --ramp 200/s --duration 75s --reconnect --json >"$tmp/load.json" &
load=$!
start=$SECONDS
sleep 5

t0=$(now_ms)
coingecko_outage
happened "CoinGecko now answers 503; Coinbase still answers"
wait_until 30 "the leader fails over to Coinbase" via_coinbase
t_over=$(now_ms)
during=$(sources)
echo "   API: $during"
happened "failed over after $(( (t_over - t0) / 1000 )) s"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["by_source"].get("coinbase", 0) > s["units"] // 2 and not s["stale"] else 1)' "$during" \
  || fail "most units should come from Coinbase and the table should not be stale: $during"

# Longer than --stale-after (10 s on this stack): without the fallback the wall would be Stale by now.
samples=0 stale_seen=0 not_ready=0
hold_until=$((SECONDS + 15))
while [ "$SECONDS" -lt "$hold_until" ]; do
  s=$(sources)
  samples=$((samples + 1))
  [ "$(field "$s" stale)" = false ] || stale_seen=$((stale_seen + 1))
  [ "$(field "$s" via)" = '"coinbase"' ] || fail "the failover ended while CoinGecko was down: $s"
  all_ready || not_ready=$((not_ready + 1))
  sleep 0.5
done
[ "$stale_seen" -eq 0 ] || fail "the data was stale in $stale_seen of $samples samples during the failover"
[ "$not_ready" -eq 0 ] || fail "a replica was not ready in $not_ready of $samples samples"
happened "not stale and every replica ready in all $samples samples over 15 s (--stale-after is 10 s)"
# The choice is published: every replica serves it, not only the one the load balancer picked.
for n in "${REPLICAS[@]}"; do
  port_var="PORT_$n"
  curl -fsS --max-time 3 "http://127.0.0.1:${!port_var}/api/v1/rates" \
    | python3 -c 'import json,sys; b=json.load(sys.stdin); sys.exit(0 if (b["upstream"].get("failover") or {}).get("via") == "coinbase" else 1)' \
    || fail "ratecast-$n does not serve the failover"
done
happened "every replica serves via Coinbase"

wait "$shot" || fail "the open wall never named Coinbase in its status"
wall=$(cat "$tmp/wall.json")
happened "the wall shows '$(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print(w["status"])' "$wall")' ($DEMO_OUT/wall-failover.png)"
wait_until 60 "RatecastUpstreamFailover fires" alert_is RatecastUpstreamFailover firing
t_fire=$(now_ms)
happened "RatecastUpstreamFailover firing after $(( (t_fire - t0) / 1000 )) s"

coingecko_recover
trap 'rm -rf "$tmp"' EXIT
t_back=$(now_ms)
happened "CoinGecko answers again"
wait_until 30 "CoinGecko serves again, every unit its own" on_primary
t_primary=$(now_ms)
happened "failed back $(( (t_primary - t_back) / 1000 )) s after CoinGecko came back: no failover, no unit tagged"
wait_until 60 "RatecastUpstreamFailover resolves" alert_is RatecastUpstreamFailover inactive
t_resolved=$(now_ms)
happened "RatecastUpstreamFailover resolved $(( (t_resolved - t_back) / 1000 )) s after CoinGecko came back"

[ $((SECONDS - start)) -lt 72 ] || fail "the drill took longer than the load test; lengthen it"
sleep $(( start + 73 - SECONDS ))
freeze_feed
wait "$load" || { thaw_feed; fail "the load generator failed"; }
thaw_feed
load_figures=$(reconnect_figures "$tmp/load.json")
echo "   load generator: $load_figures"
assert_nothing_missed "$load_figures" 0
happened "200 subscribers through the failover and back: 0 missed deltas, 0 snapshots, every checksum right"

json_out failover "$(python3 - "$during" "$wall" "$load_figures" "$samples" \
  "$(( t_over - t0 ))" "$(( t_fire - t0 ))" "$(( t_primary - t_back ))" "$(( t_resolved - t_back ))" "$(( t_back - t0 ))" <<'PY'
import json, sys
during, wall, load = (json.loads(a) for a in sys.argv[1:4])
samples, over, fire, back, resolved, outage = map(int, sys.argv[4:])
print(json.dumps({
    "wall": wall, "failover_after_s": round(over / 1000, 1), "primary_error": during["primary_error"],
    "units": during["units"], "units_via_coinbase": during["by_source"].get("coinbase", 0),
    "units_flagged_stale": during["flagged"].get("stale", 0), "stale_samples": samples, "stale_seen": 0,
    "alert_firing_after_s": fire // 1000, "failback_after_s": round(back / 1000, 1),
    "alert_resolved_after_recovery_s": resolved // 1000, "outage_s": outage // 1000, "load": load,
}))
PY
)"
