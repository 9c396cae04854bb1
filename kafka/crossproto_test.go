package kafka_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
)

// Records cross between the Kafka listener and Varve's own API: what one
// side writes, the other reads identically — partition, offset, key,
// value, headers, timestamp — null and empty told apart.

// xrec is a record as a test expects it anywhere: nil key, value or
// header value is null, a non-nil empty one is empty.
type xrec struct {
	p          int32
	off        int64
	key, value []byte
	headers    []sdk.Header
	ts         int64 // ms; 0: assigned by the cluster, in [from, to]
}

// crossShape is a case of the cross tests: the record's fields but place.
type crossShape struct {
	key, value []byte
	headers    []sdk.Header
}

// crossShapes are the edge cases of both directions, then plain records.
func crossShapes() []crossShape {
	s := []crossShape{
		{key: []byte("k0"), value: []byte("v0"), headers: []sdk.Header{{Key: "a", Value: []byte("1")}}},
		{key: nil, value: []byte("null key")},
		{key: []byte{}, value: []byte("empty key")},
		{key: []byte("tombstone"), value: nil},
		{key: []byte("empty value"), value: []byte{}},
		{key: []byte("no headers"), value: []byte("x"), headers: nil},
		{key: []byte("header values"), value: []byte("y"), headers: []sdk.Header{
			{Key: "null", Value: nil}, {Key: "empty", Value: []byte{}}, {Key: "bin", Value: []byte{0, 0xff, 0x80}},
			{Key: "dup", Value: []byte("1")}, {Key: "dup", Value: []byte("2")},
		}},
		{key: []byte{0xff, 0xfe, 0}, value: []byte{0, 1, 0x80, 0xc3}, headers: []sdk.Header{{Key: "ünïcode", Value: []byte("värde")}}},
		{key: nil, value: nil},
		{key: []byte{}, value: []byte{}, headers: []sdk.Header{{Key: "only-null", Value: nil}}},
	}
	for i := range 14 {
		s = append(s, crossShape{key: []byte(fmt.Sprintf("k%d", i)), value: []byte(fmt.Sprintf("plain %d", i)),
			headers: []sdk.Header{{Key: "i", Value: []byte(fmt.Sprint(i))}}})
	}
	return s
}

// showNull shows b with null and empty apart.
func showNull(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}

