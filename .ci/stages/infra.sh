#!/usr/bin/env bash
# Stage infra: offline checks of infra/ (Terraform and its providers cannot be downloaded here;
# CircleCI runs the real terraform fmt/validate/plan):
#   1. every .tf parses (python-hcl2), module calls match module variables, versions are pinned,
#      env roots hold no logic, the env differences, chart/Terraform alignment, and the bootstrap
#      chart Terraform installs, rendered with Helm 3 (pytest);
#   2. checkov on infra/: any failed check fails the stage (skips carry a written reason); the
#      registry modules cannot be downloaded here, so they are not scanned (the stage says so).
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
# --skip-download: no calls home. No registry is reachable here, so the registry modules are not
# downloaded and NOT scanned (checkov warns "Failed to download module" for each; left visible):
# only this repo's resources and local modules are. Said once more, plainly, after the scan.
"$RATECAST_CACHE/venv-checkov/bin/checkov" --directory infra --framework terraform \
  --skip-download --compact --quiet
registry_modules=$(grep -rhoE 'source\s*=\s*"terraform-aws-modules/[^"]+"' infra --include='*.tf' |
  sed 's/.*"\(.*\)"/\1/' | sort -u | tr '\n' ' ')
echo "checkov: not scanned (registry modules, not downloadable here): $registry_modules"
