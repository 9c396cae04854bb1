package metadata_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// TestRequestsCountedByCaller: varve_etcd_requests_total counts every
// unary request by method and by the caller its context names; a context
// naming none counts as "other", and a watched cache's own reads as
// "cache".
func TestRequestsCountedByCaller(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	c, err := metadata.Connect(context.Background(), metadata.Config{
		Endpoints:     testenv.StartEtcd(t),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	before := etcdRequests(t, reader)

	ctx := metadata.WithCaller(context.Background(), "test.create")
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Commit(metadata.WithCaller(context.Background(), metadata.CallerIngest), "commit-1",
		[]metadata.Append{{Topic: "t", Partition: 1, Object: "o", Off: 0, Len: 10, Records: 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTopics(context.Background()); err != nil {
		t.Fatal(err)
	}
	cache, err := c.NewCache(metadata.WithCaller(context.Background(), "test.cache"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()

	got := etcdRequests(t, reader)
	for k, n := range before {
		got[k] -= n
	}
	for _, want := range []struct{ method, caller string }{
		{"Txn", "test.create"},         // the topic's creation
		{"Txn", metadata.CallerIngest}, // the commit
		{"Range", metadata.CallerOther},
		{"Range", "test.cache"}, // the cache's first load, with its caller's context
	} {
		if got[[2]string{want.method, want.caller}] == 0 {
			t.Errorf("no %s counted for caller %q; counted %v", want.method, want.caller, got)
		}
	}
}

// etcdRequests reads varve.etcd.requests by (method, caller).
func etcdRequests(t *testing.T, r *sdkmetric.ManualReader) map[[2]string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "varve.etcd.requests" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				method, _ := dp.Attributes.Value("method")
				caller, _ := dp.Attributes.Value("caller")
				out[[2]string{method.AsString(), caller.AsString()}] += dp.Value
			}
		}
	}
	return out
}
