package seqlog_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

func connect(t *testing.T) *metadata.Client {
	t.Helper()
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func record(batch uint64, term int64, id string) *seqlog.Record {
	return &seqlog.Record{Batch: batch, Term: term, TopicIDs: map[string]string{"t": "tid"}, Commits: []seqlog.Commit{{
		ID:      id,
		Appends: []metadata.Append{{Topic: "t", Partition: 0, Object: id, Len: 10, Records: 2}},
		Results: []metadata.AppendResult{{Base: int64(batch-1) * 2}},
	}}}
}

// TestStaleTermFenced: once a leader's term ends (its session closed, as
// when it dies) and another node is elected, the old leader's write is
// refused with ErrNotLeader and leaves nothing; the new term's write
// goes through, and recovery sees the checkpoint plus the records after it.
func TestStaleTermFenced(t *testing.T) {
	ctx := context.Background()
	log := seqlog.New(connect(t))
	old, err := log.Campaign(ctx, "a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := log.Leader(ctx); err != nil || id != "a" {
		t.Fatalf("leader %q, %v; want a", id, err)
	}
	if _, err := old.Append(ctx, record(1, old.Number(), "o1"), seqlog.Fence{}); err != nil {
		t.Fatal(err)
	}
	if err := old.WriteCheckpoint(ctx, &seqlog.Checkpoint{Batch: 1, Commits: []seqlog.CommitRef{{ID: "o1", Batch: 1}}, Topics: []seqlog.TopicState{{Name: "t", ID: "tid", Next: []int64{2}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Append(ctx, record(2, old.Number(), "o2"), seqlog.Fence{}); err != nil {
		t.Fatal(err)
	}
	// A second candidate waits; the first one's lease goes.
	won := make(chan *seqlog.Term, 1)
	go func() {
		nt, err := log.Campaign(ctx, "b", 2*time.Second)
		if err != nil {
			t.Error(err)
		}
		won <- nt
	}()
	if err := old.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	nt := <-won
	if nt == nil || nt.Number() <= old.Number() {
		t.Fatalf("new term %v does not follow %d", nt, old.Number())
	}
	if _, err := old.Append(ctx, record(3, old.Number(), "stale"), seqlog.Fence{}); !errors.Is(err, seqlog.ErrNotLeader) {
		t.Fatalf("stale leader's append: %v, want ErrNotLeader", err)
	}
	if err := old.WriteCheckpoint(ctx, &seqlog.Checkpoint{Batch: 3}); !errors.Is(err, seqlog.ErrNotLeader) {
		t.Fatalf("stale leader's checkpoint: %v, want ErrNotLeader", err)
	}
	if _, err := nt.Append(ctx, record(2, nt.Number(), "dup"), seqlog.Fence{}); !errors.Is(err, seqlog.ErrNotLeader) {
		t.Fatalf("second record for batch 2: %v, want refused", err)
	}
	if _, err := nt.Append(ctx, record(3, nt.Number(), "n3"), seqlog.Fence{}); err != nil {
		t.Fatal(err)
	}
	cp, recs, err := log.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp == nil || cp.Batch != 1 || len(cp.Commits) != 1 || len(recs) != 2 || recs[0].Commits[0].ID != "o2" || recs[1].Commits[0].ID != "n3" {
		t.Fatalf("recovered checkpoint %+v and %d records", cp, len(recs))
	}
}

// TestFenceOnTopicsAndProducers: a batch decided against topics or
// producers read at some revision is refused (ErrStale) once any of them
// changed.
func TestFenceOnTopicsAndProducers(t *testing.T) {
	ctx := context.Background()
	meta := connect(t)
	log := seqlog.New(meta)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	p, err := meta.InitProducer(ctx, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	term, err := log.Campaign(ctx, "a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tops, trev, err := log.LoadTopics(ctx, []string{"t", "missing"})
	if err != nil || tops["t"].Topic == nil || tops["missing"].Topic != nil {
		t.Fatalf("topics %v, %v", tops, err)
	}
	infos, prev, err := log.LoadProducers(ctx, []int64{p.ID, 999}, nil)
	if err != nil || !infos[p.ID].Known || infos[999].Known {
		t.Fatalf("producers %v, %v", infos, err)
	}
	if _, err := meta.InitProducer(ctx, p.ID, time.Hour); err != nil { // epoch bump
		t.Fatal(err)
	}
	if _, err := term.Append(ctx, record(1, term.Number(), "x"), seqlog.Fence{TopicsRev: trev, ProducersRev: prev}); !errors.Is(err, seqlog.ErrStale) {
		t.Fatalf("after an epoch bump: %v, want ErrStale", err)
	}
	_, prev, _ = log.LoadProducers(ctx, []int64{p.ID}, nil)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "missing", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := term.Append(ctx, record(1, term.Number(), "x"), seqlog.Fence{TopicsRev: trev, ProducersRev: prev}); !errors.Is(err, seqlog.ErrStale) {
		t.Fatalf("after a topic was created: %v, want ErrStale", err)
	}
	_, trev, _ = log.LoadTopics(ctx, []string{"t"})
	if _, err := term.Append(ctx, record(1, term.Number(), "x"), seqlog.Fence{TopicsRev: trev, ProducersRev: prev}); err != nil {
		t.Fatalf("fresh fence: %v", err)
	}
}

// TestCheckpointWithBatch: AppendCheckpoint writes a checkpoint (of a
// batch before its record) in the record's own transaction, makes it
// current and drops the older checkpoint's chunks; recovery reads it and
// the records after. A checkpoint that does not fit beside the record is
// left out (the record is written alone), and a stale term writes neither.
func TestCheckpointWithBatch(t *testing.T) {
	ctx := context.Background()
	meta := connect(t)
	log := seqlog.New(meta)
	term, err := log.Campaign(ctx, "a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := term.Append(ctx, record(1, term.Number(), "o1"), seqlog.Fence{}); err != nil {
		t.Fatal(err)
	}
	if err := term.WriteCheckpoint(ctx, &seqlog.Checkpoint{Batch: 1, Commits: []seqlog.CommitRef{{ID: "o1", Batch: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := term.Append(ctx, record(2, term.Number(), "o2"), seqlog.Fence{}); err != nil {
		t.Fatal(err)
	}
	st0, err := meta.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp2 := &seqlog.Checkpoint{Batch: 2, Commits: []seqlog.CommitRef{{ID: "o1", Batch: 1}, {ID: "o2", Batch: 2}}, Topics: []seqlog.TopicState{{Name: "t", ID: "tid", Next: []int64{4}}}}
	if _, ok, err := term.AppendCheckpoint(ctx, record(3, term.Number(), "o3"), seqlog.Fence{}, cp2); err != nil || !ok {
		t.Fatalf("append with a checkpoint: written %v, %v", ok, err)
	}
	st1, err := meta.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st1.Revision != st0.Revision+1 {
		t.Fatalf("record and checkpoint took revisions %d..%d, want one transaction", st0.Revision, st1.Revision)
	}
	cp, recs, err := log.Recover(ctx)
	if err != nil || cp == nil || cp.Batch != 2 || len(cp.Commits) != 2 || len(recs) != 1 || recs[0].Batch != 3 {
		t.Fatalf("recovered checkpoint %+v and %d records, %v; want checkpoint 2 and record 3", cp, len(recs), err)
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: meta.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if r, err := raw.Get(ctx, "/varve/seq/checkpoints/", clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("checkpoint chunks left: %v, %v; want the current one's only", r, err)
	}

	// A record and a checkpoint too big to share a transaction.
	big := record(4, term.Number(), "o4")
	big.Commits[0].Appends[0].Object = string(randomBytes(seqlog.MaxRecordBytes - 64<<10))
	cp3 := &seqlog.Checkpoint{Batch: 3, Commits: []seqlog.CommitRef{{ID: string(randomBytes(128 << 10)), Batch: 3}}}
	if _, ok, err := term.AppendCheckpoint(ctx, big, seqlog.Fence{}, cp3); err != nil || ok {
		t.Fatalf("append of a big record with a big checkpoint: checkpoint written %v, %v; want the record alone", ok, err)
	}
	if cp, recs, err := log.Recover(ctx); err != nil || cp.Batch != 2 || len(recs) != 2 {
		t.Fatalf("after the big record: checkpoint %d and %d records, %v; want 2 and 2", cp.Batch, len(recs), err)
	}
	if err := term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := term.AppendCheckpoint(ctx, record(5, term.Number(), "o5"), seqlog.Fence{}, &seqlog.Checkpoint{Batch: 4}); !errors.Is(err, seqlog.ErrNotLeader) {
		t.Fatalf("stale term's append with a checkpoint: %v, want ErrNotLeader", err)
	}
	if cp, recs, err := log.Recover(ctx); err != nil || cp.Batch != 2 || len(recs) != 2 {
		t.Fatalf("after the stale term: checkpoint %d and %d records, %v; want 2 and 2", cp.Batch, len(recs), err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}
