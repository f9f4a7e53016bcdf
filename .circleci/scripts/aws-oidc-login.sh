#!/usr/bin/env bash
# Lets the following steps act as ROLE_ARN with the job's CircleCI OIDC token: no long-lived AWS
# keys anywhere. The AWS CLI, Terraform's provider, trivy and `aws eks get-token` all read the
# web-identity variables and re-assume the role when the session expires.
# Usage: aws-oidc-login.sh ROLE_ARN   (the job must use a context, or CircleCI mints no token)
set -euo pipefail
role_arn=${1:?usage: aws-oidc-login.sh ROLE_ARN}
: "${CIRCLE_OIDC_TOKEN_V2:?no OIDC token in this job: give it a context}"
: "${AWS_REGION:?AWS_REGION must come from the context}"

token_file="$HOME/.aws/circleci-oidc-token"
mkdir -p "$(dirname "$token_file")"
umask 077
printf '%s' "$CIRCLE_OIDC_TOKEN_V2" >"$token_file"
{
  echo "export AWS_ROLE_ARN='$role_arn'"
  echo "export AWS_WEB_IDENTITY_TOKEN_FILE='$token_file'"
  echo "export AWS_ROLE_SESSION_NAME='circleci-${CIRCLE_PROJECT_REPONAME:-ratecast}-${CIRCLE_BUILD_NUM:-local}'"
  echo "export AWS_DEFAULT_REGION='$AWS_REGION'"
} >>"$BASH_ENV"

# Fail here, with a clear message, rather than in the first real AWS call.
AWS_ROLE_ARN=$role_arn AWS_WEB_IDENTITY_TOKEN_FILE=$token_file AWS_ROLE_SESSION_NAME=check \
  aws sts get-caller-identity --query Arn --output text
