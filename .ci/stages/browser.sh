#!/usr/bin/env bash
# Stage browser: the wall display in Debian's headless Chromium, driven by playwright-core from
# node's test runner, against the real `ratecast serve` and a fake CoinGecko (tests/browser);
# the tests that must hold in every browser run in Debian's Firefox ESR too, driven by
# puppeteer-core over WebDriver BiDi.
# Writes the README screenshots to docs/screenshots/.
source "$(dirname "$0")/../lib.sh"

ensure_apt chromium chromium-driver firefox-esr
command -v node >/dev/null || ensure_apt nodejs npm
echo "chromium: $(chromium --version 2>/dev/null)"
echo "firefox: $(firefox-esr --version 2>/dev/null)"
echo "node: $(node --version)"

log "npm ci (tests/browser)"
(cd "$REPO_ROOT/tests/browser" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)

log "cargo build --bin ratecast"
(cd "$REPO_ROOT" && cargo build --quiet --bin ratecast)

log "browser tests"
cd "$REPO_ROOT/tests/browser"
# A fixed locale for the unit tests of format.js (the browser pages set en-US themselves).
LC_ALL=C.UTF-8 RATECAST_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/ratecast" \
  node --test --test-concurrency=1 --test-timeout=180000 --test-reporter=spec
echo "screenshots: $(cd "$REPO_ROOT" && ls docs/screenshots/*.png | tr '\n' ' ')"
