#!/usr/bin/env bash
# Drill 3: the leader replica killed (SIGKILL: no drain, no lease release) under 300 subscribers
# with --reconnect. Asserts: another replica takes the lease (ratecast_cluster_leader), every
# client the killed replica held (~100) resumes on the others with since= as a replay, no
# subscriber misses a seq, and all end on the same seq. Needs cluster mode (issue 13).
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 3: the leader replica killed -> another takes over, no client misses a delta"
needs_cluster "the leader-kill drill"
wait_until 30 "a leader" test -n "$(leader)"
old=$(leader)
watch_for "Grafana: ratecast_cluster_leader moves from ratecast-$old to another replica; 'Sequence' keeps climbing"
watch_for "the wall: no gap; clients of ratecast-$old reconnect to the others and resume"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ratecast_cli loadtest --url '{WS}' --clients 300 --ramp 300/s --duration 40s --reconnect --json >"$tmp/load.json" &
load=$!
start=$SECONDS
sleep 4
# Every subscriber the leader holds at the kill must come back elsewhere: haproxy's round robin
# gives it about a third of the 300.
held=$(replica_metric "$old" ratecast_ws_connections)
held=${held%.*}
[ "${held:-0}" -ge 80 ] || fail "ratecast-$old holds ${held:-no} subscribers before the kill, not about 100 of 300"
t_kill=$(now_ms)
replica_signal "$old" KILL
happened "ratecast-$old (the leader, $held subscribers) killed with SIGKILL"
new_leader() { local l; l=$(leader); [ -n "$l" ] && [ "$l" != "$old" ]; }
wait_until 60 "another replica takes the lease" new_leader
t_takeover=$(now_ms)
new=$(leader)
happened "ratecast-$new took over after $(( (t_takeover - t_kill) / 1000 )).$(( (t_takeover - t_kill) % 1000 / 100 )) s"
replica_start "$old"
happened "ratecast-$old started again (now a follower)"
# Freeze the feed ~4 s before the generator ends (~1 s of ramp + 40 s after it started), so that
# every subscriber can settle on the same final seq.
[ $((SECONDS - start)) -lt 36 ] || fail "the takeover took longer than the load test; lengthen it"
sleep $(( start + 37 - SECONDS ))
freeze_feed
wait "$load" || { thaw_feed; fail "the load generator failed"; }
thaw_feed
figures=$(reconnect_figures "$tmp/load.json")
echo "   load generator: $figures"
assert_nothing_missed "$figures" "$held"
happened "no subscriber missed a delta; every one ended on the same seq"
json_out leader-kill "$(python3 -c 'import json,sys; f=json.loads(sys.argv[1]); f["takeover_ms"]=int(sys.argv[2]); f["held_by_killed"]=int(sys.argv[3]); print(json.dumps(f))' "$figures" "$((t_takeover - t_kill))" "$held")"
