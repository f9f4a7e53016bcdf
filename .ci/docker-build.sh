#!/usr/bin/env bash
# Builds the ratecast image from the repo's Dockerfile, as users build it, and tags it ratecast:ci.
#
# Run it:     bash .ci/docker-build.sh [TAG]
#   1. ensure_docker_engine: installs Debian's docker.io when missing and starts dockerd when no
#      engine answers (its log: $RATECAST_CACHE/dockerd.log);
#   2. ensure_base_images (.ci/docker-base-images.sh): the Dockerfile's base images, pulled or, with
#      no registry reachable, built locally under the same names;
#   3. docker build with BuildKit; the layer cache makes a rerun with unchanged inputs take seconds.
#   Prints the build time and the image size.
#
# Source it:  source .ci/docker-build.sh   (defines the functions, runs nothing), then e.g.
#   ensure_docker_engine          engine up, nothing else (for stages that only run containers)
#   build_ratecast_image [TAG]    steps 1-3; TAG defaults to $IMAGE
#   docker_build ARGS...          `docker build` with BuildKit, whichever client provides it
#
# Env: IMAGE (default ratecast:ci); VERSION and REVISION, the OCI labels (default: Cargo.toml's
#      version and the git HEAD); BUILD_LOG (default $RATECAST_CACHE/docker-build-<tag>.log).

# shellcheck source=.ci/docker-base-images.sh
source "$(dirname "${BASH_SOURCE[0]}")/docker-base-images.sh"

IMAGE=${IMAGE:-ratecast:ci}

ensure_docker_engine() {
  ensure_apt docker.io
  docker info >/dev/null 2>&1 && return 0
  log "starting dockerd (log: $RATECAST_CACHE/dockerd.log)"
  as_root setsid dockerd >>"$RATECAST_CACHE/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 60); do
    docker info >/dev/null 2>&1 && { echo "docker engine up after ${i}s"; return 0; }
    sleep 1
  done
  tail -n 20 "$RATECAST_CACHE/dockerd.log" >&2
  echo "dockerd did not answer within 60s" >&2
  return 1
}

# BuildKit is needed for BUILDPLATFORM/TARGETARCH. Debian's docker.io client (20.10) drives the
# engine's built-in BuildKit; a newer client only does so through the buildx plugin.
docker_build() {
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --load "$@"
  else
    DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
  fi
}

build_ratecast_image() {
  local tag=${1:-$IMAGE} version revision start build_log
  build_log=${BUILD_LOG:-$RATECAST_CACHE/docker-build-${tag//[^A-Za-z0-9._-]/_}.log}
  ensure_docker_engine
  ensure_base_images "$REPO_ROOT/Dockerfile"
  version=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n1)}
  revision=${REVISION:-$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}
  log "docker build -t $tag (version $version, revision $revision; log: $build_log)"
  start=$SECONDS
  if ! docker_build --progress=plain --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    -t "$tag" "$REPO_ROOT" >"$build_log" 2>&1; then
    tail -n 60 "$build_log" >&2
    echo "docker build failed (full log: $build_log)" >&2
    return 1
  fi
  echo "built $tag in $((SECONDS - start))s; image size $(docker image inspect -f '{{.Size}}' "$tag") bytes"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  build_ratecast_image "$@"
fi
