#!/usr/bin/env bash
# The image checks shared by the docker stage (an image built here) and CircleCI's publish-image
# job (the real multi-arch image, pulled back per platform from ECR), so both hold the same limit
# and the same make-up rules. Source it; it defines functions and runs nothing.
#   check_image_size IMAGE       fails above MAX_IMAGE_BYTES (docker image inspect .Size, uncompressed)
#   check_image_contents IMAGE   fails on a shell, package manager, downloader or setuid file, or a
#                                missing binary or CA bundle
#   image_base_provenance IMAGE  "registry" or "local stand-in": whether the runtime base image the
#                                Dockerfile names came from a registry or was built here by
#                                .ci/docker-base-images.sh (an imported image has no RepoDigests)
# Both checks print one `ok:` line, or `FAIL:` on stderr and return 1.

# 30 MB: the limit of the image size claim (README, docs/container.md). Change it here only.
MAX_IMAGE_BYTES=$((30 * 1000 * 1000))

check_image_size() {
  local image=$1 size
  size=$(docker image inspect -f '{{.Size}}' "$image")
  [[ $size =~ ^[0-9]+$ ]] || { echo "FAIL: no size for $image: '$size'" >&2; return 1; }
  echo "image size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }')) for $image"
  if [ "$size" -gt "$MAX_IMAGE_BYTES" ]; then
    echo "FAIL: image is $size bytes, over $MAX_IMAGE_BYTES" >&2
    return 1
  fi
  echo "ok: size <= $MAX_IMAGE_BYTES bytes"
}

check_image_contents() {
  local image=$1 container listing files setuid forbidden
  container=$(docker create "$image") || { echo "FAIL: cannot create a container of $image" >&2; return 1; }
  listing=$(docker export "$container" | tar -tv) || { docker rm "$container" >/dev/null; echo "FAIL: cannot list $image" >&2; return 1; }
  docker rm "$container" >/dev/null
  files=$(awk '{ print $6 }' <<<"$listing")
  setuid=$(awk '$1 ~ /^-.*[sS]/ { print $6 }' <<<"$listing")
  [ -z "$setuid" ] || { echo "FAIL: setuid/setgid files: $setuid" >&2; return 1; }
  grep -qx 'usr/local/bin/ratecast' <<<"$files" || { echo "FAIL: binary missing" >&2; return 1; }
  grep -qx 'etc/ssl/certs/ca-certificates.crt' <<<"$files" || { echo "FAIL: CA bundle missing" >&2; return 1; }
  forbidden=$(grep -E '(^|/)(sh|bash|dash|ash|busybox|apt|apt-get|dpkg|curl|wget)$' <<<"$files" || true)
  [ -z "$forbidden" ] || { echo "FAIL: runtime image has: $forbidden" >&2; return 1; }
  echo "ok: no shell, package manager, downloader or setuid file; binary and CA bundle present ($(wc -l <<<"$files") paths)"
}

image_base_provenance() {
  local base=$1
  if [ "$(docker image inspect -f '{{len .RepoDigests}}' "$base" 2>/dev/null || echo 0)" -gt 0 ]; then
    echo registry
  else
    echo "local stand-in"
  fi
}
