package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// TestCorruptBlockServesRecordsBeforeIt corrupts one block of a real
// segment object in MinIO (records 100-199 of a partition whose records
// 0-99 sit in another object) and reads across it: a fetch from offset 50
// returns the intact records 50-99, the next fetch from 100 answers
// DATA_LOSS naming the partition, the offsets and the object, and
// `varve consume --from earliest` prints records 0-99 before failing with
// that error.
func TestCorruptBlockServesRecordsBeforeIt(t *testing.T) {
	c := newCluster(t)
	listen := loopbackListen(t)
	n := c.startServe("corrupt", listen)
	a := newAPI(n.addr)
	const topic = "corrupt"
	a.createTopic(t, topic, 1)
	for batch := range 2 {
		req := &varvev1.ProduceRequest{Topic: topic}
		for i := range 100 {
			req.Records = append(req.Records, &varvev1.ProduceRecord{Record: &varvev1.Record{Value: fmt.Appendf(nil, "v%d", batch*100+i)}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := a.produce.Produce(ctx, connect.NewRequest(req))
		cancel()
		if err != nil {
			t.Fatalf("produce batch %d: %v", batch, err)
		}
	}
	// The node keeps the blocks it flushed in memory: stop it so that the
	// next one reads the bucket.
	n.stopGracefully(30 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	meta, err := metadata.Connect(ctx, metadata.Config{Endpoints: c.etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	first, _, found, _, err := meta.LookupIndex(ctx, topic, 0, 50)
	if err != nil || !found || first.Base != 0 || first.Records != 100 {
		t.Fatalf("index entry of offset 50: %+v found=%v err=%v; want the block 0-99", first, found, err)
	}
	bad, _, found, _, err := meta.LookupIndex(ctx, topic, 0, 100)
	if err != nil || !found || bad.Base != 100 || bad.Records != 100 || bad.Object == first.Object {
		t.Fatalf("index entry of offset 100: %+v found=%v err=%v; want the block 100-199 in another object than %s", bad, found, err, first.Object)
	}
	cfg := c.minio.S3Config(c.bucket)
	cfg.Prefix = "varve"
	st, err := tier.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := st.GetRange(ctx, bad.Object, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	for i := bad.Off + segment.BlockHeaderSize; i < bad.Off+bad.Len; i += 7 {
		obj[i] ^= 0xff // flip bytes in the block's payload
	}
	if err := st.Delete(ctx, bad.Object); err != nil {
		t.Fatal(err)
	}
	if err := st.PutIfAbsent(ctx, bad.Object, obj); err != nil {
		t.Fatal(err)
	}

	n = c.startServe("corrupt", listen)
	a = newAPI(n.addr)
	res, err := a.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: 0, Offset: 50, MaxBytes: 1 << 20}))
	if err != nil {
		t.Fatalf("fetch from offset 50 (records 50-99 are intact): %v", err)
	}
	recs := res.Msg.GetRecords()
	if len(recs) != 50 || recs[0].GetOffset() != 50 || recs[49].GetOffset() != 99 || string(recs[49].GetValue()) != "v99" || res.Msg.GetNextOffset() != 100 {
		t.Fatalf("fetch from offset 50: %d records, next_offset %d; want offsets 50-99 and next_offset 100", len(recs), res.Msg.GetNextOffset())
	}
	_, err = a.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: 0, Offset: 100, MaxBytes: 1 << 20}))
	if connect.CodeOf(err) != connect.CodeDataLoss {
		t.Fatalf("fetch from offset 100 (the corrupt block): %v; want DATA_LOSS", err)
	}
	for _, want := range []string{topic + "/0 offsets 100-199", bad.Object} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("fetch from offset 100: error %q does not name %q", err, want)
		}
	}

	r := runCLI(t, "", "consume", topic, "--from", "earliest", "--format", "json", "--addr", n.addr)
	got := parseConsumed(t, topic, r.stdout, r.String())
	if len(got) != 100 || got[0].Offset != 0 || got[99].Offset != 99 {
		t.Fatalf("consume printed %d records (%s); want offsets 0-99 before the corrupt block\n%s", len(got), summarize(got), r)
	}
	if r.code == 0 {
		t.Fatalf("consume across a corrupt block exited 0\n%s", r)
	}
	for _, want := range []string{"offsets 100-199", bad.Object, "data_loss"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("consume's error does not name %q\n%s", want, r)
		}
	}
	t.Logf("consume exited %d after 100 records: %s", r.code, strings.TrimSpace(r.stderr))
}
