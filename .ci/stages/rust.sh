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
log "cargo test --workspace (includes the 60 s soak, tests/soak.rs: fails on an fd/slot leak or a panic)"
cargo test --locked --workspace --all-targets --no-fail-fast

# Line coverage (opt-in, slow: an instrumented build and the whole suite again, subprocesses
# counted): RATECAST_COVERAGE=1 bash .ci/test.sh rust
# It fails below the figure docs/measured/coverage.json claims (README quotes it), and on any
# failing test; otherwise it rewrites that file with what it measured.
if [ "${RATECAST_COVERAGE:-0}" = 1 ]; then
  command -v cargo-tarpaulin >/dev/null || cargo install --locked cargo-tarpaulin
  claimed=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["percent"])' docs/measured/coverage.json)
  log "cargo tarpaulin --engine llvm --workspace --follow-exec --fail-under $claimed"
  report=$(mktemp)
  cargo tarpaulin --engine llvm --workspace --all-targets --follow-exec --skip-clean \
    --out Stdout --timeout 600 --no-fail-fast --exclude-files 'benches/*' --fail-under "$claimed" \
    | tee "$report"
  python3 - "$report" docs/measured/coverage.json "$(git rev-parse --short HEAD)" <<'PY'
import json, re, sys, time
report, path, commit = sys.argv[1:]
m = re.search(r"([\d.]+)% coverage, (\d+)/(\d+) lines covered", open(report).read())
if m is None:
    sys.exit("no coverage summary in tarpaulin's output")
json.dump({"percent": float(m.group(1)), "covered": int(m.group(2)), "coverable": int(m.group(3)),
           "commit": commit, "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "measured_by": "RATECAST_COVERAGE=1 bash .ci/test.sh rust (cargo-tarpaulin, llvm engine)"},
          open(path, "w"), indent=2)
PY
  rm -f "$report"
fi
