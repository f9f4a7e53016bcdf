#!/usr/bin/env bash
# Setup workflow: decides whether this pipeline touches infra/ and continues with
# .circleci/continue.yml, passing that as the pipeline parameter infra-changed (the Terraform
# workflow, with its approval holds, only exists when it is true).
# Usage: continue.sh BASE_REVISION   (<< pipeline.git.base_revision >>: the previous pipeline's commit)
set -euo pipefail
base=${1-}
head=$(git rev-parse HEAD)
paths=(infra .circleci/scripts/terraform.sh)

if [ -n "${CIRCLE_TAG:-}" ]; then
  changed=false   # release tags only publish and deploy the app
else
  if [ -z "$base" ] || ! git cat-file -e "$base^{commit}" 2>/dev/null; then
    git fetch -q origin main || true
    base=$(git merge-base origin/main HEAD 2>/dev/null || true)
  fi
  if [ -z "$base" ] || [ "$base" = "$head" ]; then
    changed=true   # nothing to compare with (first pipeline, rerun): plan rather than miss a change
  elif git diff --quiet "$base" HEAD -- "${paths[@]}"; then
    changed=false
  else
    changed=true
  fi
fi
echo "infra-changed=$changed (base ${base:-none}, head $head)"

jq -n --rawfile config .circleci/continue.yml --argjson changed "$changed" \
  '{"continuation-key": env.CIRCLE_CONTINUATION_KEY, configuration: $config, parameters: {"infra-changed": $changed}}' \
  >/tmp/continuation.json
curl -fsS --retry 3 -X POST -H "Content-Type: application/json" --data @/tmp/continuation.json \
  "https://circleci.com/api/v2/pipeline/continue"
