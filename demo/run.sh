#!/usr/bin/env bash
# Runs the failure drills one at a time or all in order, against the compose stack
# (`docker compose up -d` first) or the native one (DEMO_TARGET=native, see stack-native.sh).
# Usage: demo/run.sh [live|outage|leader-kill|rolling-restart|redis-outage|slow-clients|loadtest|failover ...]
# Each drill prints what to watch and what happened, and writes its figures to
# $DEMO_OUT/<drill>.json (default target/demo), stamped with the run: commit and machine.
# shellcheck source=demo/lib.sh
source "$(dirname "$0")/lib.sh"

ALL=(live outage leader-kill rolling-restart redis-outage slow-clients loadtest failover)
drills=("$@")
[ ${#drills[@]} -eq 0 ] && drills=("${ALL[@]}")

# The run every figure names: the commit (with -dirty for uncommitted changes), the machine,
# its load, the build and the stack.
commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# What the test command regenerates (figures, pictures, the deck) does not make a run dirty.
[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no -- . \
  ':(exclude)docs/presentation' ':(exclude)docs/screenshots' 2>/dev/null)" ] && commit+=-dirty
bin_info=compose-image
[ "$DEMO_TARGET" = native ] && bin_info=$("$RATECAST_BIN" --version 2>/dev/null || echo ratecast)
python3 - "$DEMO_OUT/run.json" "$commit" "$DEMO_TARGET" "$bin_info" "${RATECAST_PROFILE:-}" <<'PY'
import json, os, platform, sys, time
path, commit, target, binary, profile = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
json.dump({
    "commit": commit, "target": target, "binary": binary, "profile": profile or None,
    "machine": f"{os.cpu_count()} vCPU {cpu}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB, Linux {platform.release()}",
    "load_average": os.getloadavg()[0],
    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}, open(path, "w"), indent=2)
PY
echo "run: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["commit"], "|", r["machine"], "| load", r["load_average"])' "$DEMO_OUT/run.json")"

# DEMO_MAY_SKIP: the drills that may report "not run" on this machine (space-separated; default
# none). A drill that does not run without being listed fails the run: a skip is never a pass.
read -r -a may_skip <<<"${DEMO_MAY_SKIP:-}"
rm -rf "$DEMO_OUT/not-run"
passed=() failed=() skipped=()
for drill in "${drills[@]}"; do
  script=$(find "$DEMO_DIR/drills" -name "[0-9]-$drill.sh" | head -n1)
  [ -n "$script" ] || { echo "unknown drill: $drill (one of: ${ALL[*]})" >&2; failed+=("$drill"); continue; }
  rc=0
  bash "$script" || rc=$?
  if [ "$rc" -eq 0 ]; then
    passed+=("$drill")
  elif [ "$rc" -eq "$NOT_RUN" ] && [ -s "$DEMO_OUT/not-run/$drill" ] && [[ " ${may_skip[*]} " == *" $drill "* ]]; then
    skipped+=("$drill")
  else
    [ "$rc" -eq "$NOT_RUN" ] && echo "   $drill did not run, and DEMO_MAY_SKIP (${may_skip[*]:-empty}) does not allow it here" >&2
    failed+=("$drill")
  fi
done

printf '\ndrills passed: %s\n' "${passed[*]:-none}"
[ ${#skipped[@]} -gt 0 ] && printf 'drills NOT RUN (allowed here by DEMO_MAY_SKIP): %s\n' "${skipped[*]}"
[ ${#failed[@]} -gt 0 ] && printf 'drills FAILED: %s\n' "${failed[*]}"
printf '%s\n' "${passed[*]:-}" >"$DEMO_OUT/drills-passed.txt"
# One line per drill not run, "drill<TAB>why": the slides say "not run" for these and no other.
for drill in "${skipped[@]}"; do
  printf '%s\t%s\n' "$drill" "$(cat "$DEMO_OUT/not-run/$drill")"
done >"$DEMO_OUT/drills-not-run.txt"
[ ${#failed[@]} -eq 0 ]