func headersString(hs []sdk.Header) string {
	var out []string
	for _, h := range hs {
		out = append(out, fmt.Sprintf("%q=%s", h.Key, showNull(h.Value)))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// sameBytes is equality with null and empty apart.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// checkRecord compares a record read by reader with want; ts is the
// record's timestamp in ms.
func checkRecord(t testing.TB, reader string, want xrec, p int32, off int64, key, value []byte, hs []sdk.Header, ts int64, from, to time.Time) {
	t.Helper()
	ok := p == want.p && off == want.off && sameBytes(key, want.key) && sameBytes(value, want.value) && len(hs) == len(want.headers)
	for i := 0; ok && i < len(hs); i++ {
		ok = hs[i].Key == want.headers[i].Key && sameBytes(hs[i].Value, want.headers[i].Value)
	}
	switch {
	case want.ts != 0:
		ok = ok && ts == want.ts
	default:
		ok = ok && ts >= from.UnixMilli() && ts <= to.UnixMilli()
	}
	if !ok {
		t.Errorf("%s read %d/%d: key %s value %s headers %s ts %d\n  want %d/%d: key %s value %s headers %s ts %d (0: in [%d, %d])",
			reader, p, off, showNull(key), showNull(value), headersString(hs), ts,
			want.p, want.off, showNull(want.key), showNull(want.value), headersString(want.headers), want.ts, from.UnixMilli(), to.UnixMilli())
	}
}

// checkAll checks that reader read each of wants exactly once (got maps
// partition/offset to how many times).
func checkAll(t testing.TB, reader string, got map[[2]int64]int, wants map[[2]int64]xrec) {
	t.Helper()
	for at := range wants {
		if got[at] != 1 {
			t.Errorf("%s read %d/%d %d times, want once", reader, at[0], at[1], got[at])
		}
	}
	for at, n := range got {
		if _, ok := wants[at]; !ok {
			t.Errorf("%s read %d/%d (%d times), which was not produced", reader, at[0], at[1], n)
		}
	}
}

// buildVarve starts building cmd/varve into a temporary directory of t;
// the function it returns waits for the binary.
func buildVarve(t *testing.T) func() string {
	dir := t.TempDir()
	type built struct {
		bin string
		err error
	}
	ch := make(chan built, 1)
	go func() {
		bin, err := testenv.BuildVarve(dir)
		ch <- built{bin, err}
	}()
	var once sync.Once
	var b built
	wait := func() { once.Do(func() { b = <-ch }) }
	t.Cleanup(wait) // before dir is removed
	return func() string {
		wait()
		if b.err != nil {
			t.Fatalf("build varve: %v", b.err)
		}
		return b.bin
	}
}

// sdkClient is a Varve SDK client of d's API.
func sdkClient(t testing.TB, d *node.Dev) *sdk.Client {
	t.Helper()
	c := sdk.New(d.Addr())
	t.Cleanup(c.Close)
	return c
}

// readAllVarve reads topic every way Varve offers — Client.Fetch (the
// records form), a Consumer (stored batches), Client.Scan (Arrow) and,
// when varve is not nil, `varve scan --format jsonl` with the binary it
// returns — and checks every record against wants.
func readAllVarve(t *testing.T, d *node.Dev, varve func() string, topic string, parts int32, wants map[[2]int64]xrec, from, to time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := sdkClient(t, d)

	// Client.Fetch, partition by partition, to the acknowledged end (an
	// answer's high watermark may trail it: the fetch node's watched
	// index, while the records asked for are read through etcd).
	end := map[int32]int64{}
	for at := range wants {
		end[int32(at[0])] = max(end[int32(at[0])], at[1]+1)
	}
	got := map[[2]int64]int{}
	for p := range parts {
		for off := int64(0); off < end[p]; {
			res, err := c.Fetch(ctx, topic, p, off, 1<<20, 0)
			if err != nil {
				t.Fatalf("Client.Fetch %s/%d at %d: %v", topic, p, off, err)
			}
			if len(res.Records) == 0 {
				t.Fatalf("Client.Fetch %s/%d at %d, below the acknowledged end %d: no records (high watermark %d)", topic, p, off, end[p], res.HighWatermark)
			}
			for _, r := range res.Records {
				at := [2]int64{int64(r.Partition), r.Offset}
				got[at]++
				checkRecord(t, "Client.Fetch", wants[at], r.Partition, r.Offset, r.Key, r.Value, r.Headers, r.Timestamp.UnixMilli(), from, to)
			}
			off = res.NextOffset
		}
	}
	checkAll(t, "Client.Fetch", got, wants)

	// A Consumer of every partition from the start.
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 100 * time.Millisecond})
	defer cons.Close()
	if err := cons.SeekToStart(ctx); err != nil {
		t.Fatal(err)
	}
	got = map[[2]int64]int{}
	for n := 0; n < len(wants); {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatalf("Consumer.Poll after %d records: %v", n, err)
		}
		for _, r := range recs {
			at := [2]int64{int64(r.Partition), r.Offset}
			got[at]++
			n++
			checkRecord(t, "Consumer", wants[at], r.Partition, r.Offset, r.Key, r.Value, r.Headers, r.Timestamp.UnixMilli(), from, to)
		}
	}
	checkAll(t, "Consumer", got, wants)

	// Client.Scan: Arrow batches.
	rd, err := c.Scan(ctx, topic, sdk.ScanOptions{})
	if err != nil {
		t.Fatalf("Client.Scan: %v", err)
	}
	got = map[[2]int64]int{}
	for rd.Next() {
		rec := rd.RecordBatch()
		col := func(name string) arrow.Array {
			idx := rec.Schema().FieldIndices(name)
			if len(idx) != 1 {
				t.Fatalf("scan schema %v has no column %q", rec.Schema(), name)
			}
			return rec.Column(idx[0])
		}
		partC, offC := col("partition").(*array.Int32), col("offset").(*array.Int64)
		tsC, keyC, valC := col("timestamp").(*array.Timestamp), col("key").(*array.Binary), col("value").(*array.Binary)
		hl := col("headers").(*array.List)
		hst := hl.ListValues().(*array.Struct)
		hk, hv := hst.Field(0).(*array.String), hst.Field(1).(*array.Binary)
		bin := func(a *array.Binary, i int) []byte {
			if a.IsNull(i) {
				return nil
			}
			return append([]byte{}, a.Value(i)...)
		}
		for i := range int(rec.NumRows()) {
			var hs []sdk.Header
			s, e := hl.ValueOffsets(i)
			for j := int(s); j < int(e); j++ {
				hs = append(hs, sdk.Header{Key: hk.Value(j), Value: bin(hv, j)})
			}
			at := [2]int64{int64(partC.Value(i)), offC.Value(i)}
			got[at]++
			checkRecord(t, "Client.Scan", wants[at], partC.Value(i), offC.Value(i), bin(keyC, i), bin(valC, i), hs, int64(tsC.Value(i)), from, to)
		}
	}
	if err := rd.Err(); err != nil {
		t.Fatalf("Client.Scan: %v", err)
	}
	rd.Release()
	checkAll(t, "Client.Scan", got, wants)

	if varve == nil {
		return
	}
	// varve scan, JSON lines.
	cmd := exec.CommandContext(ctx, varve(), "scan", topic, "--addr", d.Addr(), "--format", "jsonl", "--progress", "never")
	cmd.Env = append(cmd.Environ(), "VARVE_ADDR=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("varve scan %s: %v\n%s", topic, err, stderr.Bytes())
	}
	type jsonHeader struct {
		Key           string  `json:"key"`
		Value         *string `json:"value"`
		ValueEncoding string  `json:"value_encoding"`
	}
	type jsonLine struct {
		Topic         string       `json:"topic"`
		Partition     int32        `json:"partition"`
		Offset        int64        `json:"offset"`
		Timestamp     string       `json:"timestamp"`
		Key           *string      `json:"key"`
		KeyEncoding   string       `json:"key_encoding"`
		Value         *string      `json:"value"`
		ValueEncoding string       `json:"value_encoding"`
		Headers       []jsonHeader `json:"headers"`
	}
	decode := func(s *string, enc string) []byte {
		switch {
		case s == nil:
			return nil
		case enc == "base64":
			b, err := base64.StdEncoding.DecodeString(*s)
			if err != nil {
				t.Fatalf("varve scan: %q: %v", *s, err)
			}
			return b
		case enc != "":
			t.Fatalf("varve scan: encoding %q", enc)
		}
		return []byte(*s)
	}
	got = map[[2]int64]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line jsonLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("varve scan line %q: %v", sc.Bytes(), err)
		}
		ts, err := time.Parse(time.RFC3339Nano, line.Timestamp)
		if err != nil || line.Topic != topic {
			t.Fatalf("varve scan line %q: topic %q timestamp: %v", sc.Bytes(), line.Topic, err)
		}
		var hs []sdk.Header
		for _, h := range line.Headers {
			hs = append(hs, sdk.Header{Key: h.Key, Value: decode(h.Value, h.ValueEncoding)})
		}
		at := [2]int64{int64(line.Partition), line.Offset}
		got[at]++
		checkRecord(t, "varve scan", wants[at], line.Partition, line.Offset, decode(line.Key, line.KeyEncoding), decode(line.Value, line.ValueEncoding), hs, ts.UnixMilli(), from, to)
	}
	checkAll(t, "varve scan", got, wants)
}

