#!/usr/bin/env bash
# Stage infra: offline checks of infra/ (Terraform and its providers cannot be downloaded here;
# CircleCI runs the real terraform fmt/validate/plan):
#   1. every .tf parses (python-hcl2), module calls match module variables, versions are pinned,
#      env roots hold no logic, the env differences, chart/Terraform alignment, and the bootstrap
#      chart Terraform installs, rendered with Helm 3 (pytest);
#   2. checkov on infra/: any failed check fails the stage (skips carry a written reason).
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT"

# Two venvs: checkov bundles its own fork of python-hcl2 under the same import name.
VENV="$RATECAST_CACHE/venv-infra" ensure_pip python-hcl2==8.1.4 pytest==9.2.0 pyyaml==6.0.4
VENV="$RATECAST_CACHE/venv-checkov" ensure_pip checkov==3.3.30

# Helm 3 from the helm stage's installer (cached, shared with that stage).
HELM=$(bash .ci/helm/install-tools.sh | sed -n 's/^HELM3=//p')
export HELM
"$HELM" version --short

log "pytest tests/infra (HCL parse, env differences, module contracts, bootstrap chart)"
"$RATECAST_CACHE/venv-infra/bin/python" -m pytest -p no:cacheprovider -q tests/infra \
  --ignore-glob='tests/infra/test_circleci*.py'

log "checkov $("$RATECAST_CACHE/venv-checkov/bin/checkov" --version) on infra/ (terraform)"
# --skip-download: no calls home; registry modules are not downloaded (offline), local ones are scanned.
"$RATECAST_CACHE/venv-checkov/bin/checkov" --directory infra --framework terraform \
  --skip-download --compact --quiet 2> >(grep -v "Failed to download module" >&2)
