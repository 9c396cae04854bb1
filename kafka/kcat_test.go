package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// These tests drive kcat (Debian package kcat: librdkafka underneath)
// against the listener of an in-process varve dev. `make tools` installs
// kcat; without it they fail and say so, never skip.

// kcatTimeout bounds one kcat run.
const kcatTimeout = 30 * time.Second

// kcatPath is kcat's path; a missing kcat fails the test with the reason.
func kcatPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed (%v): `make tools` (target kafka-clients) installs the Debian package kcat; the Kafka interoperability tests need it and are not skipped", err)
	}
	return p
}

// runKcat runs kcat with args and stdin (none when empty), bounded by
// kcatTimeout, and returns its standard output; a failure or a timeout
// fails the test with kcat's standard error.
func runKcat(t testing.TB, stdin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kcatTimeout)
	defer cancel()
	out, stderr, err := kcatCtx(ctx, kcatPath(t), stdin, args...)
	if err != nil {
		t.Fatalf("kcat %s: %v\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), err, stderr, out)
	}
	return out
}

// kcatCtx runs kcat under ctx; a run that ctx ended is an error that says
// so.
func kcatCtx(ctx context.Context, path, stdin string, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("no exit before the deadline (%w); killed: %v", ctx.Err(), err)
	}
	return o.Bytes(), e.Bytes(), err
}

// kcatMsg is a record as kcat -C -J prints it.
type kcatMsg struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	TsType    string    `json:"tstype"`
	Ts        int64     `json:"ts"`
	Headers   []*string `json:"headers"` // name, value, name, value, ...
	Key       *string   `json:"key"`
	Payload   *string   `json:"payload"`
}

// decodeKcatJSON reads kcat -J's records, one JSON object after another.
func decodeKcatJSON(t testing.TB, out []byte) []kcatMsg {
	t.Helper()
	var msgs []kcatMsg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m kcatMsg
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return msgs
		}
		if err != nil {
			t.Fatalf("kcat -J output after %d records: %v\n%s", len(msgs), err, out)
		}
		msgs = append(msgs, m)
	}
}

// kcatWant is a record a test expects at a partition and offset.
type kcatWant struct {
	p       int32
	off     int64
	key     string
	value   string
	headers []kcatHeader
}

// kcatHeader is a header; null marks a null value.
type kcatHeader struct {
	k, v string
	null bool
}

func (h kcatHeader) String() string {
	if h.null {
		return h.k + "=NULL"
	}
	return h.k + "=" + h.v
}

// headersOfKcat pairs kcat's flat header list.
func headersOfKcat(t testing.TB, flat []*string) []kcatHeader {
	t.Helper()
	if len(flat)%2 != 0 {
		t.Fatalf("kcat headers %v: not name/value pairs", flat)
	}
	var hs []kcatHeader
	for i := 0; i < len(flat); i += 2 {
		if flat[i] == nil {
			t.Fatalf("kcat header %d without a name", i/2)
		}
		h := kcatHeader{k: *flat[i], null: flat[i+1] == nil}
		if flat[i+1] != nil {
			h.v = *flat[i+1]
		}
		hs = append(hs, h)
	}
	return hs
}

