#!/usr/bin/env bash
# Drill 7: a load test through the load balancer, with its numbers: subscribers, frames per
# second, delivery latency (kernel receive time minus the frame's ts), missing seqs.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

clients=${DEMO_LOAD_CLIENTS:-1000}
duration=${DEMO_LOAD_DURATION:-20s}
say "Drill 7: load test, $clients subscribers for $duration through the load balancer"
watch_for "Grafana 'WebSocket connections per pod' and 'Frames sent per second'"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
ratecast_cli loadtest --url '{WS}' --clients "$clients" --ramp 500/s --duration "$duration" --json >"$out" \
  || fail "the load generator failed"
figures=$(python3 - "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
keys = ("clients", "connected", "connect_failures", "disconnects", "steady_secs", "steady_frames_per_sec",
        "mean_frame_bytes", "deltas", "missing_seqs", "out_of_order", "resyncs", "latency", "read_latency",
        "connect_time", "generator_cpu_secs")
print(json.dumps({k: s[k] for k in keys}))
PY
)
python3 - "$figures" <<'PY'
import json, sys
f = json.loads(sys.argv[1]); l = f["latency"]
print(f"   connected {f['connected']}/{f['clients']}, {f['steady_frames_per_sec']:.0f} frames/s, "
      f"latency p50 {l['p50_ms']:.1f} / p90 {l['p90_ms']:.1f} / p99 {l['p99_ms']:.1f} / max {l['max_ms']:.1f} ms, "
      f"missing seqs {f['missing_seqs']}, resyncs {f['resyncs']}")
PY
python3 -c 'import json,sys; f=json.loads(sys.argv[1]); sys.exit(0 if f["connected"] == f["clients"] and f["missing_seqs"] == 0 and f["out_of_order"] == 0 and not f["disconnects"] else 1)' "$figures" \
  || fail "not every subscriber got every delta: $figures"
happened "every subscriber connected and got every delta"
json_out loadtest "$figures"
