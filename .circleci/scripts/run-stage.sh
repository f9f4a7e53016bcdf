#!/usr/bin/env bash
# Runs one stage of the README's test command (bash .ci/test.sh STAGE) the way the project's own
# machines run it: Debian 12, as root, CI=true. The container is privileged because the docker
# stage starts its own dockerd inside it. Caches live under STAGE_CACHE (saved by CircleCI).
# Usage: run-stage.sh STAGE
set -euo pipefail
stage=${1:?usage: run-stage.sh STAGE}
image=${STAGE_IMAGE:-rust:1.95-bookworm}
cache=${STAGE_CACHE:-$HOME/stage-cache}
mkdir -p "$cache/ratecast-ci" "$cache/cargo-registry" "$cache/target"

docker run --rm --privileged -e CI=true \
  -v "$PWD:/work" -w /work \
  -v "$cache/ratecast-ci:/root/.cache/ratecast-ci" \
  -v "$cache/cargo-registry:/usr/local/cargo/registry" \
  -v "$cache/target:/work/target" \
  -v "ratecast-stage-docker:/var/lib/docker" \
  "$image" bash .ci/test.sh "$stage"
