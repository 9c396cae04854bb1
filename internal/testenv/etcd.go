package testenv

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/varve-io/varve/metadata/embedded"
)

// StartEtcd starts a fresh, real etcd server in this process with its data in
// a temporary directory and loopback ports, and stops it when the test ends.
// It returns the client endpoints.
func StartEtcd(tb testing.TB) []string {
	tb.Helper()
	e, err := embedded.Start(embedded.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(e.Close)
	return e.Endpoints()
}

// EtcdTxns is how many Txn RPCs the etcd servers embedded in this process
// (StartEtcd) have handled so far, from the gRPC server's own counter
// (grpc_server_handled_total), so a test can count what an operation
// costs etcd.
func EtcdTxns(tb testing.TB) float64 {
	tb.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	n, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == "Txn" {
					n += m.GetCounter().GetValue()
					found = true
				}
			}
		}
	}
	if !found {
		tb.Fatal("no grpc_server_handled_total{grpc_method=\"Txn\"}: is etcd embedded?")
	}
	return n
}