// TestCrossKafkaToVarve: records produced over Kafka by franz-go —
// idempotent batches (stored as they come) and plain ones (re-encoded by
// the ingest node) — with null and empty keys, tombstones and empty
// values, no headers, null and empty header values, are read identically
// through the Varve SDK (Fetch, Consumer, Scan) and `varve scan`.
func TestCrossKafkaToVarve(t *testing.T) {
	varve := buildVarve(t) // while the node starts
	d := startDev(t, nodeConfig())
	const topic, parts = "cross-kafka", 3
	createTopic(t, d, topic, parts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	idem := newClient(t, d, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	plain := newClient(t, d, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite(), kgo.ProducerLinger(5*time.Millisecond))
	wants := map[[2]int64]xrec{}
	from := time.Now().Add(-time.Second)
	base := time.Now().Add(-time.Hour).UnixMilli()
	for round, cl := range []*kgo.Client{idem, plain} {
		var recs []*kgo.Record
		index := map[*kgo.Record]int{}
		for i, s := range crossShapes() {
			r := &kgo.Record{Topic: topic, Partition: int32(i % parts), Key: s.key, Value: s.value,
				Timestamp: time.UnixMilli(base + int64(round*1000+i))}
			for _, h := range s.headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
			}
			recs = append(recs, r)
			index[r] = i
		}
		res := cl.ProduceSync(ctx, recs...) // in the order the records completed
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			i := index[r.Record]
			s := crossShapes()[i]
			wants[[2]int64{int64(r.Record.Partition), r.Record.Offset}] = xrec{p: r.Record.Partition, off: r.Record.Offset,
				key: s.key, value: s.value, headers: s.headers, ts: base + int64(round*1000+i)}
		}
	}
	readAllVarve(t, d, varve, topic, parts, wants, from, time.Now().Add(time.Second))
}

