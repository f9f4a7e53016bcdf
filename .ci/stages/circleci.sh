#!/usr/bin/env bash
# Stage circleci: offline checks of the CircleCI pipeline (.circleci/config.yml, the setup
# workflow, and .circleci/continue.yml, the pipeline it continues with):
#   1. yamllint (.circleci/.yamllint.yml);
#   2. check-jsonschema against the vendored CircleCI schema;
#   3. shellcheck of the pipeline's scripts;
#   4. pytest: every file referenced exists, workflows and approvals, OIDC-only AWS access, and
#      the scripts' behaviour against recording stubs (setup decision, image build/scan/sign/retag,
#      chart versions, deploy order and flags, OIDC login).
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT"

VENV="$RATECAST_CACHE/venv-infra" ensure_pip python-hcl2==8.1.4 pytest==9.2.0 pyyaml==6.0.4 \
  yamllint==1.38.0 check-jsonschema==0.39.0
ensure_apt shellcheck jq git
bin="$RATECAST_CACHE/venv-infra/bin"
configs=(.circleci/config.yml .circleci/continue.yml)

log "yamllint ${configs[*]}"
"$bin/yamllint" --strict -c .circleci/.yamllint.yml "${configs[@]}"
echo "ok: yamllint"

log "check-jsonschema --builtin-schema vendor.circle-ci ${configs[*]}"
"$bin/check-jsonschema" --builtin-schema vendor.circle-ci "${configs[@]}"

log "shellcheck .circleci/scripts/*.sh"
shellcheck -x .circleci/scripts/*.sh
echo "ok: shellcheck ($(ls .circleci/scripts/*.sh | wc -l) scripts)"

log "pytest tests/infra/test_circleci*.py (referenced files, workflows, OIDC, script behaviour)"
"$bin/python" -m pytest -p no:cacheprovider -q tests/infra/test_circleci.py tests/infra/test_circleci_scripts.py
