#!/usr/bin/env bash
# Runs every test of the repo: each stage in .ci/stages installs what it needs when missing.
# Usage: bash .ci/test.sh [stage...]   (default: all stages, in order)
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_STAGES=(rust browser docker helm infra circleci e2e slides)
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=("${ALL_STAGES[@]}")

passed=0 failed=0 failed_names=()
for stage in "${stages[@]}"; do
  script=".ci/stages/$stage.sh"
  if [ ! -f "$script" ]; then
    echo "unknown stage: $stage" >&2; failed=$((failed + 1)); failed_names+=("$stage"); continue
  fi
  printf '\n######## stage %s ########\n' "$stage"
  start=$(date +%s)
  if bash "$script"; then
    passed=$((passed + 1)); result=ok
  else
    failed=$((failed + 1)); failed_names+=("$stage"); result=FAILED
  fi
  printf '######## stage %s: %s (%ss)\n' "$stage" "$result" "$(( $(date +%s) - start ))"
done

[ "$failed" -gt 0 ] && echo "failed stages: ${failed_names[*]}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
