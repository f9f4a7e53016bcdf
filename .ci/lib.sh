# Shared helpers for the test stages: each installs what it needs when missing,
# so a fresh machine (or CI, as root) needs nothing by hand. Source, don't run.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RATECAST_CACHE=${RATECAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ratecast-ci}
mkdir -p "$RATECAST_CACHE"

log() { printf '\n==> %s\n' "$*" >&2; }

# Run as root directly, otherwise through sudo.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED="$RATECAST_CACHE/.apt-updated"
# ensure_apt PKG... : install Debian packages that are not installed yet.
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ ! -f "$APT_UPDATED" ] || [ -n "$(find "$APT_UPDATED" -mmin +720)" ]; then
    as_root apt-get update -qq && touch "$APT_UPDATED"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A private Python venv for the checkers (yamllint, checkov, ...), outside the repo.
VENV="$RATECAST_CACHE/venv"
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating Python venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  fi
}
# ensure_pip SPEC... : pip-install packages into the venv when missing (SPEC may pin: pkg==1.2).
ensure_pip() {
  ensure_venv
  local missing=()
  for spec in "$@"; do
    "$VENV/bin/pip" show -q "${spec%%[=<>]*}" >/dev/null 2>&1 || missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "pip install ${missing[*]}"
  "$VENV/bin/pip" install -q "${missing[@]}"
}
