package maintenance_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
)

// client is a metadata client with its maintenance view, so that one
// value commits and maintains.
type client struct {
	*metadata.Client
	*maintenance.Etcd
}

func connect(t *testing.T) client {
	t.Helper()
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return client{c, maintenance.New(c)}
}

func TestReferencedObjects(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	// More entries than one page of the paged read.
	const parts, commits = 100, 52
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "refs", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range commits {
		obj := fmt.Sprintf("segments/o%03d.vseg", i)
		want[obj] = true
		appends := make([]metadata.Append, parts)
		for p := range appends {
			appends[p] = metadata.Append{Topic: "refs", Partition: int32(p), Object: obj, Off: int64(p) * 10, Len: 10, Records: 1}
		}
		if _, err := c.Commit(ctx, obj, appends); err != nil {
			t.Fatal(err)
		}
	}
	refs, rev, err := c.ReferencedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev <= 0 || len(refs) != len(want) {
		t.Fatalf("got %d referenced objects at revision %d, want %d", len(refs), rev, len(want))
	}
	for o := range want {
		if _, ok := refs[o]; !ok {
			t.Fatalf("object %s is referenced but missing from the set", o)
		}
	}
	// Dropping a topic's index unreferences its objects.
	if err := c.DeleteTopic(ctx, "refs"); err != nil {
		t.Fatal(err)
	}
	refs, _, err = c.ReferencedObjects(ctx)
	if err != nil || len(refs) != 0 {
		t.Fatalf("after topic delete: %d referenced, %v", len(refs), err)
	}
}

func TestCompactHistoryAndStorageStats(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "h", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		commitBlock(t, c.Client, "h", 0, fmt.Sprintf("o%d", i), 1, 0, 1)
	}
	before, err := c.StorageStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Keys < 201 || before.DBSize <= 0 || before.DBSizeInUse <= 0 || before.Revision <= 200 {
		t.Fatalf("storage stats %+v", before)
	}
	rev, err := c.Revision(ctx)
	if err != nil || rev != before.Revision {
		t.Fatalf("revision %d (%v), stats said %d", rev, err, before.Revision)
	}
	if err := c.CompactHistory(ctx, rev); err != nil {
		t.Fatal(err)
	}
	// Compacting to a revision already compacted is fine.
	if err := c.CompactHistory(ctx, rev-10); err != nil {
		t.Fatalf("compact below the compacted revision: %v", err)
	}
	if err := c.CompactHistory(ctx, 0); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("compact at 0: %v, want invalid argument", err)
	}
	if err := c.Defragment(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := c.StorageStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Keys != before.Keys {
		t.Fatalf("keys changed by history compaction: %d → %d", before.Keys, after.Keys)
	}
	if after.DBSize >= before.DBSize {
		t.Fatalf("database did not shrink after compaction and defrag: %d → %d bytes", before.DBSize, after.DBSize)
	}
	// History before the compacted revision is gone.
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Get(ctx, "/varve/", clientv3.WithPrefix(), clientv3.WithRev(rev-1)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("read at revision %d after compacting to %d: %v, want ErrCompacted", rev-1, rev, err)
	}
}

func TestCampaign(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	a, err := c.Campaign(ctx, "janitor", "a", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	won := make(chan *maintenance.Leadership, 1)
	go func() {
		b, err := c.Campaign(ctx, "janitor", "b", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		won <- b
	}()
	select {
	case <-won:
		t.Fatal("b won the election while a leads")
	case <-time.After(200 * time.Millisecond):
		// b is still waiting: the expected outcome (this is a negative check
		// with a bound, not synchronisation).
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a's leadership did not end after Resign")
	}
	b := <-won
	if b == nil {
		t.Fatal("b did not win")
	}
	if err := b.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	// A cancelled campaign returns the context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Campaign(cctx, "janitor", "c", time.Second); err == nil {
		t.Fatal("campaign with a cancelled context succeeded")
	}
}

// commitBlock commits one block of n records, the newest at maxTS, of size
// bytes to topic/p and returns its base offset.
func commitBlock(t *testing.T, c *metadata.Client, topic string, p int32, object string, n, maxTS, size int64) int64 {
	t.Helper()
	res, err := c.Commit(context.Background(), object, []metadata.Append{{
		Topic: topic, Partition: p, Object: object, Off: 0, Len: size, Records: n, MinTS: maxTS - 1, MaxTS: maxTS, RawBytes: size,
	}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("commit %s: %v %v", object, err, res)
	}
	return res[0].Base
}
