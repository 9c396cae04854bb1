package kafka_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/kafka"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
)

// Bad input over the wire: requests a well-behaved client never sends,
// made by hand (kmsg requests through franz-go's Broker.Request, or raw
// frames on a TCP connection). Each is answered with the error a Kafka
// broker gives, or ends its connection with a logged reason, and the
// listener goes on serving everyone else.

// logBuf collects a node's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("VARVE_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.b.Write(p)
}

// waitFor waits up to 5s for a log line holding every one of parts.
func (l *logBuf) waitFor(t testing.TB, parts ...string) {
	t.Helper()
	var lines []string
	found := testenv.EventuallyEvery(5*time.Second, 10*time.Millisecond, func() bool {
		l.mu.Lock()
		lines = strings.Split(l.b.String(), "\n")
		l.mu.Unlock()
		for _, line := range lines {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("no log line with %q; the log:\n%s", parts, strings.Join(lines, "\n"))
	}
}

// startDevLogged is startDev with the node's log (debug and up) kept.
func startDevLogged(t testing.TB) (*node.Dev, *logBuf) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := nodeConfig()
	cfg.Linger = 20 * time.Millisecond
	d, err := node.StartDev(ctx, node.DevConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Node: cfg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	if d.KafkaAddr() == "" {
		t.Fatal("varve dev opened no Kafka listener")
	}
	return d, lb
}

// rawBatch is a RecordBatch v2 of records with the given values (no key,
// no headers), timestamps from ts, without a producer, its CRC-32C right.
func rawBatch(ts int64, values ...[]byte) []byte {
	var recs []byte
	for i, v := range values {
		var r []byte
		r = append(r, 0)                    // attributes
		r = kbin.AppendVarlong(r, int64(i)) // timestampDelta
		r = kbin.AppendVarint(r, int32(i))  // offsetDelta
		r = kbin.AppendVarint(r, -1)        // key: null
		r = kbin.AppendVarintBytes(r, v)    // value
		r = kbin.AppendVarint(r, 0)         // headers
		recs = kbin.AppendVarint(recs, int32(len(r)))
		recs = append(recs, r...)
	}
	b := binary.BigEndian.AppendUint64(nil, 0)                 // baseOffset
	b = binary.BigEndian.AppendUint32(b, uint32(49+len(recs))) // batchLength
	b = binary.BigEndian.AppendUint32(b, 0xffffffff)           // partitionLeaderEpoch
	b = append(b, 2)                                           // magic
	crcAt := len(b)
	b = binary.BigEndian.AppendUint32(b, 0)                               // crc, below
	b = binary.BigEndian.AppendUint16(b, 0)                               // attributes
	b = binary.BigEndian.AppendUint32(b, uint32(len(values)-1))           // lastOffsetDelta
	b = binary.BigEndian.AppendUint64(b, uint64(ts))                      // baseTimestamp
	b = binary.BigEndian.AppendUint64(b, uint64(ts+int64(len(values)-1))) // maxTimestamp
	b = binary.BigEndian.AppendUint64(b, 0xffffffffffffffff)              // producerId
	b = binary.BigEndian.AppendUint16(b, 0xffff)                          // producerEpoch
	b = binary.BigEndian.AppendUint32(b, 0xffffffff)                      // baseSequence
	b = binary.BigEndian.AppendUint32(b, uint32(len(values)))             // recordCount
	b = append(b, recs...)
	binary.BigEndian.PutUint32(b[crcAt:], crc32.Checksum(b[crcAt+4:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// produceRaw sends one Produce request (acks=-1) of batches, partition
// → records, to the broker cl bootstrapped through, and returns each
// partition's answer.
func produceRaw(t testing.TB, cl *kgo.Client, topic string, batches map[int32][]byte) map[int32]kmsg.ProduceResponseTopicPartition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	for p, b := range batches {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p, b
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	seeds := cl.SeedBrokers()
	if len(seeds) != 1 {
		t.Fatalf("%d seed brokers", len(seeds))
	}
	kresp, err := seeds[0].Request(ctx, req)
	if err != nil {
		t.Fatalf("produce request: %v", err)
	}
	resp := kresp.(*kmsg.ProduceResponse)
	out := map[int32]kmsg.ProduceResponseTopicPartition{}
	for _, t2 := range resp.Topics {
		if t2.Topic != topic {
			t.Fatalf("produce answer for topic %q, asked %q", t2.Topic, topic)
		}
		for _, p := range t2.Partitions {
			out[p.Partition] = p
		}
	}
	if len(out) != len(batches) {
		t.Fatalf("produce answer has %d partitions, asked %d: %+v", len(out), len(batches), resp)
	}
	return out
}

// wireEndOffsets are topic's high watermarks.
func wireEndOffsets(t testing.TB, cl *kgo.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	res.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		out[o.Partition] = o.Offset
	})
	return out
}

func kerrName(code int16) string {
	if code == 0 {
		return "NONE"
	}
	if err := kerr.ErrorForCode(code); err != nil {
		return err.Error()
	}
	return "?"
}

// TestWireProduceErrors: hand-made Produce requests with an unknown
// topic or partition, a record over the topic's max_record_bytes, a
// batch whose CRC or records are corrupt, or a header with an empty key
// are each answered with Kafka's error code, store nothing (the high
// watermarks stay), and leave the listener serving; a bad partition fails
// alone, its request's good ones are stored.
func TestWireProduceErrors(t *testing.T) {
	d := startDev(t, nodeConfig())
	const topic = "wire"
	if _, err := d.Meta().CreateTopic(context.Background(), metadata.Topic{Name: topic, Partitions: 3, MaxRecordBytes: 1024}); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, d)
	ts := time.Now().UnixMilli()

	// Good batches first: the hand-made batch is right, and every
	// partition has a record.
	res := produceRaw(t, cl, topic, map[int32][]byte{0: rawBatch(ts, []byte("a")), 1: rawBatch(ts, []byte("b"), []byte("c")), 2: rawBatch(ts, []byte("d"))})
	for p, r := range res {
		if r.ErrorCode != 0 || r.BaseOffset != 0 {
			t.Fatalf("good batch to %d: %s, base offset %d", p, kerrName(r.ErrorCode), r.BaseOffset)
		}
	}
	hw := wireEndOffsets(t, cl, topic)
	if hw[0] != 1 || hw[1] != 2 || hw[2] != 1 {
		t.Fatalf("end offsets %v after the good batches", hw)
	}

	// expect sends batches and wants code for every partition, and no
	// high watermark moved.
	expect := func(t *testing.T, batches map[int32][]byte, code int16) {
		t.Helper()
		for p, r := range produceRaw(t, cl, topic, batches) {
			if r.ErrorCode != code || r.BaseOffset != -1 {
				t.Errorf("partition %d: %s (base offset %d, message %v), want %s", p, kerrName(r.ErrorCode), r.BaseOffset, strOrNull(r.ErrorMessage), kerrName(code))
			}
		}
		if now := wireEndOffsets(t, cl, topic); len(now) != 3 || now[0] != hw[0] || now[1] != hw[1] || now[2] != hw[2] {
			t.Fatalf("end offsets %v after a refused produce, were %v", now, hw)
		}
	}

	t.Run("unknown topic", func(t *testing.T) {
		res := produceRaw(t, cl, "no-such-topic", map[int32][]byte{0: rawBatch(ts, []byte("x"))})
		if r := res[0]; r.ErrorCode != kerr.UnknownTopicOrPartition.Code || r.BaseOffset != -1 {
			t.Fatalf("produce to an unknown topic: %s (base offset %d), want UNKNOWN_TOPIC_OR_PARTITION", kerrName(r.ErrorCode), r.BaseOffset)
		}
		if _, err := d.Meta().GetTopic(context.Background(), "no-such-topic"); !errors.Is(err, metadata.ErrTopicNotFound) {
			t.Fatalf("the topic after a produce to it: %v, want not found (no auto-create)", err)
		}
	})
	t.Run("unknown partition", func(t *testing.T) {
		expect(t, map[int32][]byte{3: rawBatch(ts, []byte("x"))}, kerr.UnknownTopicOrPartition.Code)
		expect(t, map[int32][]byte{-1: rawBatch(ts, []byte("x"))}, kerr.UnknownTopicOrPartition.Code)
		expect(t, map[int32][]byte{1 << 30: rawBatch(ts, []byte("x"))}, kerr.UnknownTopicOrPartition.Code)
	})
	t.Run("record too large", func(t *testing.T) {
		expect(t, map[int32][]byte{1: rawBatch(ts, bytes.Repeat([]byte("x"), 2000))}, kerr.MessageTooLarge.Code)
		// One record over the limit among small ones fails the batch.
		expect(t, map[int32][]byte{1: rawBatch(ts, []byte("ok"), bytes.Repeat([]byte("x"), 1100), []byte("ok"))}, kerr.MessageTooLarge.Code)
	})
	t.Run("corrupt CRC", func(t *testing.T) {
		// INVALID_RECORD, final, where Kafka answers the retriable
		// CORRUPT_MESSAGE: Varve refuses a bad batch for good
		// (produceErrorCode).
		b := rawBatch(ts, []byte("crc"))
		b[17] ^= 0x55 // the CRC itself
		expect(t, map[int32][]byte{0: b}, kerr.InvalidRecord.Code)
		b = rawBatch(ts, []byte("crc"))
		b[len(b)-2] ^= 0xff // a byte of the value the CRC covers
		expect(t, map[int32][]byte{0: b}, kerr.InvalidRecord.Code)
		if r := produceRaw(t, cl, topic, map[int32][]byte{0: b})[0]; r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "crc") {
			t.Fatalf("the error message %s does not name the CRC", strOrNull(r.ErrorMessage))
		}
	})
	t.Run("corrupt records", func(t *testing.T) {
		b := rawBatch(ts, []byte("records"))
		// recordCount 2 with one record, CRC recomputed: well framed,
		// wrong inside.
		binary.BigEndian.PutUint32(b[57:], 2)
		binary.BigEndian.PutUint32(b[23:], 1)
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
		expect(t, map[int32][]byte{0: b}, kerr.InvalidRecord.Code)
		expect(t, map[int32][]byte{0: []byte("not a batch")}, kerr.UnsupportedForMessageFormat.Code)
		expect(t, map[int32][]byte{0: nil}, kerr.InvalidRecord.Code)
	})
	t.Run("one bad partition fails alone", func(t *testing.T) {
		// As Kafka answers per partition: the good one is stored.
		res := produceRaw(t, cl, topic, map[int32][]byte{0: rawBatch(ts, []byte("fine")), 1: rawBatch(ts, bytes.Repeat([]byte("x"), 2000))})
		if r := res[1]; r.ErrorCode != kerr.MessageTooLarge.Code || r.BaseOffset != -1 {
			t.Fatalf("the bad partition: %s (base offset %d), want MESSAGE_TOO_LARGE", kerrName(r.ErrorCode), r.BaseOffset)
		}
		if r := res[0]; r.ErrorCode != 0 || r.BaseOffset != hw[0] {
			t.Fatalf("the good partition: %s (base offset %d), want stored at %d", kerrName(r.ErrorCode), r.BaseOffset, hw[0])
		}
		hw[0]++
		if now := wireEndOffsets(t, cl, topic); now[0] != hw[0] || now[1] != hw[1] {
			t.Fatalf("end offsets %v, want %v", now, hw)
		}
	})
	t.Run("header with an empty key", func(t *testing.T) {
		// Kafka allows it; Varve's records have non-empty header keys
		// (docs/segment-format.md): a final INVALID_RECORD, not retried.
		pr := newClient(t, d, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := pr.ProduceSync(ctx, &kgo.Record{Partition: 2, Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "", Value: []byte("x")}}}).FirstErr()
		if !errors.Is(err, kerr.InvalidRecord) {
			t.Fatalf("a header with an empty key: %v, want INVALID_RECORD", err)
		}
		if now := wireEndOffsets(t, cl, topic); now[2] != hw[2] {
			t.Fatalf("end offset of partition 2 %d, was %d", now[2], hw[2])
		}
	})

	// The listener still takes good batches, at the offsets after the
	// first ones.
	res = produceRaw(t, cl, topic, map[int32][]byte{0: rawBatch(ts, []byte("e")), 1: rawBatch(ts, []byte("f"))})
	if res[0].ErrorCode != 0 || res[0].BaseOffset != hw[0] || res[1].ErrorCode != 0 || res[1].BaseOffset != 2 {
		t.Fatalf("good batches after the bad ones: %+v", res)
	}
}

// rawConn is a plain TCP connection to the listener, for frames no
// client sends.
type rawConn struct {
	net.Conn
	corr int32
}

func dialRaw(t testing.TB, d *node.Dev) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.KafkaAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c}
}

