#!/usr/bin/env bash
# Keeps the web-identity token file of aws-oidc-login.sh fresh for the whole job: CircleCI's OIDC
# token expires after one hour, and the AWS SDKs (Terraform's provider, the AWS CLI) re-read the
# file whenever they re-assume the role, so a `terraform apply` longer than an hour would fail
# with an expired token. Every OIDC_REFRESH_SECONDS (default 1800) it asks the job's CircleCI CLI
# for a new token with the same audience (`circleci run oidc get`) and swaps the file atomically.
# Run as a background step after aws-oidc-login.sh; --once refreshes once and exits.
set -euo pipefail
token_file=${AWS_WEB_IDENTITY_TOKEN_FILE:-$HOME/.aws/circleci-oidc-token}
: "${CIRCLE_OIDC_TOKEN_V2:?no OIDC token in this job: give it a context}"

# The audience of the job's own token (the org ID the role's trust policy expects).
payload=$(cut -d. -f2 <<<"$CIRCLE_OIDC_TOKEN_V2" | tr '_-' '/+')
while [ $((${#payload} % 4)) -ne 0 ]; do payload="$payload="; done
audience=$(base64 -d <<<"$payload" | jq -r 'if (.aud | type) == "array" then .aud[0] else .aud end')

refresh() {
  local new
  umask 077
  new=$(mktemp "$token_file.XXXX")
  if circleci run oidc get --claims "$(jq -cn --arg aud "$audience" '{aud: $aud}')" >"$new" && [ -s "$new" ]; then
    mv "$new" "$token_file"
    echo "$(date -u +%H:%M:%S) OIDC token refreshed"
  else
    rm -f "$new"
    echo "$(date -u +%H:%M:%S) OIDC token refresh failed; keeping the current one" >&2
  fi
}

if [ "${1:-}" = --once ]; then
  refresh
  exit 0
fi
while sleep "${OIDC_REFRESH_SECONDS:-1800}"; do
  refresh
done
