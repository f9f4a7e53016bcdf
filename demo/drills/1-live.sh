#!/usr/bin/env bash
# Drill 1: live updates on the wall and in `ratecast watch`, side by side, through the load
# balancer. Asserts that a watcher gets contiguous deltas; natively also takes the pictures of
# the wall and of the terminal client that the slides show.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/../lib.sh"

say "Drill 1: live updates, the wall and the terminal side by side"
watch_for "the wall at $LB_HTTP/?wall=1 : prices move about once a second, changed cells flash"
watch_for "'ratecast watch' in a terminal: the same rates, the same moves"

if [ "$DEMO_TARGET" = compose ] && [ -t 1 ]; then
  echo "   (the terminal client runs for ${DEMO_WATCH_SECONDS:-20} s; Ctrl-C ends it early)"
  timeout --foreground "${DEMO_WATCH_SECONDS:-20}" "${DC[@]}" run --rm cli watch --url ws://haproxy:8080/ws || true
fi

frames=$(mktemp)
trap 'rm -f "$frames"' EXIT
CLI_TIMEOUT=8 ratecast_cli watch --json --url '{WS}' >"$frames" || true
figures=$(python3 - "$frames" <<'PY'
import json, sys
frames = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
kinds = [f.get("type") for f in frames]
seqs = [f["seq"] for f in frames if f.get("type") == "delta"]
first = next((f for f in frames if f.get("type") == "snapshot"), None)
print(json.dumps({
    "snapshot": first is not None,
    "units": len(first["rates"]) if first else 0,
    "deltas": len(seqs),
    "contiguous": all(b == a + 1 for a, b in zip(seqs, seqs[1:])),
    "first_seq": seqs[0] if seqs else None, "last_seq": seqs[-1] if seqs else None,
    "frame_types": sorted(set(k for k in kinds if k)),
}))
PY
)
echo "   watch --json for 8 s: $figures"
python3 -c 'import json,sys; f=json.loads(sys.argv[1]); sys.exit(0 if f["snapshot"] and f["deltas"] >= 3 and f["contiguous"] else 1)' "$figures" \
  || fail "the watcher did not get a snapshot and at least 3 contiguous deltas in 8 s"
happened "a snapshot of the units, then contiguous deltas about once a second"

# Natively these are the slides' pictures: no Chromium or tmux is a failure, not a skip.
if [ "$DEMO_TARGET" = native ]; then
  if ! have_chromium || ! command -v tmux >/dev/null; then fail "Chromium and tmux are needed for the pictures of the wall and watch"; fi
  screenshot "$DEMO_OUT/wall.png" "$LB_HTTP/?wall=1&symbols=usd,eur,gbp,eth,xau,xag&base=usd"
  session="ratecast-demo-$$"
  tmux new-session -d -s "$session" -x 110 -y 32 "$RATECAST_BIN watch --url $LB_WS"
  sleep 5
  tmux capture-pane -p -t "$session" >"$DEMO_OUT/watch.txt"
  tmux kill-session -t "$session"
  terminal_picture "$DEMO_OUT/watch.png" "$DEMO_OUT/watch.txt"
  if [ ! -s "$DEMO_OUT/wall.png" ] || [ ! -s "$DEMO_OUT/watch.png" ]; then fail "no pictures of the wall and watch"; fi
  happened "pictures: $DEMO_OUT/wall.png, $DEMO_OUT/watch.png"
fi
json_out live "$figures"