// send writes a request frame: header v1 (key, version, correlation id,
// client id) and body.
func (c *rawConn) send(t testing.TB, key, version int16, body []byte) int32 {
	t.Helper()
	c.corr++
	h := binary.BigEndian.AppendUint16(nil, uint16(key))
	h = binary.BigEndian.AppendUint16(h, uint16(version))
	h = binary.BigEndian.AppendUint32(h, uint32(c.corr))
	h = kbin.AppendNullableString(h, kmsg.StringPtr("wire-test"))
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(h)+len(body)))
	c.write(t, append(append(frame, h...), body...))
	return c.corr
}

func (c *rawConn) write(t testing.TB, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// roundTrip sends req (a non-flexible version) and reads its answer.
func (c *rawConn) roundTrip(t testing.TB, req kmsg.Request) kmsg.Response {
	t.Helper()
	if req.IsFlexible() {
		t.Fatalf("roundTrip takes non-flexible versions, not %s v%d", kmsg.NameForKey(req.Key()), req.GetVersion())
	}
	corr := c.send(t, req.Key(), req.GetVersion(), req.AppendTo(nil))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("%s v%d: reading the answer: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != corr {
		t.Fatalf("answer's correlation id %d, want %d", got, corr)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body[4:]); err != nil {
		t.Fatalf("%s v%d answer: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return resp
}

// expectClosed wants the listener to close the connection (EOF or a
// reset) within 5s, without answering.
func (c *rawConn) expectClosed(t testing.TB) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1024)
	n, err := c.Read(b)
	switch {
	case n > 0:
		t.Fatalf("the listener answered %d bytes (%x), want the connection closed", n, b[:n])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("the connection is still open after 5s (%v), want it closed", err)
	}
}

// apiVersions asks c for the served APIs.
func (c *rawConn) apiVersions(t testing.TB) map[int16]kmsg.ApiVersionsResponseApiKey {
	t.Helper()
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(0)
	resp := c.roundTrip(t, req).(*kmsg.ApiVersionsResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("ApiVersions: %s", kerrName(resp.ErrorCode))
	}
	out := map[int16]kmsg.ApiVersionsResponseApiKey{}
	for _, k := range resp.ApiKeys {
		out[k.ApiKey] = k
	}
	return out
}

// TestWireUnsupportedAPI: a request for an API key ApiVersions does not
// list, or a version outside what it lists, closes the connection with
// the reason in the node's log (as Kafka does); other connections go on.
// Produce v0-v2, listed for librdkafka's sake, are answered
// UNSUPPORTED_VERSION.
func TestWireUnsupportedAPI(t *testing.T) {
	d, log := startDevLogged(t)
	createTopic(t, d, "wire-api", 1)
	healthy := dialRaw(t, d)
	served := healthy.apiVersions(t)
	if p := served[0]; p.MinVersion != 0 || p.MaxVersion < 3 {
		t.Fatalf("ApiVersions lists Produce v%d-v%d, want from v0 (librdkafka compresses only then)", p.MinVersion, p.MaxVersion)
	}

	for _, key := range []int16{25, 57, 1000, -1} { // AddOffsetsToTxn, UpdateFeatures, no API, negative
		if _, ok := served[key]; ok {
			t.Fatalf("API %d is served; the test wants one that is not", key)
		}
		c := dialRaw(t, d)
		c.send(t, key, 0, []byte{0, 0, 0, 0})
		c.expectClosed(t)
		log.waitFor(t, "kafka connection closed", "client=wire-test", "unsupported API key "+strconv.Itoa(int(key))+" ")
	}

	// A listed API at a version beyond the listed range.
	c := dialRaw(t, d)
	c.send(t, 3, served[3].MaxVersion+1, nil) // Metadata
	c.expectClosed(t)
	log.waitFor(t, "kafka connection closed", "Metadata version "+strconv.Itoa(int(served[3].MaxVersion+1))+": this listener serves versions")
	c = dialRaw(t, d)
	c.send(t, 1, served[1].MinVersion-1, nil) // Fetch below its minimum
	c.expectClosed(t)
	log.waitFor(t, "kafka connection closed", "Fetch version "+strconv.Itoa(int(served[1].MinVersion-1)))

	// Produce v0: the per-partition error, the connection kept.
	c = dialRaw(t, d)
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(0)
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "wire-api"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = []byte("a v0 message set")
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := c.roundTrip(t, req).(*kmsg.ProduceResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("Produce v0: %+v, want UNSUPPORTED_VERSION", resp)
	}
	if _, ok := c.apiVersions(t)[0]; !ok {
		t.Fatal("Produce missing from ApiVersions")
	}

	// The connection that behaved is still served, and so is a client.
	healthy.apiVersions(t)
	produceAndRead(t, d, "wire-api")
}

// produceAndRead produces a record with franz-go through a new client
// and reads it back: the listener serves.
func produceAndRead(t testing.TB, d *node.Dev, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := newClient(t, d, kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	val := []byte("still serving " + time.Now().String())
	r := &kgo.Record{Value: val}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatalf("produce after bad input: %v", err)
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("fetch after bad input: %v", err)
		}
		found := false
		fs.EachRecord(func(got *kgo.Record) { found = found || (bytes.Equal(got.Value, val) && got.Offset == r.Offset) })
		if found {
			return
		}
	}
}