// checkKcatRecords compares kcat -J's records of topic with wants, every
// one: partition, offset, key, value, headers, and a CreateTime
// timestamp within [from, to].
func checkKcatRecords(t testing.TB, topic string, got []kcatMsg, wants []kcatWant, from, to time.Time) {
	t.Helper()
	byAt := map[[2]int64]kcatWant{}
	for _, w := range wants {
		byAt[[2]int64{int64(w.p), w.off}] = w
	}
	seen := map[[2]int64]bool{}
	for _, m := range got {
		at := [2]int64{int64(m.Partition), m.Offset}
		w, ok := byAt[at]
		if !ok {
			t.Fatalf("kcat read %s/%d@%d (key %v value %v), which was not produced", m.Topic, m.Partition, m.Offset, strOrNull(m.Key), strOrNull(m.Payload))
		}
		if seen[at] {
			t.Fatalf("kcat read %d/%d twice", m.Partition, m.Offset)
		}
		seen[at] = true
		if m.Topic != topic || m.Key == nil || *m.Key != w.key || m.Payload == nil || *m.Payload != w.value {
			t.Errorf("%d/%d: topic %q key %v value %v; want %q key %q value %q", m.Partition, m.Offset, m.Topic, strOrNull(m.Key), strOrNull(m.Payload), topic, w.key, w.value)
		}
		if hs := headersOfKcat(t, m.Headers); !slices.Equal(hs, w.headers) {
			t.Errorf("%d/%d: headers %v, want %v", m.Partition, m.Offset, hs, w.headers)
		}
		if m.TsType != "create" || m.Ts < from.UnixMilli() || m.Ts > to.UnixMilli() {
			t.Errorf("%d/%d: timestamp %s %d, want a create time in [%d, %d]", m.Partition, m.Offset, m.TsType, m.Ts, from.UnixMilli(), to.UnixMilli())
		}
	}
	if len(seen) != len(wants) {
		var missing []string
		for _, w := range wants {
			if !seen[[2]int64{int64(w.p), w.off}] {
				missing = append(missing, fmt.Sprintf("%d/%d", w.p, w.off))
			}
		}
		t.Fatalf("kcat read %d of %d records; missing %v", len(seen), len(wants), missing)
	}
}

func strOrNull(s *string) string {
	if s == nil {
		return "<null>"
	}
	return fmt.Sprintf("%q", *s)
}

// rdkafkaPartition is librdkafka's default partitioner
// (consistent_random) for a non-empty key: CRC-32 of the key modulo the
// partition count.
func rdkafkaPartition(key string, partitions int32) int32 {
	return int32(crc32.ChecksumIEEE([]byte(key)) % uint32(partitions))
}

// brokerOf asks the listener through franz-go for its Metadata: the
// broker id and address kcat must print.
func brokerOf(t testing.TB, cl *kgo.Client) (int32, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Brokers) != 1 {
		t.Fatalf("metadata lists %d brokers, want 1", len(resp.Brokers))
	}
	b := resp.Brokers[0]
	return b.NodeID, fmt.Sprintf("%s:%d", b.Host, b.Port)
}

