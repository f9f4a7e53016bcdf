#!/usr/bin/env bash
# Drill 6: a slow and a flooding client on replica 1 (straight to it: a load balancer's buffers
# would hide a client that does not read), while 100 well-behaved subscribers share it.
# Asserts: the slow one (it stops reading, and reads again once the server counts it) is ended
# by the server as docs/protocol.md ("Lagging and slow clients") says: its frames, then a 1008
# "slow consumer" close frame within the 2 s grace, then the end of the stream; counted exactly
# once in ratecast_ws_slow_consumer_closes_total (nobody else is slow) and raising the chart's
# RatecastSlowConsumerClosesRising. The flooding one is closed with 1008 by the per-client
# frame budget (--client-frames-per-second: a build without it fails the drill). The 100 others
# miss nothing and none is dropped.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 6: a slow and a flooding client are closed; the others are unaffected"
watch_for "Grafana 'Connections accepted / refused' and the slow-consumer closes; Prometheus $PROM/alerts"
ws=$(replica_ws 1)
if [ "$DEMO_TARGET" = native ]; then
  help=$("$RATECAST_BIN" serve --help)
else
  help=$(dc run --rm -T cli serve --help)
fi
grep -q -- '--client-frames-per-second' <<<"$help" \
  || fail "this build has no per-client frame budget (--client-frames-per-second): a flood cannot be closed"
closes_before=$(replica_metric 1 ratecast_ws_slow_consumer_closes_total)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ratecast_cli loadtest --url '{WS1}' --clients 100 --ramp 100/s --duration 30s --json >"$tmp/others.json" &
others=$!
sleep 2
python3 "$DEMO_DIR/clients.py" slow "$ws" "$(replica_metrics_url 1)" 26 >"$tmp/slow.json" &
slow=$!
python3 "$DEMO_DIR/clients.py" flood "$ws" 10 >"$tmp/flood.json"
wait "$slow" || fail "the slow client could not connect"
wait "$others" || fail "the load generator failed"
closes_after=$(replica_metric 1 ratecast_ws_slow_consumer_closes_total)
closed_slow=$(( ${closes_after%.*} - ${closes_before%.*} ))

echo "   slow:   $(cat "$tmp/slow.json")"
echo "   flood:  $(cat "$tmp/flood.json")"
figures=$(python3 - "$tmp" "$closed_slow" <<'PY'
import json, sys
d, closed_slow = sys.argv[1], int(sys.argv[2])
others = json.load(open(f"{d}/others.json"))
slow, flood = json.load(open(f"{d}/slow.json")), json.load(open(f"{d}/flood.json"))
print(json.dumps({
    "slow": slow, "slow_consumer_closes": closed_slow,
    "flood": flood,
    "others": {k: others[k] for k in ("clients", "connected", "disconnects", "deltas",
                                       "missing_seqs", "out_of_order", "resyncs", "latency")},
}))
PY
)
check() { python3 -c "import json,sys; f=json.loads(sys.argv[1]); sys.exit(0 if ($1) else 1)" "$figures"; }
# The slow client's own view: cut by the server (counted) while it read nothing, it read its
# 1008 close with the slow-consumer reason and the end of the stream within the grace (2 s,
# and 1 s of this client's polling and reads); and the counter moved by exactly this one client.
check 'f["slow"]["cut_s"] is not None and f["slow"]["ended"] == "close frame" and f["slow"]["close_code"] == 1008 and "slow consumer" in f["slow"]["close_reason"] and f["slow"]["drain_s"] <= 3' \
  || fail "the slow client itself was not closed with 1008 as a slow consumer: $(cat "$tmp/slow.json")"
check 'f["slow_consumer_closes"] == 1' || fail "ratecast_ws_slow_consumer_closes_total moved by $closed_slow, not by 1 (the slow client)"
happened "the slow client was cut after $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["slow"]["cut_s"])' "$figures") s and read close 1008 \"slow consumer…\", counted once as a slow consumer"
check 'f["others"]["connected"] == 100 and not f["others"]["disconnects"] and f["others"]["missing_seqs"] == 0 and f["others"]["out_of_order"] == 0 and f["others"]["deltas"] > 0' \
  || fail "the well-behaved subscribers were affected: $figures"
happened "the 100 others: all connected throughout, 0 missing seqs, 0 out of order"
check 'f["flood"]["closed"] and f["flood"]["close_code"] == 1008' || fail "the flooding client was not closed with 1008: $(cat "$tmp/flood.json")"
happened "the flooding client was closed with 1008 after $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["flood"]["seconds"])' "$figures") s"
wait_until 90 "RatecastSlowConsumerClosesRising fires" alert_is RatecastSlowConsumerClosesRising firing
happened "RatecastSlowConsumerClosesRising firing (it resolves once the 5-minute rate window has passed)"
json_out slow-clients "$figures"