// TestGarbageFrames: frames no Kafka client sends — a size of 2 GiB, one
// over the request limit, sizes below a header's, random bytes, a frame
// cut short, a header whose client id runs past the frame, an array
// length of 2^31-1, garbage after a good request — each close their
// connection (the reason logged where the listener can tell one), while
// connections opened before, a frame still arriving, and new clients
// are served throughout.
func TestGarbageFrames(t *testing.T) {
	d, log := startDevLogged(t)
	createTopic(t, d, "garbage", 2)
	healthy := dialRaw(t, d)
	healthy.apiVersions(t)
	before := newClient(t, d, kgo.DefaultProduceTopic("garbage"))
	produce := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := before.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatalf("the client connected before the garbage: %v", err)
		}
	}
	produce()

	// A frame that announces 64 MiB and sends 10 bytes keeps its
	// connection waiting: no one else waits with it.
	slow := dialRaw(t, d)
	slow.write(t, binary.BigEndian.AppendUint32(nil, 64<<20))
	slow.write(t, make([]byte, 10))

	size := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	cases := []struct {
		name  string
		bytes func() []byte
		half  bool     // close the write side after the bytes
		log   []string // the log line's parts, if one is owed
	}{
		{"size 2 GiB", func() []byte { return size(1 << 31) }, false, []string{"request frame size out of bounds", "bytes=-2147483648"}},
		{"size 2 GiB - 1", func() []byte { return size(1<<31 - 1) }, false, []string{"request frame size out of bounds", "bytes=2147483647"}},
		{"size over the limit", func() []byte { return size(kafka.DefaultMaxRequestBytes + 1) }, false, []string{"request frame size out of bounds", "bytes=104857601"}},
		{"size 0", func() []byte { return size(0) }, false, []string{"request frame size out of bounds", "bytes=0"}},
		{"size 7", func() []byte { return append(size(7), 1, 2, 3, 4, 5, 6, 7) }, false, []string{"request frame size out of bounds", "bytes=7"}},
		{"client id past the frame", func() []byte {
			return append(size(10), 0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff) // Metadata v1, corr 1, client id of 32767 bytes
		}, false, []string{"kafka connection closed", "malformed request header"}},
		{"array length 2^31-1", func() []byte {
			body := []byte{0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff} // Metadata v1, null client id, topics: 2^31-1
			return append(size(uint32(len(body))), body...)
		}, false, []string{"kafka connection closed", "malformed Metadata v1 request"}},
		{"frame cut short", func() []byte { return append(size(1000), 0, 18, 0, 0, 0, 0) }, true, nil},
		{"garbage after a good request", func() []byte {
			h := []byte{0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff} // ApiVersions v0, corr 7, null client id
			good := append(size(uint32(len(h))), h...)
			return append(good, size(1<<31+12345)...)
		}, false, []string{"request frame size out of bounds"}},
	}
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 42))
		n := 16 + r.IntN(4096)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		// A frame of random bytes, its size right or random.
		framed := seed%2 == 0
		cases = append(cases, struct {
			name  string
			bytes func() []byte
			half  bool
			log   []string
		}{"random bytes " + strconv.Itoa(int(seed)), func() []byte {
			if framed {
				return append(size(uint32(len(b))), b...)
			}
			return b
		}, !framed, nil})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, d)
			b := tc.bytes()
			c.write(t, b)
			if tc.half {
				c.Conn.(*net.TCPConn).CloseWrite()
			}
			if tc.name == "garbage after a good request" {
				// The good request is answered first.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				var sz [4]byte
				if _, err := io.ReadFull(c, sz[:]); err != nil {
					t.Fatalf("the good request's answer: %v", err)
				}
				if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint32(sz[:]))); err != nil {
					t.Fatal(err)
				}
			}
			c.expectClosed(t)
			if tc.log != nil {
				log.waitFor(t, tc.log...)
			}
			// Served meanwhile: the connection from before.
			healthy.apiVersions(t)
		})
	}

	produce()
	produceAndRead(t, d, "garbage")
	slow.Close()
}