// TestCrossVarveToKafka: records produced with the Varve SDK — the
// records form (Client.Produce) and the batch form (Producer) — with the
// same edge cases, and one record of each form stamped by the cluster,
// are read identically by a franz-go consumer and by the SDK. (`varve
// scan` reads through Client.Scan, checked here; the CLI's own output is
// checked by TestCrossKafkaToVarve, which links the binary once.)
func TestCrossVarveToKafka(t *testing.T) {
	d := startDev(t, nodeConfig())
	const topic, parts = "cross-varve", 3
	createTopic(t, d, topic, parts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := sdkClient(t, d)
	wants := map[[2]int64]xrec{}
	from := time.Now().Add(-time.Second)
	base := time.Now().Add(-time.Hour).UnixMilli()
	records := func(round int) []sdk.Record {
		var recs []sdk.Record
		for i, s := range crossShapes() {
			r := sdk.Record{Topic: topic, Partition: int32(i % parts), ExplicitPartition: true, Key: s.key, Value: s.value, Headers: s.headers,
				Timestamp: time.UnixMilli(base + int64(round*1000+i))}
			if i == 5 {
				r.Timestamp = time.Time{} // "now"
			}
			recs = append(recs, r)
		}
		return recs
	}
	want := func(round, i int, p int32, off int64) {
		s := crossShapes()[i]
		w := xrec{p: p, off: off, key: s.key, value: s.value, headers: s.headers, ts: base + int64(round*1000+i)}
		if i == 5 {
			w.ts = 0
		}
		wants[[2]int64{int64(p), off}] = w
	}

	// The records form: one Produce RPC.
	offs, err := c.Produce(ctx, topic, records(0))
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range offs {
		if o.Partition != int32(i%parts) {
			t.Fatalf("record %d stored in partition %d, named %d", i, o.Partition, i%parts)
		}
		want(0, i, o.Partition, o.Offset)
	}
	// The batch form: the idempotent Producer.
	pr := c.NewProducer(sdk.ProducerOptions{})
	stored, err := pr.ProduceSync(ctx, records(1)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := pr.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, r := range stored {
		if r.Partition != int32(i%parts) {
			t.Fatalf("record %d stored in partition %d, named %d", i, r.Partition, i%parts)
		}
		want(1, i, r.Partition, r.Offset)
	}
	to := time.Now().Add(time.Second)

	cl := newClient(t, d, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[[2]int64]int{}
	stamped := map[[2]int64]int64{}
	for n := 0; n < len(wants); {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("franz-go after %d records: %v", n, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			at := [2]int64{int64(r.Partition), r.Offset}
			got[at]++
			var hs []sdk.Header
			for _, h := range r.Headers {
				hs = append(hs, sdk.Header{Key: h.Key, Value: h.Value})
			}
			if r.Attrs.TimestampType() != 0 {
				t.Errorf("franz-go read %d/%d with LogAppendTime, want CreateTime", r.Partition, r.Offset)
			}
			checkRecord(t, "franz-go", wants[at], r.Partition, r.Offset, r.Key, r.Value, hs, r.Timestamp.UnixMilli(), from, to)
			if wants[at].ts == 0 {
				stamped[at] = r.Timestamp.UnixMilli()
			}
		})
	}
	checkAll(t, "franz-go", got, wants)
	if t.Failed() {
		return
	}
	// The cluster's stamps, as franz-go read them, are what Varve reads.
	for at, ts := range stamped {
		w := wants[at]
		w.ts = ts
		wants[at] = w
	}
	readAllVarve(t, d, nil, topic, parts, wants, from, to)
}
