package sequencer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// TestContinuesFromDirectPath: a sequencer started on a cluster that
// committed directly continues each partition's offsets and each
// idempotent producer's sequences from what the direct path left.
func TestContinuesFromDirectPath(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	p, err := meta.InitProducer(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := meta.Commit(ctx, "d1", []metadata.Append{blk("t", 0, 3, pb(p.ID, 0, 0, 3, 0)), blk("t", 1, 2)}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	waitLeading(t, cl.start(Config{ID: "a"}))
	client := cl.client()
	res, err := client.Commit(ctx, "s1", []metadata.Append{blk("t", 0, 2, pb(p.ID, 0, 3, 2, 0)), blk("t", 1, 1)})
	if err != nil || res[0].Err != nil || res[0].Base != 3 || res[1].Base != 2 {
		t.Fatalf("first commit through the sequencer: %+v, %v; want bases 3 and 2", res, err)
	}
	// A retry of the direct path's batch is still a duplicate.
	res, err = client.Commit(ctx, "s2", []metadata.Append{blk("t", 0, 3, pb(p.ID, 0, 0, 3, 0))})
	if err != nil || len(res[0].Batches) != 1 || !res[0].Batches[0].Duplicate || res[0].Batches[0].Base != 0 {
		t.Fatalf("retry of a directly committed batch: %+v, %v; want a duplicate at 0", res, err)
	}
}

// TestTopicRecreated: a topic deleted and created again under the same
// name starts again at offset 0 (its id changed), as with the direct
// path; a topic grown to more partitions accepts the new ones at once.
func TestTopicRecreated(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	waitLeading(t, cl.start(Config{ID: "a"}))
	client := cl.client()
	if res, err := client.Commit(ctx, "o1", []metadata.Append{blk("t", 0, 5)}); err != nil || res[0].Base != 0 {
		t.Fatalf("first commit: %+v, %v", res, err)
	}
	if err := meta.DeleteTopic(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if res, err := client.Commit(ctx, "o2", []metadata.Append{blk("t", 0, 1)}); err != nil || !errors.Is(res[0].Err, metadata.ErrTopicNotFound) {
		t.Fatalf("commit to the deleted topic: %+v, %v", res, err)
	}
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	res, err := client.Commit(ctx, "o3", []metadata.Append{blk("t", 0, 2), blk("t", 1, 1)})
	if err != nil || res[0].Err != nil || res[0].Base != 0 || res[1].Base != 0 {
		t.Fatalf("commit to the recreated topic: %+v, %v; want base 0 on both", res, err)
	}
}

// TestDirectCommitRefusedAfterSequencer: once a sequencer term has begun
// (its marker written), a direct commit is refused with
// metadata.ErrSequencerActive and writes nothing — even after every
// sequencer stopped — while the sequencer continued from the direct
// path's offsets.
func TestDirectCommitRefusedAfterSequencer(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	if res, err := meta.Commit(ctx, "d1", []metadata.Append{blk("t", 0, 3), blk("t", 1, 2)}); err != nil || res[0].Base != 0 || res[1].Base != 0 {
		t.Fatalf("direct commit before any sequencer: %+v, %v", res, err)
	}
	cl := newCluster(t, meta)
	waitLeading(t, cl.start(Config{ID: "a"}))
	res, err := cl.client().Commit(ctx, "s1", []metadata.Append{blk("t", 0, 1)})
	if err != nil || res[0].Err != nil || res[0].Base != 3 {
		t.Fatalf("commit through the sequencer: %+v, %v; want base 3", res, err)
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: meta.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	refused := func(when string) {
		t.Helper()
		before := revision(t, meta)
		res, err := meta.Commit(ctx, "d2-"+when, []metadata.Append{blk("t", 0, 1), blk("t", 1, 1)})
		if !errors.Is(err, metadata.ErrSequencerActive) {
			t.Fatalf("direct commit %s: err %v; want ErrSequencerActive", when, err)
		}
		for i, r := range res {
			if r.Base != -1 || !errors.Is(r.Err, metadata.ErrSequencerActive) {
				t.Fatalf("direct commit %s, block %d: %+v; want refused with ErrSequencerActive", when, i, r)
			}
		}
		if got := err.Error(); !strings.Contains(got, "the cluster commits through the sequencer; set commit_path: sequencer") {
			t.Fatalf("direct commit %s: error %q does not say what to do", when, got)
		}
		// Nothing written: no key changed since, but the election's own.
		changed, err := etcd.Get(ctx, "/varve/", clientv3.WithPrefix(), clientv3.WithMinModRev(before+1), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range changed.Kvs {
			if !strings.HasPrefix(string(kv.Key), "/varve/elections/") {
				t.Fatalf("direct commit %s wrote %s", when, kv.Key)
			}
		}
	}
	refused("while the sequencer leads")
	cl.kill("a")
	if !testenv.Eventually(30*time.Second, func() bool { return !cl.node("a").Leading() }) {
		t.Fatal("the sequencer did not stop")
	}
	refused("after the sequencer stopped")
}
