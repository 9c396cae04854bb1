package sdk_test

import (
	"context"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// TestAdminSharesClient: an admin client made from an sdk.Client sends
// through its options (here an interceptor), and one made by admin.New
// takes the same options; compaction is paused, reported and resumed.
func TestAdminSharesClient(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var seen []string
	record := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			mu.Lock()
			seen = append(seen, req.Spec().Procedure)
			mu.Unlock()
			return next(ctx, req)
		}
	})
	c := newClient(t, sdk.WithClientOptions(connect.WithInterceptors(record)))
	adm := admin.NewFromClient(c)
	if adm.Client() != c {
		t.Fatal("Client() is not the client given")
	}
	if _, err := adm.ListTopics(ctx); err != nil {
		t.Fatal(err)
	}
	if err := adm.PauseCompaction(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := adm.CompactionStatus(ctx, "")
	if err != nil || !st.Paused {
		t.Fatalf("status after pause: %+v, %v", st, err)
	}
	if err := adm.ResumeCompaction(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err = adm.CompactionStatus(ctx, ""); err != nil || st.Paused {
		t.Fatalf("status after resume: %+v, %v", st, err)
	}
	if _, err := adm.CompactionStatus(ctx, uniq("missing")); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("status of a missing topic: %v", err)
	}
	adm.Close() // leaves c open
	if _, err := adm.ListGroups(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := []string{"/varve.v1.TopicService/ListTopics", "/varve.v1.AdminService/PauseCompaction"}
	if len(seen) < 2 || seen[0] != want[0] || seen[1] != want[1] {
		t.Fatalf("interceptor saw %v, want %v first", seen, want)
	}
	mu.Unlock()

	own := admin.New(addr, sdk.WithGRPC())
	defer own.Close()
	if _, err := own.ListTopics(ctx); err != nil {
		t.Fatalf("admin.New with gRPC: %v", err)
	}
}
