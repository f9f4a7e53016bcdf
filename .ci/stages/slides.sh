#!/usr/bin/env bash
# Stage slides: the presentation in docs/presentation, built from measurements and rendered.
# build.py draws the plots from BENCHMARKS.md and the e2e drills' figures (docs/presentation/data,
# written by the e2e stage, which runs first), reads every other figure from its source (and
# fails when one is missing or README disagrees with it) and fills slides.src.md into slides.md;
# marp-cli (npm, pinned in package-lock.json) renders it to HTML and PDF with Debian's Chromium;
# fit-check.mjs fails on a slide that does not fit 1920x1080 or a chart too small to read.
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT/docs/presentation"

ensure_apt chromium fonts-dejavu-core poppler-utils
command -v npm >/dev/null || ensure_apt nodejs npm
ensure_pip matplotlib

log "build.py: plots and slides.md from the measurements"
"$VENV/bin/python" build.py

log "npm ci (marp-cli; and tests/browser's playwright-core for the fit check)"
npm ci --no-audit --no-fund --prefer-offline --loglevel=error
(cd "$REPO_ROOT/tests/browser" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)

# Beside slides.md, so the HTML finds img/ and data/ by the same relative paths.
log "marp: HTML and PDF"
# CHROME_PATH: Debian's Chromium, not a downloaded one (no download is possible here).
# CHROME_NO_SANDBOX: the stage runs as root, where Chromium's sandbox refuses to start.
export CHROME_PATH=/usr/bin/chromium CHROME_NO_SANDBOX=1
npx marp --no-stdin --allow-local-files --html slides.md -o slides.html
npx marp --no-stdin --allow-local-files --html --pdf slides.md -o slides.pdf

log "checks: one PDF page per slide, every picture the slides name exists"
slides=$(( $(grep -c '^---$' slides.md) - 1 ))
pages=$(pdfinfo slides.pdf | awk '/^Pages:/ { print $2 }')
[ "$pages" -eq "$slides" ] || { echo "slides.pdf has $pages pages for $slides slides" >&2; exit 1; }
absent=0
while read -r picture; do
  [ -s "$picture" ] || { echo "slides.md shows $picture, which does not exist" >&2; absent=1; }
done < <(grep -o '!\[[^]]*\]([^)]*)' slides.md | sed 's/.*](\(.*\))/\1/')
[ "$absent" -eq 0 ]
grep -q '{{' slides.md && { echo "slides.md still has placeholders" >&2; exit 1; }
log "fit check: every slide at 1920x1080 in Chromium, nothing cut off or overlapping, charts readable"
# Marp's bare template lays every slide out one after another with the deck's own CSS; beside
# slides.md so that img/ and data/ resolve.
fit=.fit-check.html
trap 'rm -f "$fit"' EXIT
npx marp --no-stdin --allow-local-files --html --template bare slides.md -o "$fit"
node fit-check.mjs "$fit"

# The PDF rasterises (a broken one would not).
pdftoppm -r 30 -png -f 1 -l 1 slides.pdf "$(mktemp -d)/first-page"
echo "slides: $slides, slides.html ($(stat -c %s slides.html) B), slides.pdf ($pages pages)"
