# tflint, offline: only the bundled terraform ruleset (the aws ruleset plugin
# cannot be downloaded on these machines).
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
