// Package modcheck holds only tests: a static check of the Terraform
// modules and examples under terraform/ (HCL parse, references, variables
// used and documented, module calls matching their modules' variables,
// templates given exactly their variables). It stands in for `terraform
// validate`, which needs the hashicorp/aws provider that cannot be
// downloaded on the machines running `make test`.
package modcheck
