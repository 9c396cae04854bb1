package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// sent is one record a producer goroutine sent, and what became of it.
type sent struct {
	partition int32
	value     string
	acked     bool
	offset    int64
}

// TestTwoServeNodesSamePartitions runs two `varve serve` ingest processes on
// one etcd and one bucket, with producers writing the same partitions
// through both at once (Invariants 2 and 4: any ingest node accepts writes
// for any partition; offsets stay dense with no duplicate).
func TestTwoServeNodesSamePartitions(t *testing.T) {
	const (
		topic         = "shared"
		partitions    = 4
		perNode       = 4
		batchesPerGor = 300
		maxBatch      = 20
	)
	c := newCluster(t)
	nodes := []*serveNode{
		c.startServe("node-a", loopbackListen(t), "--linger", "10ms"),
		c.startServe("node-b", loopbackListen(t), "--linger", "10ms"),
	}
	apis := []*api{newAPI(nodes[0].addr), newAPI(nodes[1].addr)}
	apis[0].createTopic(t, topic, partitions)

	start := time.Now()
	var wg sync.WaitGroup
	results := make([][]sent, perNode*len(nodes))
	errs := make(chan error, len(results))
	for gid := range results {
		a := apis[gid%len(apis)]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(gid), 42))
			seq := 0
			for b := range batchesPerGor {
				n := 1 + rng.IntN(maxBatch)
				req := &varvev1.ProduceRequest{Topic: topic}
				batch := make([]sent, n)
				for i := range n {
					p := rng.Int32N(partitions)
					v := fmt.Sprintf("p%d-%d", gid, seq)
					seq++
					batch[i] = sent{partition: p, value: v}
					req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: []byte(v)}})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := a.produce.Produce(ctx, connect.NewRequest(req))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("producer %d batch %d (%d records) to %s: %w", gid, b, n, a.addr, err)
					return
				}
				if bad := checkAnswer(batch, res.Msg.GetResults()); bad != "" {
					errs <- fmt.Errorf("producer %d batch %d to %s: %s", gid, b, a.addr, bad)
					return
				}
				results[gid] = append(results[gid], batch...)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	total := 0
	for _, r := range results {
		total += len(r)
	}
	t.Logf("%d producers sent %d batches, %d records acknowledged, in %v", len(results), len(results)*batchesPerGor, total, time.Since(start).Round(time.Millisecond))

	logA := apis[0].readAll(t, topic)
	logB := apis[1].readAll(t, topic)
	sameLogs(t, nodes[0].id, logA, nodes[1].id, logB)
	n := checkLog(t, logA, results)
	if n.unexpected > 0 || n.unknownLanded > 0 {
		t.Fatalf("log holds records nobody sent: %+v", n)
	}
	if n.inLog != total {
		t.Fatalf("log holds %d records, %d were acknowledged", n.inLog, total)
	}
}

// logCheck counts what checkLog found.
type logCheck struct {
	inLog         int
	acked         int
	unknown       int // sent, answered with an error or not answered
	unknownLanded int // of those, in the log
	unexpected    int
}

// checkLog proves, for a log read back and what producers sent (per
// producer goroutine, in send order):
//   - offsets are dense (readPartition has checked offset == position);
//   - no value appears twice;
//   - every acknowledged record is at exactly its acknowledged offset;
//   - a record that was not acknowledged appears at most once;
//   - per producer and partition, acknowledged records appear in send order;
//   - every value in the log was sent by someone.
func checkLog(t testing.TB, logs [][]logRecord, producers [][]sent) logCheck {
	t.Helper()
	type where struct {
		p   int32
		off int64
	}
	at := make(map[string]where)
	var c logCheck
	for p, recs := range logs {
		for i, r := range recs {
			if r.offset != int64(i) {
				t.Fatalf("partition %d: position %d holds offset %d", p, i, r.offset)
			}
			if prev, dup := at[r.value]; dup {
				t.Fatalf("value %q appears twice: partition %d offset %d and partition %d offset %d", r.value, prev.p, prev.off, p, r.offset)
			}
			at[r.value] = where{int32(p), r.offset}
			c.inLog++
		}
	}
	seen := 0
	for gid, recs := range producers {
		last := make(map[int32]int64) // partition -> offset of the last acked record
		for _, s := range recs {
			w, ok := at[s.value]
			if ok {
				seen++
			}
			if !s.acked {
				c.unknown++
				if ok {
					c.unknownLanded++
					if w.p != s.partition {
						t.Fatalf("unacknowledged record %q sent to partition %d is on partition %d", s.value, s.partition, w.p)
					}
				}
				continue
			}
			c.acked++
			if !ok {
				t.Fatalf("acknowledged record %q (partition %d offset %d) is not in the log; partition %d holds %d records", s.value, s.partition, s.offset, s.partition, len(logs[s.partition]))
			}
			if w.p != s.partition || w.off != s.offset {
				got := logs[s.partition]
				hint := ""
				if s.offset < int64(len(got)) {
					hint = fmt.Sprintf("; offset %d holds %q", s.offset, got[s.offset].value)
				}
				t.Fatalf("acknowledged record %q: acked at %d/%d, found at %d/%d%s", s.value, s.partition, s.offset, w.p, w.off, hint)
			}
			if prev, ok := last[s.partition]; ok && s.offset <= prev {
				t.Fatalf("producer %d, partition %d: record %q acked at offset %d after an earlier record at offset %d (send order broken)", gid, s.partition, s.value, s.offset, prev)
			}
			last[s.partition] = s.offset
		}
	}
	c.unexpected = c.inLog - seen
	return c
}
