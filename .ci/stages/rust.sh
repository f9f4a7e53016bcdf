#!/usr/bin/env bash
# Rust: formatting, lints (warnings are errors), then every unit and integration test.
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT"

command -v cargo >/dev/null || { echo "cargo is required (rustup: https://rustup.rs)" >&2; exit 1; }
# redis-server: the cluster-mode tests start their own on free ports; haproxy: the rolling
# restart behind a load balancer; tmux: the terminal client read off a real screen.
ensure_apt pkg-config procps tmux redis-server haproxy

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "cargo test --workspace"
cargo test --locked --workspace --all-targets --no-fail-fast
