// Package testenv starts the real servers that integration tests and
// benchmarks run against: a MinIO server (real S3) started from the binary
// that `make tools` builds, and embedded etcd. Servers are shared by the tests
// of one package and stopped by Main, which a package's TestMain calls.
//
// testenv is for tests and tools only; production code never imports it. It
// never mocks a server, and it fails (never skips) a test whose server cannot
// be started.
package testenv