// TestKcatMetadata: kcat -L lists the one broker (as controller) and each
// topic's partitions, led by it, in text and as JSON (-J); -t names one
// topic; an unknown topic is an error of that topic.
func TestKcatMetadata(t *testing.T) {
	kcatPath(t)
	d := startDev(t, nodeConfig())
	createTopic(t, d, "meta-a", 3)
	createTopic(t, d, "meta-b", 1)
	id, addr := brokerOf(t, newClient(t, d))
	if addr != d.KafkaAddr() {
		t.Fatalf("metadata names %s, the listener is %s", addr, d.KafkaAddr())
	}

	text := string(runKcat(t, "", "-b", d.KafkaAddr(), "-L"))
	for _, line := range []string{
		" 1 brokers:",
		fmt.Sprintf("  broker %d at %s (controller)", id, addr),
		" 2 topics:",
		`  topic "meta-a" with 3 partitions:`,
		`  topic "meta-b" with 1 partitions:`,
		fmt.Sprintf("    partition 2, leader %d, replicas: %d, isrs: %d", id, id, id),
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("kcat -L lacks the line %q:\n%s", line, text)
		}
	}

	type jsonMeta struct {
		ControllerID int32 `json:"controllerid"`
		Brokers      []struct {
			ID   int32  `json:"id"`
			Name string `json:"name"`
		} `json:"brokers"`
		Topics []struct {
			Topic      string `json:"topic"`
			Error      string `json:"error"`
			Partitions []struct {
				Partition int32 `json:"partition"`
				Leader    int32 `json:"leader"`
				Replicas  []struct {
					ID int32 `json:"id"`
				} `json:"replicas"`
				ISRs []struct {
					ID int32 `json:"id"`
				} `json:"isrs"`
			} `json:"partitions"`
		} `json:"topics"`
	}
	parse := func(out []byte) jsonMeta {
		var m jsonMeta
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("kcat -L -J: %v\n%s", err, out)
		}
		if m.ControllerID != id || len(m.Brokers) != 1 || m.Brokers[0].ID != id || m.Brokers[0].Name != addr {
			t.Fatalf("kcat -L -J: controller %d brokers %+v; want broker %d at %s", m.ControllerID, m.Brokers, id, addr)
		}
		return m
	}
	checkParts := func(m jsonMeta, wantTopics map[string]int32) {
		t.Helper()
		got := map[string]int32{}
		for _, tp := range m.Topics {
			if tp.Error != "" {
				t.Errorf("topic %s: error %q", tp.Topic, tp.Error)
			}
			got[tp.Topic] = int32(len(tp.Partitions))
			for i, p := range tp.Partitions {
				if p.Partition != int32(i) || p.Leader != id || len(p.Replicas) != 1 || p.Replicas[0].ID != id || len(p.ISRs) != 1 || p.ISRs[0].ID != id {
					t.Errorf("topic %s partition %d: %+v; want partition %d led by %d, the only replica and ISR", tp.Topic, i, p, i, id)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(wantTopics) {
			t.Errorf("kcat -L -J topics %v, want %v", got, wantTopics)
		}
	}
	checkParts(parse(runKcat(t, "", "-b", d.KafkaAddr(), "-L", "-J")), map[string]int32{"meta-a": 3, "meta-b": 1})
	checkParts(parse(runKcat(t, "", "-b", d.KafkaAddr(), "-L", "-J", "-t", "meta-b")), map[string]int32{"meta-b": 1})

	m := parse(runKcat(t, "", "-b", d.KafkaAddr(), "-L", "-J", "-t", "no-such-topic"))
	if len(m.Topics) != 1 || m.Topics[0].Topic != "no-such-topic" || m.Topics[0].Error != "Broker: Unknown topic or partition" || len(m.Topics[0].Partitions) != 0 {
		t.Fatalf("kcat -L -t no-such-topic: %+v; want the topic with Unknown topic or partition", m.Topics)
	}
}

// TestKcatProduceConsume: kcat produces keyed records with headers
// (placed by librdkafka's partitioner), records to a fixed partition
// (-p) with a null and an empty header value, and idempotent records;
// kcat reads every one back from the beginning, as JSON and in the -f
// format, at the partition and offset it was written to.
func TestKcatProduceConsume(t *testing.T) {
	kcatPath(t)
	d := startDev(t, nodeConfig())
	const topic, parts = "kcat-rt", 4
	createTopic(t, d, topic, parts)
	b := d.KafkaAddr()
	next := map[int32]int64{}
	var wants []kcatWant
	add := func(p int32, key, value string, hs ...kcatHeader) {
		wants = append(wants, kcatWant{p: p, off: next[p], key: key, value: value, headers: hs})
		next[p]++
	}
	from := time.Now().Add(-time.Second)

	// Run 1: keys decide the partition.
	var in strings.Builder
	for i := range 40 {
		key, value := fmt.Sprintf("key-%d", i%11), fmt.Sprintf("value %d: with spaces, commas and = signs", i)
		fmt.Fprintf(&in, "%s:%s\n", key, value)
		add(rdkafkaPartition(key, parts), key, value, kcatHeader{k: "source", v: "kcat"}, kcatHeader{k: "run", v: "1"})
	}
	runKcat(t, in.String(), "-b", b, "-P", "-t", topic, "-K:", "-H", "source=kcat", "-H", "run=1")

	// Run 2: a fixed partition; a header without a value is null.
	in.Reset()
	for i := range 15 {
		key, value := fmt.Sprintf("fixed-%d", i), fmt.Sprintf("v%d", i)
		fmt.Fprintf(&in, "%s:%s\n", key, value)
		add(2, key, value, kcatHeader{k: "run", v: "2"}, kcatHeader{k: "novalue", null: true}, kcatHeader{k: "empty", v: ""})
	}
	runKcat(t, in.String(), "-b", b, "-P", "-t", topic, "-p", "2", "-K:", "-H", "run=2", "-H", "novalue", "-H", "empty=")

	// Run 3: librdkafka's idempotent producer, to partition 1.
	in.Reset()
	for i := range 25 {
		key, value := fmt.Sprintf("idem-%d", i), strings.Repeat("x", i)+"!"
		fmt.Fprintf(&in, "%s:%s\n", key, value)
		add(1, key, value, kcatHeader{k: "run", v: "3"})
	}
	runKcat(t, in.String(), "-b", b, "-P", "-t", topic, "-p", "1", "-K:", "-H", "run=3", "-X", "enable.idempotence=true", "-X", "acks=all")
	to := time.Now().Add(time.Second)

	out := runKcat(t, "", "-b", b, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
	checkKcatRecords(t, topic, decodeKcatJSON(t, out), wants, from, to)

	// The README's format: each partition's lines in offset order.
	out = runKcat(t, "", "-b", b, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", `%p %o %k %s %h\n`)
	gotLines := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		p, _, _ := strings.Cut(l, " ")
		gotLines[p] = append(gotLines[p], l)
	}
	wantLines := map[string][]string{}
	for _, w := range wants {
		hs := make([]string, len(w.headers))
		for i, h := range w.headers {
			hs[i] = h.String()
		}
		p := fmt.Sprint(w.p)
		wantLines[p] = append(wantLines[p], fmt.Sprintf("%d %d %s %s %s", w.p, w.off, w.key, w.value, strings.Join(hs, ",")))
	}
	if fmt.Sprint(gotLines) != fmt.Sprint(wantLines) {
		t.Fatalf("kcat -f lines by partition:\n%v\nwant:\n%v", gotLines, wantLines)
	}

	// Reading one partition from an offset: partition 2 from offset 3.
	out = runKcat(t, "", "-b", b, "-C", "-t", topic, "-p", "2", "-o", "3", "-e", "-J", "-q")
	var p2 []kcatWant
	for _, w := range wants {
		if w.p == 2 && w.off >= 3 {
			p2 = append(p2, w)
		}
	}
	checkKcatRecords(t, topic, decodeKcatJSON(t, out), p2, from, to)

	// Offsets by time (-Q: ListOffsets): -2 the start, -1 the end, and a
	// record's timestamp the first offset at or after it.
	all := decodeKcatJSON(t, runKcat(t, "", "-b", b, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q"))
	tsAt := map[[2]int64]int64{}
	for _, m := range all {
		tsAt[[2]int64{int64(m.Partition), m.Offset}] = m.Ts
	}
	query := func(p int32, ts int64) int64 {
		t.Helper()
		out := strings.TrimSpace(string(runKcat(t, "", "-b", b, "-Q", "-t", fmt.Sprintf("%s:%d:%d", topic, p, ts))))
		var got int64
		if _, err := fmt.Sscanf(out, topic+" [%d] offset %d", new(int32), &got); err != nil {
			t.Fatalf("kcat -Q %s:%d:%d: %q: %v", topic, p, ts, out, err)
		}
		return got
	}
	for p := range int32(parts) {
		if got := query(p, -2); got != 0 {
			t.Errorf("kcat -Q %d:-2: offset %d, want 0", p, got)
		}
		if got := query(p, -1); got != next[p] {
			t.Errorf("kcat -Q %d:-1: offset %d, want %d", p, got, next[p])
		}
	}
	for _, at := range [][2]int64{{2, 3}, {1, 10}, {0, 0}} {
		x := tsAt[at]
		got := query(int32(at[0]), x)
		ts, ok := tsAt[[2]int64{at[0], got}]
		prev, hasPrev := tsAt[[2]int64{at[0], got - 1}]
		if !ok || ts < x || got > at[1] || (hasPrev && prev >= x) {
			t.Errorf("kcat -Q %d:%d (the timestamp of offset %d): offset %d, not the first at or after it", at[0], x, at[1], got)
		}
	}
	if got := query(0, to.Add(time.Hour).UnixMilli()); got != -1 {
		t.Errorf("kcat -Q for a time after every record: offset %d, want -1", got)
	}
}

// storedCodecs reads partition 0 of topic raw (kmsg Fetch) through the
// listener and returns the codec of the stored batch of every offset
// below end (attributes bits 0-2: none 0, gzip 1, snappy 2, lz4 3,
// zstd 4), and each batch's producer id.
func storedCodecs(t testing.TB, cl *kgo.Client, topic string, end int64) (codec map[int64]int16, producer map[int64]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	codec, producer = map[int64]int16{}, map[int64]int64{}
	for off := int64(0); off < end; {
		req := kmsg.NewPtrFetchRequest()
		req.MaxBytes, req.MaxWaitMillis = 10<<20, 100
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, off, 10<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("fetch answer %+v", resp)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 {
			t.Fatalf("fetch %s/0 at %d: error %d", topic, off, p.ErrorCode)
		}
		raw := p.RecordBatches
		if len(raw) == 0 {
			t.Fatalf("fetch %s/0 at %d of %d: no batches", topic, off, end)
		}
		for len(raw) >= 12 {
			var rb kmsg.RecordBatch
			if err := rb.ReadFrom(raw); err != nil {
				break // a batch cut at the answer's end
			}
			raw = raw[12+int(rb.Length):]
			for o := rb.FirstOffset; o <= rb.FirstOffset+int64(rb.LastOffsetDelta); o++ {
				codec[o], producer[o] = rb.Attributes&7, rb.ProducerID
			}
			off = rb.FirstOffset + int64(rb.LastOffsetDelta) + 1
		}
	}
	return codec, producer
}

// codecNames are Kafka's codecNames by attribute value, as librdkafka names them.
var codecNames = []string{1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

// TestKcatCompression: kcat's idempotent producer (whose batches the
// listener stores as they come) with each codec (-X compression.codec);
// kcat reads every record back, and the stored batches carry the codec
// librdkafka says it sent (-d msg): gzip, snappy and zstd compressed.
//
// librdkafka up to 2.11 (Debian bookworm has 2.0.2) compresses gzip,
// snappy and lz4 only for a broker whose ApiVersions lists Produce v0,
// which the listener does for that reason (produce.go), and lz4 only when
// it also lists FindCoordinator v0 (the group coordinator): without it,
// librdkafka sends lz4 batches uncompressed and says "Broker does not
// support compression type lz4", which the test accepts then.
// TestKcatReadsEveryCodec has kcat read stored batches of every codec.
func TestKcatCompression(t *testing.T) {
	kcat := kcatPath(t)
	d := startDev(t, nodeConfig())
	const topic = "kcat-codecNames"
	createTopic(t, d, topic, 1)
	findCoordinator := len(missingAPIs(t, newClient(t, d), []apiNeed{{10, 0, 0}})) == 0
	const per = 30
	var wants []kcatWant
	sentAs := map[int64]int16{}
	from := time.Now().Add(-time.Second)
	for ci := 1; ci < len(codecNames); ci++ {
		codec := codecNames[ci]
		var in strings.Builder
		first := int64(len(wants))
		for i := range per {
			key, value := codec, fmt.Sprintf("%s record %d %s", codec, i, strings.Repeat("compressible ", 20))
			fmt.Fprintf(&in, "%s:%s\n", key, value)
			wants = append(wants, kcatWant{p: 0, off: first + int64(i), key: key, value: value, headers: []kcatHeader{{k: "codec", v: codec}}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), kcatTimeout)
		_, stderr, err := kcatCtx(ctx, kcat, in.String(), "-b", d.KafkaAddr(), "-P", "-t", topic, "-K:", "-H", "codec="+codec,
			"-X", "compression.codec="+codec, "-X", "enable.idempotence=true", "-X", "linger.ms=50", "-d", "msg")
		cancel()
		if err != nil {
			t.Fatalf("kcat -P with %s: %v\n%s", codec, err, stderr)
		}
		// librdkafka's word for each batch it sent: "Produce MessageSet
		// with N message(s) (..., CODEC)".
		var sent []string
		n := 0
		for _, l := range strings.Split(string(stderr), "\n") {
			_, rest, ok := strings.Cut(l, "Produce MessageSet with ")
			if !ok {
				continue
			}
			var k int
			fmt.Sscanf(rest, "%d", &k)
			n += k
			i := strings.LastIndex(rest, ", ")
			sent = append(sent, strings.TrimSuffix(rest[i+2:], ")"))
		}
		if n != per {
			t.Fatalf("kcat with %s: librdkafka logged %d records sent, want %d:\n%s", codec, n, per, stderr)
		}
		var as int16
		switch {
		case !slices.ContainsFunc(sent, func(s string) bool { return s != codec }):
			as = int16(ci)
		case !slices.ContainsFunc(sent, func(s string) bool { return s != "uncompressed" }) && codec == "lz4" && !findCoordinator &&
			strings.Contains(string(stderr), "Broker does not support compression type "+codec):
			as = 0
			t.Logf("librdkafka sent lz4 batches uncompressed: it compresses lz4 only for a broker that lists FindCoordinator v0, not served yet")
		default:
			t.Fatalf("kcat with %s: librdkafka sent batches as %v:\n%s", codec, sent, stderr)
		}
		for i := range per {
			sentAs[first+int64(i)] = as
		}
	}
	to := time.Now().Add(time.Second)
	out := runKcat(t, "", "-b", d.KafkaAddr(), "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
	checkKcatRecords(t, topic, decodeKcatJSON(t, out), wants, from, to)

	stored, producer := storedCodecs(t, newClient(t, d), topic, int64(len(wants)))
	for o := range int64(len(wants)) {
		if stored[o] != sentAs[o] || producer[o] < 0 {
			t.Fatalf("offset %d (%s) is stored in a batch of codec %d (producer id %d); librdkafka sent codec %d, idempotent", o, wants[o].key, stored[o], producer[o], sentAs[o])
		}
	}
}

// TestKcatReadsEveryCodec: batches of every codec, produced by franz-go's
// idempotent producer (stored as they come, each in its codec), are read
// by kcat, every record.
func TestKcatReadsEveryCodec(t *testing.T) {
	kcatPath(t)
	d := startDev(t, nodeConfig())
	const topic = "kcat-read-codecNames"
	createTopic(t, d, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	byCodec := []kgo.CompressionCodec{1: kgo.GzipCompression(), 2: kgo.SnappyCompression(), 3: kgo.Lz4Compression(), 4: kgo.ZstdCompression()}
	const per = 25
	var wants []kcatWant
	from := time.Now().Add(-time.Second)
	for ci := 1; ci < len(codecNames); ci++ {
		codec := codecNames[ci]
		pr := newClient(t, d, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(byCodec[ci]), kgo.ProducerLinger(50*time.Millisecond))
		var recs []*kgo.Record
		index := map[*kgo.Record]int{}
		for i := range per {
			key, value := "franz-"+codec, fmt.Sprintf("%s record %d %s", codec, i, strings.Repeat("compressible ", 20))
			r := &kgo.Record{Key: []byte(key), Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "codec", Value: []byte(codec)}}}
			recs = append(recs, r)
			index[r] = len(wants)
			wants = append(wants, kcatWant{p: 0, key: key, value: value, headers: []kcatHeader{{k: "codec", v: codec}}})
		}
		res := pr.ProduceSync(ctx, recs...)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("produce with %s: %v", codec, err)
		}
		for _, r := range res {
			wants[index[r.Record]].off = r.Record.Offset
		}
		pr.Close()
	}
	to := time.Now().Add(time.Second)
	for i, w := range wants {
		if w.off != int64(i) {
			t.Fatalf("record %d acknowledged at offset %d, want %d", i, w.off, i)
		}
	}
	stored, _ := storedCodecs(t, newClient(t, d), topic, int64(len(wants)))
	for o := range int64(len(wants)) {
		if want := int16(o/per + 1); stored[o] != want {
			t.Fatalf("offset %d is stored in a batch of codec %d, want %d (%s, as produced)", o, stored[o], want, codecNames[want])
		}
	}
	out := runKcat(t, "", "-b", d.KafkaAddr(), "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
	checkKcatRecords(t, topic, decodeKcatJSON(t, out), wants, from, to)
}

// apiNeed is an API a client needs, at some version in [min, max].
type apiNeed struct{ key, min, max int16 }

// librdkafkaGroupAPIs are what librdkafka 2.0.2 needs for a balanced
// consumer (kcat -G), its feature BrokerBalancedConsumer: the listener's
// versions of each must overlap these, or librdkafka never joins (kcat
// waits "for group rebalance" forever).
var librdkafkaGroupAPIs = []apiNeed{
	{10, 0, 0}, // FindCoordinator
	{8, 1, 2},  // OffsetCommit
	{9, 1, 1},  // OffsetFetch
	{11, 0, 0}, // JoinGroup
	{14, 0, 0}, // SyncGroup
	{12, 0, 0}, // Heartbeat
	{13, 0, 0}, // LeaveGroup
}

// missingAPIs are the needs the listener's ApiVersions does not meet, as
// "Name (key) vMIN-vMAX: served ..." strings.
func missingAPIs(t testing.TB, cl *kgo.Client, needs []apiNeed) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	served := map[int16]kmsg.ApiVersionsResponseApiKey{}
	for _, k := range resp.ApiKeys {
		served[k.ApiKey] = k
	}
	var missing []string
	for _, n := range needs {
		k, ok := served[n.key]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprintf("%s (%d): not served", kmsg.NameForKey(n.key), n.key))
		case k.MinVersion > n.max || k.MaxVersion < n.min:
			missing = append(missing, fmt.Sprintf("%s (%d) v%d-v%d: served v%d-v%d", kmsg.NameForKey(n.key), n.key, n.min, n.max, k.MinVersion, k.MaxVersion))
		}
	}
	return missing
}

// TestKcatGroup: kcat's balanced consumer (-G) joins a group, is
// assigned every partition, reads every record from the beginning and
// commits on exit; the committed offsets are the ends of the partitions,
// and the group's next member reads only what was produced since.
func TestKcatGroup(t *testing.T) {
	kcat := kcatPath(t)
	d := startDev(t, nodeConfig())
	const topic, group, parts = "kcat-group", "kcat-readers", 3
	createTopic(t, d, topic, parts)
	cl := newClient(t, d)
	if missing := missingAPIs(t, cl, librdkafkaGroupAPIs); len(missing) > 0 {
		t.Fatalf("kcat -G (librdkafka) needs the group coordinator's APIs at these versions, which the listener's ApiVersions does not list: %s. This test waits on the group coordinator", strings.Join(missing, "; "))
	}
	b := d.KafkaAddr()
	next := map[int32]int64{}
	var wants []kcatWant
	produce := func(round, n int) time.Time {
		var in strings.Builder
		for i := range n {
			key, value := fmt.Sprintf("r%d-k%d", round, i), fmt.Sprintf("round %d record %d", round, i)
			fmt.Fprintf(&in, "%s:%s\n", key, value)
			p := rdkafkaPartition(key, parts)
			wants = append(wants, kcatWant{p: p, off: next[p], key: key, value: value, headers: []kcatHeader{{k: "round", v: fmt.Sprint(round)}}})
			next[p]++
		}
		runKcat(t, in.String(), "-b", b, "-P", "-t", topic, "-K:", "-H", fmt.Sprintf("round=%d", round))
		return time.Now()
	}
	// consume runs one group member until it has read n records (-c) or
	// the deadline passes: a member that never gets an assignment fails
	// the test with kcat's log, it does not hang.
	consume := func(n int) []kcatMsg {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		// No -o: kcat would seek every assigned partition there,
		// over the group's committed offsets.
		out, stderr, err := kcatCtx(ctx, kcat, "", "-b", b, "-G", group, "-X", "auto.offset.reset=earliest",
			"-c", fmt.Sprint(n), "-J", topic)
		if err != nil {
			t.Fatalf("kcat -G %s %s (to read %d records): %v\nstderr:\n%s\nstdout:\n%s", group, topic, n, err, stderr, out)
		}
		return decodeKcatJSON(t, out)
	}
	from := time.Now().Add(-time.Second)
	to := produce(1, 60).Add(time.Second)
	checkKcatRecords(t, topic, consume(60), wants, from, to)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch the offsets group %s committed: %v", group, err)
	}
	for p := range int32(parts) {
		o, ok := committed.Lookup(topic, p)
		if !ok || o.Err != nil || o.At != next[p] {
			t.Errorf("group %s committed %+v for %s/%d, want offset %d (the partition's end)", group, o, topic, p, next[p])
		}
	}

	// The next member of the group starts at the committed offsets.
	first := len(wants)
	to = produce(2, 30).Add(time.Second)
	checkKcatRecords(t, topic, consume(30), wants[first:], from, to)
}