// fetchRaw sends one Fetch (sessionless, no wait) of topic's partitions
// at the given offsets and returns each partition's answer.
func fetchRaw(t testing.TB, cl *kgo.Client, topic string, offsets map[int32]int64) map[int32]kmsg.FetchResponseTopicPartition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := kmsg.NewPtrFetchRequest()
	req.MaxBytes, req.MaxWaitMillis, req.SessionEpoch = 1<<20, 0, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	for p, o := range offsets {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, o, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	kresp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		t.Fatalf("fetch request: %v", err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("fetch: %s", kerrName(resp.ErrorCode))
	}
	out := map[int32]kmsg.FetchResponseTopicPartition{}
	for _, t2 := range resp.Topics {
		for _, p := range t2.Partitions {
			out[p.Partition] = p
		}
	}
	return out
}

// TestWireFetchErrors: a Fetch of an unknown topic or partition, or
// from an offset outside the log, is answered with Kafka's code (and the
// log's bounds for OFFSET_OUT_OF_RANGE); an empty partition answers an
// empty record set, not a null one (librdkafka refuses null); an acks=0
// produce of bad input sends no answer and keeps the connection in step.
func TestWireFetchErrors(t *testing.T) {
	d := startDev(t, nodeConfig())
	const topic = "wire-fetch"
	createTopic(t, d, topic, 2)
	cl := newClient(t, d)
	ts := time.Now().UnixMilli()
	if r := produceRaw(t, cl, topic, map[int32][]byte{0: rawBatch(ts, []byte("a"), []byte("b"), []byte("c"))})[0]; r.ErrorCode != 0 {
		t.Fatalf("produce: %s", kerrName(r.ErrorCode))
	}

	res := fetchRaw(t, cl, topic, map[int32]int64{0: 0, 1: 0, 2: 0, -1: 0})
	if r := res[0]; r.ErrorCode != 0 || r.HighWatermark != 3 || r.LogStartOffset != 0 || len(r.RecordBatches) == 0 {
		t.Fatalf("partition 0: %s hw %d ls %d, %d bytes of batches", kerrName(r.ErrorCode), r.HighWatermark, r.LogStartOffset, len(r.RecordBatches))
	}
	if r := res[1]; r.ErrorCode != 0 || r.HighWatermark != 0 || r.RecordBatches == nil || len(r.RecordBatches) != 0 {
		t.Fatalf("empty partition 1: %s hw %d, batches %v (nil %v); want an empty, non-null record set", kerrName(r.ErrorCode), r.HighWatermark, r.RecordBatches, r.RecordBatches == nil)
	}
	for _, p := range []int32{2, -1} {
		if r := res[p]; r.ErrorCode != kerr.UnknownTopicOrPartition.Code || len(r.RecordBatches) != 0 {
			t.Fatalf("partition %d of 2: %s, want UNKNOWN_TOPIC_OR_PARTITION", p, kerrName(r.ErrorCode))
		}
	}
	for _, off := range []int64{4, 1 << 40, -5} {
		r := fetchRaw(t, cl, topic, map[int32]int64{0: off})[0]
		if r.ErrorCode != kerr.OffsetOutOfRange.Code || r.HighWatermark != 3 || r.LogStartOffset != 0 || len(r.RecordBatches) != 0 {
			t.Fatalf("fetch at %d of [0, 3): %s hw %d ls %d, %d bytes; want OFFSET_OUT_OF_RANGE with the bounds", off, kerrName(r.ErrorCode), r.HighWatermark, r.LogStartOffset, len(r.RecordBatches))
		}
	}
	// Fetching at the end is not out of range: nothing, no error.
	if r := fetchRaw(t, cl, topic, map[int32]int64{0: 3})[0]; r.ErrorCode != 0 || len(r.RecordBatches) != 0 || r.HighWatermark != 3 {
		t.Fatalf("fetch at the end: %s, %d bytes, hw %d", kerrName(r.ErrorCode), len(r.RecordBatches), r.HighWatermark)
	}
	if r := fetchRaw(t, cl, "no-such-topic", map[int32]int64{0: 0})[0]; r.ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("fetch of an unknown topic: %s", kerrName(r.ErrorCode))
	}

	// acks=0: a produce to an unknown topic and a corrupt one are not
	// answered; the next request on the connection gets its own answer.
	c := dialRaw(t, d)
	for _, tp := range []struct {
		topic string
		batch []byte
	}{{"no-such-topic", rawBatch(ts, []byte("x"))}, {topic, []byte("garbage")}} {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(7)
		req.Acks, req.TimeoutMillis = 0, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = tp.topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = tp.batch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		c.send(t, 0, 7, req.AppendTo(nil))
	}
	c.apiVersions(t) // checks the correlation id: the answer to this request, not to a produce
	if hw := wireEndOffsets(t, cl, topic); hw[0] != 3 || hw[1] != 0 {
		t.Fatalf("end offsets %v after the acks=0 produces", hw)
	}
}
