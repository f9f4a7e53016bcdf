output "arn" {
  description = "ARN of the role (set it as the role ARN in the matching CircleCI context)."
  value       = aws_iam_role.this.arn
}

output "name" {
  description = "Name of the role."
  value       = aws_iam_role.this.name
}
