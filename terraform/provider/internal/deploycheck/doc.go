// Package deploycheck holds only tests: it checks the container image
// recipe (Dockerfile, .dockerignore) and the contract between the ECS module
// and the varve binary (every VARVE_* variable the module sets is a real
// setting) without Docker or AWS, which are not available where `make test`
// runs: the build context is assembled through .dockerignore and the
// Dockerfile's own go build command is run on it.
package deploycheck
