// Package e2e holds end-to-end tests of the built varve binary, driven the
// way a user drives it: `varve dev` with the CLI client commands, and
// several `varve serve` processes sharing one real etcd and one real MinIO
// bucket, with graceful drains and kill -9 crash rounds.
//
// TestMain builds ./cmd/varve once into a temporary directory; every test
// starts processes of that binary with their output captured to a file
// whose tail is part of any failure message. Nothing is mocked and nothing
// is skipped: a missing prerequisite (MinIO, a free port) fails the test
// with its reason.
//
// Environment:
//
//	VARVE_MINIO_BIN      the MinIO server binary (see internal/testenv)
//	VARVE_CRASH_ROUNDS   kill -9 rounds of TestCrashRecovery and
//	                     TestKafkaCrashExactlyOnce (default 5)
//	VARVE_ETCD_OUTAGE    how long TestEtcdOutage keeps etcd down (default 20s)
package e2e
