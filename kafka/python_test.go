package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// debianPython is the Python that runs the confluent-kafka tests: Debian's
// /usr/bin/python3, which sees Debian's python3-confluent-kafka (a pyenv
// python3 first on PATH does not). A missing interpreter or module fails
// the test with the reason; `make tools` installs both.
const debianPython = "/usr/bin/python3"

// confluentPython checks that debianPython imports confluent_kafka and
// returns its path.
func confluentPython(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(debianPython); err != nil {
		t.Fatalf("Debian's python3 is missing (%v): the confluent-kafka tests run %s, which sees the Debian package python3-confluent-kafka; `make tools` (target kafka-clients) installs it; these tests are not skipped", err, debianPython)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, debianPython, "-c",
		"import confluent_kafka; print('confluent-kafka', confluent_kafka.version()[0], 'librdkafka', confluent_kafka.libversion()[0])").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import confluent_kafka (%v): `make tools` (target kafka-clients) installs the Debian package python3-confluent-kafka; these tests are not skipped\n%s", debianPython, err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	return debianPython
}

// pyRecord is a record as testdata/confluent_roundtrip.py reports it:
// bytes as latin-1 strings, null as nil.
type pyRecord struct {
	I         int        `json:"i"`
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	Key       *string    `json:"key"`
	Value     *string    `json:"value"`
	Headers   [][]string `json:"headers"`
	Timestamp int64      `json:"timestamp"`
	Error     string     `json:"error"`
}

// TestPythonConfluentRoundTrip: confluent-kafka-python's idempotent
// Producer (enable.idempotence, acks=all) writes n records with keys (one
// without), headers (one binary) and timestamps, some to a named
// partition; every delivery report comes back without error, in order
// per partition; a Consumer assigned every partition from the beginning
// reads each record at the partition and offset its report named, as
// produced; and franz-go reads the same records, in idempotent batches.
func TestPythonConfluentRoundTrip(t *testing.T) {
	py := confluentPython(t)
	d := startDev(t, nodeConfig())
	const topic, parts, n = "py-roundtrip", 4, 500
	createTopic(t, d, topic, parts)
	script, err := filepath.Abs(filepath.Join("testdata", "confluent_roundtrip.py"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script, d.KafkaAddr(), topic, fmt.Sprint(parts), fmt.Sprint(n), "60")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v (context: %v)\nstderr:\n%s", py, script, err, ctx.Err(), stderr.Bytes())
	}
	var res struct {
		Delivered []pyRecord `json:"delivered"`
		Consumed  []pyRecord `json:"consumed"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("the script's output: %v\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}

	// What record i is, as the script produces it.
	const baseTS = 1_700_000_000_000
	key := func(i int) *string {
		if i == 0 {
			return nil
		}
		k := fmt.Sprintf("k%d", i%7)
		return &k
	}
	headers := func(i int) [][]string {
		return [][]string{{"i", fmt.Sprint(i)}, {"h", "\x00\u00ff" + fmt.Sprint(i)}}
	}
	partition := func(i int) int32 {
		if i%5 == 0 {
			return int32(i % parts)
		}
		return rdkafkaPartition(*key(i), parts) // librdkafka's consistent_random
	}
	str := func(s *string) string {
		if s == nil {
			return "<null>"
		}
		return fmt.Sprintf("%q", *s)
	}

	// Delivery reports: one per record, no error, at the partition the
	// record names or its key hashes to, offsets dense and in produce
	// order per partition (the idempotent producer keeps order).
	if len(res.Delivered) != n {
		t.Fatalf("%d delivery reports, want %d", len(res.Delivered), n)
	}
	next := map[int32]int64{}
	at := map[[2]int64]int{}
	for i, r := range res.Delivered {
		switch {
		case r.I != i || r.Error != "":
			t.Fatalf("delivery report %d: %+v", i, r)
		case r.Partition != partition(i):
			t.Fatalf("record %d (key %s) delivered to partition %d, want %d", i, str(key(i)), r.Partition, partition(i))
		case r.Offset != next[r.Partition]:
			t.Fatalf("record %d delivered at %d/%d, want offset %d (dense, in produce order)", i, r.Partition, r.Offset, next[r.Partition])
		case str(r.Key) != str(key(i)) || str(r.Value) != fmt.Sprintf("%q", fmt.Sprintf("v%d", i)) || r.Timestamp != baseTS+int64(i):
			t.Fatalf("delivery report %d: key %s value %s timestamp %d", i, str(r.Key), str(r.Value), r.Timestamp)
		}
		next[r.Partition]++
		at[[2]int64{int64(r.Partition), r.Offset}] = i
	}

	// The consumer: every record once, at its reported place, as produced,
	// each partition in offset order.
	if len(res.Consumed) != n {
		t.Fatalf("the consumer read %d records, want %d", len(res.Consumed), n)
	}
	seen := map[int]bool{}
	last := map[int32]int64{}
	for _, r := range res.Consumed {
		i, ok := at[[2]int64{int64(r.Partition), r.Offset}]
		if !ok || i != r.I || seen[i] {
			t.Fatalf("consumed %+v: delivered there was record %d (found %v), seen before %v", r, i, ok, seen[i])
		}
		seen[i] = true
		if o, ok := last[r.Partition]; ok && r.Offset <= o {
			t.Fatalf("partition %d: offset %d read after %d", r.Partition, r.Offset, o)
		}
		last[r.Partition] = r.Offset
		if str(r.Key) != str(key(i)) || str(r.Value) != fmt.Sprintf("%q", fmt.Sprintf("v%d", i)) ||
			fmt.Sprint(r.Headers) != fmt.Sprint(headers(i)) || r.Timestamp != baseTS+int64(i) {
			t.Fatalf("record %d at %d/%d: key %s value %s headers %q timestamp %d; want key %s value v%d headers %q timestamp %d",
				i, r.Partition, r.Offset, str(r.Key), str(r.Value), r.Headers, r.Timestamp, str(key(i)), i, headers(i), baseTS+int64(i))
		}
	}

	// franz-go reads what librdkafka wrote: the same records, in batches
	// of an idempotent producer.
	cl := newClient(t, d, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("franz-go after %d records: %v", got, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			i, ok := at[[2]int64{int64(r.Partition), r.Offset}]
			if !ok {
				t.Fatalf("franz-go read %d/%d, where nothing was delivered", r.Partition, r.Offset)
			}
			var hs [][]string
			for _, h := range r.Headers {
				hs = append(hs, []string{h.Key, latin1(h.Value)})
			}
			k := key(i)
			if (k == nil) != (r.Key == nil) || (k != nil && *k != string(r.Key)) || string(r.Value) != fmt.Sprintf("v%d", i) ||
				fmt.Sprint(hs) != fmt.Sprint(headers(i)) || r.Timestamp.UnixMilli() != baseTS+int64(i) || r.ProducerID < 0 {
				t.Fatalf("franz-go read record %d at %d/%d: key %q (nil %v) value %q headers %q timestamp %d producer %d",
					i, r.Partition, r.Offset, r.Key, r.Key == nil, r.Value, hs, r.Timestamp.UnixMilli(), r.ProducerID)
			}
		})
	}
	if got != n {
		t.Fatalf("franz-go read %d records, want %d", got, n)
	}
	if s := stderr.String(); strings.Contains(s, "Traceback") {
		t.Fatalf("the script wrote a traceback:\n%s", s)
	}
}

// latin1 is b as the script shows bytes: each byte one rune.
func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}
