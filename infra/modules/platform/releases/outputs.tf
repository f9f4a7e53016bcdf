output "names" {
  description = "Names of the installed releases."
  value       = [for r in helm_release.this : r.name]
}
