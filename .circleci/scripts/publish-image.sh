#!/usr/bin/env bash
# Builds the image for linux/amd64 and linux/arm64 (buildx), pushes it to ECR under the immutable
# git-SHA tag, fails on HIGH/CRITICAL vulnerabilities that have a fix (trivy), attests a CycloneDX
# SBOM per platform and signs the image (cosign, KMS key). Only a signed digest is deployable, so
# an image that failed the scan never leaves ECR. A release tag vX.Y.Z adds the tag X.Y.Z to the
# digest already built from that commit: nothing is rebuilt between staging and prod. Each
# platform's image is pulled back and held to the docker stage's checks (.ci/docker-image-checks.sh:
# size limit, no shell): there they run on a local stand-in of the distroless base, here on the
# real image.
# Env: ECR_REGISTRY, COSIGN_KEY (awskms:///alias/ratecast-cosign), CIRCLE_SHA1, CIRCLE_TAG;
#      BUILDX_CACHE (local layer cache dir), OUT_DIR (reports, SBOMs), WORKSPACE (image.env).
set -euo pipefail
# shellcheck source=.ci/docker-image-checks.sh
source "$(dirname "$0")/../../.ci/docker-image-checks.sh"
: "${ECR_REGISTRY:?}" "${COSIGN_KEY:?}" "${CIRCLE_SHA1:?}"
repo_name=ratecast
repo="$ECR_REGISTRY/$repo_name"
cache=${BUILDX_CACHE:-$HOME/buildx-cache}
out=${OUT_DIR:-/tmp/artifacts}
workspace=${WORKSPACE:-/tmp/workspace}
mkdir -p "$out" "$workspace"

aws ecr get-login-password | docker login --username AWS --password-stdin "$ECR_REGISTRY"

digest_of() {
  aws ecr describe-images --repository-name "$repo_name" --image-ids "imageTag=$1" \
    --query 'imageDetails[0].imageDigest' --output text 2>/dev/null || true
}

digest=$(digest_of "$CIRCLE_SHA1")
if [ -z "$digest" ] || [ "$digest" = None ]; then
  echo "building $repo:$CIRCLE_SHA1"
  # No QEMU needed: the Dockerfile cross-compiles on the build platform and its runtime stage
  # has no RUN step.
  docker buildx inspect ratecast >/dev/null 2>&1 || docker buildx create --name ratecast --driver docker-container >/dev/null
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
  docker buildx build --builder ratecast --platform linux/amd64,linux/arm64 \
    --build-arg "VERSION=$version" --build-arg "REVISION=$CIRCLE_SHA1" \
    --cache-from "type=local,src=$cache" --cache-to "type=local,dest=$cache.new,mode=max" \
    --tag "$repo:$CIRCLE_SHA1" --metadata-file "$out/build-metadata.json" --push .
  # Swap, so the cache holds this build's layers only and does not grow without bound.
  rm -rf "$cache" && mv "$cache.new" "$cache"
  digest=$(jq -r '."containerimage.digest"' "$out/build-metadata.json")
else
  echo "$repo:$CIRCLE_SHA1 already pushed as $digest (tags are immutable): not rebuilding"
fi
image="$repo@$digest"

for arch in amd64 arm64; do
  docker pull --quiet --platform "linux/$arch" "$image" >/dev/null
  check_image_size "$image"
  check_image_contents "$image"
done

if cosign verify --key "$COSIGN_KEY" "$image" >/dev/null 2>&1; then
  echo "$image is already scanned and signed"
else
  for arch in amd64 arm64; do
    echo "trivy: linux/$arch"
    trivy image --platform "linux/$arch" --severity HIGH,CRITICAL --ignore-unfixed --exit-code 1 \
      --no-progress --output "$out/trivy-$arch.txt" "$image" || { cat "$out/trivy-$arch.txt"; exit 1; }
    cat "$out/trivy-$arch.txt"
    trivy image --platform "linux/$arch" --format cyclonedx --no-progress --output "$out/sbom-$arch.cdx.json" "$image"
    platform_digest=$(docker buildx imagetools inspect "$image" --format '{{json .Manifest}}' |
      jq -r --arg arch "$arch" '.manifests[] | select(.platform.os == "linux" and .platform.architecture == $arch) | .digest')
    cosign attest --yes --key "$COSIGN_KEY" --type cyclonedx --predicate "$out/sbom-$arch.cdx.json" \
      "$repo@$platform_digest"
  done
  # --recursive: the index and every platform manifest, whichever one a node pulls.
  cosign sign --yes --recursive --key "$COSIGN_KEY" "$image"
fi

if [[ "${CIRCLE_TAG:-}" =~ ^v([0-9]+\.[0-9]+\.[0-9]+)$ ]]; then
  release=${BASH_REMATCH[1]}
  existing=$(digest_of "$release")
  if [ -z "$existing" ] || [ "$existing" = None ]; then
    docker buildx imagetools create --tag "$repo:$release" "$image"
    echo "tagged $image as $repo:$release"
  elif [ "$existing" != "$digest" ]; then
    echo "$repo:$release already names $existing, not $digest" >&2
    exit 1
  fi
fi

echo "IMAGE_DIGEST=$digest" >"$workspace/image.env"
echo "published $image"
