#!/usr/bin/env bash
# Installs pinned release binaries into /usr/local/bin, each checked against its release's
# SHA-256 list. Bump a version here and nowhere else.
# Usage: install-tools.sh TOOL...   (terraform helm trivy cosign)
set -euo pipefail

TERRAFORM_VERSION=1.13.3
HELM_VERSION=3.19.0   # Helm 3: the deploy uses `upgrade --atomic` (renamed in Helm 4)
TRIVY_VERSION=0.66.0
COSIGN_VERSION=2.6.0

case "$(uname -m)" in
  x86_64) arch=amd64 trivy_arch=64bit ;;
  aarch64 | arm64) arch=arm64 trivy_arch=ARM64 ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
sudo_if_needed() { if [ -w /usr/local/bin ]; then "$@"; else sudo "$@"; fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch URL SUMS_URL FILE: download FILE and check it against the SHA-256 list at SUMS_URL.
fetch() {
  curl -fsSL --retry 3 -o "$tmp/$3" "$1"
  curl -fsSL --retry 3 -o "$tmp/sums" "$2"
  (cd "$tmp" && grep -E "[ *]$3\$" sums | sha256sum --check --strict -)
}

for tool in "$@"; do
  if command -v "$tool" >/dev/null 2>&1 && [ "${FORCE:-}" != 1 ]; then
    echo "$tool already installed: $(command -v "$tool")"
    continue
  fi
  case $tool in
    terraform)
      base="https://releases.hashicorp.com/terraform/$TERRAFORM_VERSION"
      file="terraform_${TERRAFORM_VERSION}_linux_$arch.zip"
      fetch "$base/$file" "$base/terraform_${TERRAFORM_VERSION}_SHA256SUMS" "$file"
      (cd "$tmp" && unzip -q "$file" terraform)
      sudo_if_needed install -m 0755 "$tmp/terraform" /usr/local/bin/terraform ;;
    helm)
      file="helm-v$HELM_VERSION-linux-$arch.tar.gz"
      curl -fsSL --retry 3 -o "$tmp/$file" "https://get.helm.sh/$file"
      echo "$(curl -fsSL --retry 3 "https://get.helm.sh/$file.sha256")  $tmp/$file" | sha256sum --check --strict -
      tar -xzf "$tmp/$file" -C "$tmp" "linux-$arch/helm"
      sudo_if_needed install -m 0755 "$tmp/linux-$arch/helm" /usr/local/bin/helm ;;
    trivy)
      base="https://github.com/aquasecurity/trivy/releases/download/v$TRIVY_VERSION"
      file="trivy_${TRIVY_VERSION}_Linux-$trivy_arch.tar.gz"
      fetch "$base/$file" "$base/trivy_${TRIVY_VERSION}_checksums.txt" "$file"
      tar -xzf "$tmp/$file" -C "$tmp" trivy
      sudo_if_needed install -m 0755 "$tmp/trivy" /usr/local/bin/trivy ;;
    cosign)
      base="https://github.com/sigstore/cosign/releases/download/v$COSIGN_VERSION"
      file="cosign-linux-$arch"
      fetch "$base/$file" "$base/cosign_checksums.txt" "$file"
      sudo_if_needed install -m 0755 "$tmp/$file" /usr/local/bin/cosign ;;
    *) echo "unknown tool $tool" >&2; exit 1 ;;
  esac
  echo "installed $tool: $("$tool" version 2>/dev/null | head -n1 || true)"
done
