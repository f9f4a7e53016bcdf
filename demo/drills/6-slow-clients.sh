#!/usr/bin/env bash
# Drill 6: a slow and a flooding client on replica 1 (straight to it: a load balancer's buffers
# would hide a client that does not read), while 100 well-behaved subscribers share it.
# Asserts: the slow one is closed (1008, counted in ratecast_ws_slow_consumer_closes_total and
# raising the chart's RatecastSlowConsumerClosesRising), the 100 others miss nothing and none is
# dropped. The flooding one is closed with 1008 by the per-client frame budget where the build
# has it (--client-frames-per-second, the stream-robustness change); on a build without it the
# drill says so instead of claiming it.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 6: a slow and a flooding client are closed; the others are unaffected"
watch_for "Grafana 'Connections accepted / refused' and the slow-consumer closes; Prometheus $PROM/alerts"
ws=$(replica_ws 1)
budget=false
if [ "$DEMO_TARGET" = native ]; then
  "$RATECAST_BIN" serve --help | grep -q -- '--client-frames-per-second' && budget=true
else
  dc run --rm -T cli serve --help | grep -q -- '--client-frames-per-second' && budget=true
fi
closes_before=$(replica_metric 1 ratecast_ws_slow_consumer_closes_total)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ratecast_cli loadtest --url '{WS1}' --clients 100 --ramp 100/s --duration 30s --json >"$tmp/others.json" &
others=$!
sleep 2
python3 "$DEMO_DIR/clients.py" slow "$ws" 26 >"$tmp/slow.json" &
slow=$!
python3 "$DEMO_DIR/clients.py" flood "$ws" 10 >"$tmp/flood.json"
wait "$slow" || fail "the slow client could not connect"
wait "$others" || fail "the load generator failed"
closes_after=$(replica_metric 1 ratecast_ws_slow_consumer_closes_total)
closed_slow=$(( ${closes_after%.*} - ${closes_before%.*} ))

echo "   slow:   $(cat "$tmp/slow.json")"
echo "   flood:  $(cat "$tmp/flood.json")"
figures=$(python3 - "$tmp" "$closed_slow" "$budget" <<'PY'
import json, sys
d, closed_slow, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "true"
others = json.load(open(f"{d}/others.json"))
slow, flood = json.load(open(f"{d}/slow.json")), json.load(open(f"{d}/flood.json"))
print(json.dumps({
    "slow": slow, "slow_consumer_closes": closed_slow,
    "flood": flood, "flood_budget_in_build": budget,
    "others": {k: others[k] for k in ("clients", "connected", "disconnects", "deltas",
                                       "missing_seqs", "out_of_order", "resyncs", "latency")},
}))
PY
)
check() { python3 -c "import json,sys; f=json.loads(sys.argv[1]); sys.exit(0 if ($1) else 1)" "$figures"; }
check 'f["slow_consumer_closes"] >= 1' || fail "the slow client was not closed as a slow consumer"
happened "the slow client was closed as a slow consumer (ratecast_ws_slow_consumer_closes_total +$closed_slow)"
check 'f["others"]["connected"] == 100 and not f["others"]["disconnects"] and f["others"]["missing_seqs"] == 0 and f["others"]["out_of_order"] == 0 and f["others"]["deltas"] > 0' \
  || fail "the well-behaved subscribers were affected: $figures"
happened "the 100 others: all connected throughout, 0 missing seqs, 0 out of order"
if $budget; then
  check 'f["flood"]["closed"] and f["flood"]["close_code"] == 1008' || fail "the flooding client was not closed with 1008"
  happened "the flooding client was closed with 1008 after $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["flood"]["seconds"])' "$figures") s"
else
  flood_end=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["flood"]; print(("ended (" + f["ended"] + (", close code %s" % f["close_code"] if f["close_code"] else "") + ")") if f["closed"] else "stayed open", "after", f["seconds"], "s and", f["frames_sent"], "pings")' "$figures")
  happened "PENDING: this build has no per-client frame budget (--client-frames-per-second, the stream-robustness change), so no 1008 for flooding is asserted; the flooding client $flood_end; the others were unaffected all the same"
fi
wait_until 90 "RatecastSlowConsumerClosesRising fires" alert_is RatecastSlowConsumerClosesRising firing
happened "RatecastSlowConsumerClosesRising firing (it resolves once the 5-minute rate window has passed)"
json_out slow-clients "$figures"
