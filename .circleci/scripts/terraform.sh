#!/usr/bin/env bash
# Terraform of one root against its S3 state. `check` needs no AWS access (fmt of all infra/,
# validate); `plan` saves the plan, its text and the provider lock file under
# $WORKSPACE/terraform/<root> for the apply job; `apply` applies exactly that saved plan (a plan
# made stale by another apply is refused by Terraform).
# Usage: terraform.sh check|plan|apply ROOT   (ROOT: global | dev | staging | prod)
# Env: TF_STATE_BUCKET and TF_VAR_* (plan, apply); WORKSPACE (default /tmp/workspace).
set -euo pipefail
action=${1:?usage: terraform.sh check|plan|apply ROOT}
root=${2:?usage: terraform.sh check|plan|apply ROOT}
case $root in
  global) dir=infra/global ;;
  dev | staging | prod) dir=infra/envs/$root ;;
  *) echo "unknown root $root" >&2; exit 1 ;;
esac
export TF_IN_AUTOMATION=1 TF_INPUT=0
saved=${WORKSPACE:-/tmp/workspace}/terraform/$root

case $action in
  check)
    terraform fmt -check -recursive -diff infra
    cd "$dir"
    terraform init -backend=false
    terraform validate ;;
  plan)
    cd "$dir"
    terraform init -backend-config="bucket=${TF_STATE_BUCKET:?}"
    terraform plan -lock-timeout=5m -out=tfplan
    mkdir -p "$saved"
    terraform show -no-color tfplan >"$saved/plan.txt"
    cp tfplan .terraform.lock.hcl "$saved/" ;;
  apply)
    cd "$dir"
    # The plan's provider selections, so init installs exactly what the plan was made with.
    cp "$saved/.terraform.lock.hcl" .
    terraform init -backend-config="bucket=${TF_STATE_BUCKET:?}"
    terraform apply -lock-timeout=5m "$saved/tfplan" ;;
  *) echo "unknown action $action" >&2; exit 1 ;;
esac
