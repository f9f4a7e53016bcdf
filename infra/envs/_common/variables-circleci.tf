# Shared by every root (symlinked). Values come from TF_VAR_* (CircleCI contexts) or a local,
# untracked *.auto.tfvars.
variable "circleci_org_id" {
  description = "CircleCI organization ID."
  type        = string
}

variable "circleci_project_ids" {
  description = "CircleCI project IDs allowed to assume the deploy role."
  type        = list(string)
}
