package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/murmur2"
	"github.com/varve-io/varve/tier/segment"
)

// TestCLIClientSemantics drives `varve dev` with the CLI through what a
// Kafka user expects of partitions and positions (issue 12, items 4, 5, 7
// and 8): a record without --partition goes where murmur2 of its key says
// (the README's quick start), an offset past the end is reset per
// --offset-reset and said on stderr (or fails with none), --follow from
// there gets new records instead of waiting forever, --group takes --from
// latest, the largest allowed record is produced, and the help text shows
// the --client-id flag as a string.
func TestCLIClientSemantics(t *testing.T) {
	port := freePortRun(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	dev := startDev(t, t.TempDir(), port)
	cli := devCLI{t: t, addr: base}

	// The README's quick start: key user-1 on 3 partitions is partition 2.
	cli.must("", "topic", "create", "clicks", "--partitions", "3")
	key := "user-1"
	acks := cli.produce("clicks", &key, []string{"hello", "world"})
	want := murmur2.Partition([]byte(key), 3)
	if want != 2 {
		t.Fatalf("murmur2 puts %q in partition %d of 3; the README says 2", key, want)
	}
	for i, a := range acks {
		if a.partition != want || a.offset != int64(i) {
			t.Fatalf("record %d with key %q acknowledged at %d/%d, want %d/%d (the README's quick start)", i, key, a.partition, a.offset, want, i)
		}
	}
	if a := cli.produce("clicks", &key, []string{"zero"}, "--partition", "0"); a[0].partition != 0 {
		t.Fatalf("--partition 0 --key %s stored in partition %d", key, a[0].partition)
	}

	// Past the end: latest (the default) says so and exits 0 with nothing.
	r := cli.must("", "consume", "clicks", "--partition", "2", "--from", "999", "--format", "json")
	if r.stdout != "" || !strings.Contains(r.stderr, "offset 999 is outside the log [0, 2); reset to latest offset 2") {
		t.Fatalf("consume --from 999 past the end: want no records and the reset on stderr:\n%s", r)
	}
	// earliest reads the partition from its start.
	r = cli.must("", "consume", "clicks", "--partition", "2", "--from", "999", "--offset-reset", "earliest", "--format", "json")
	sameRecords(t, "consume --from 999 --offset-reset earliest", parseConsumed(t, "clicks", r.stdout, r.String()), acks)
	if !strings.Contains(r.stderr, "reset to earliest offset 0") {
		t.Fatalf("consume --offset-reset earliest does not say it reset:\n%s", r)
	}
	// none is an error.
	r = cli.run("", "consume", "clicks", "--partition", "2", "--from", "999", "--offset-reset", "none")
	if r.code == 0 || !strings.Contains(r.stderr, "offset 999 is outside the log [0, 2)") || !strings.Contains(r.stderr, "none") {
		t.Fatalf("consume --from 999 --offset-reset none: want a non-zero exit naming the range and the policy:\n%s", r)
	}
	if r := cli.run("", "consume", "clicks", "--offset-reset", "newest"); r.code == 0 || !strings.Contains(r.stderr, "latest, earliest or none") {
		t.Fatalf("--offset-reset newest: want an error listing the choices:\n%s", r)
	}

	// --follow from past the end gets the records produced afterwards.
	follower := startCLI(t, cli.args([]string{"consume", "clicks", "--partition", "2", "--from", "999", "--follow", "--count", "1", "--format", "json"})...)
	late := produceUntilDone(t, cli, follower, "clicks", &key, "late")
	fr := follower.result()
	got := parseConsumed(t, "clicks", fr.stdout, fr.String())
	if fr.code != 0 || len(got) != 1 || !strings.HasPrefix(*got[0].Value, "late-") || got[0].Offset < 2 {
		t.Fatalf("consume --from 999 --follow --count 1 (%d late records produced):\n%s", late, fr)
	}
	if !strings.Contains(fr.stderr, "reset to latest") {
		t.Fatalf("consume --from 999 --follow does not say it reset:\n%s", fr)
	}

	// --group with --from latest: a new group starts at the end, so it
	// prints a record produced after it joined, never an old one.
	member := startCLI(t, cli.args([]string{"consume", "clicks", "--group", "fresh", "--from", "latest", "--count", "1", "--format", "json"})...)
	produceUntilDone(t, cli, member, "clicks", nil, "new")
	mr := member.result()
	got = parseConsumed(t, "clicks", mr.stdout, mr.String())
	if mr.code != 0 || len(got) != 1 || !strings.HasPrefix(*got[0].Value, "new-") {
		t.Fatalf("consume --group fresh --from latest --count 1: want one record produced after it joined:\n%s", mr)
	}
	if r := cli.run("", "consume", "clicks", "--group", "g", "--from", "5"); r.code == 0 || !strings.Contains(r.stderr, "earliest or latest") {
		t.Fatalf("--group with --from 5: want an error saying --from may be earliest or latest:\n%s", r)
	}

	// The help shows --client-id's value as a string, not a command.
	if h := cli.must("", "consume", "--help").stdout; strings.Contains(h, "--client-id varve") || !strings.Contains(h, "--offset-reset") {
		t.Fatalf("consume --help:\n%s", h)
	}

	// The largest record max_record_bytes allows (64 MiB) is produced.
	const maxRecord = 64 << 20
	cli.must("", "topic", "create", "big", "--partitions", "1", "--max-record-bytes", strconv.Itoa(maxRecord))
	n := maxRecord
	for segment.EncodedSize(segment.Record{Value: make([]byte, n)}) > maxRecord {
		n--
	}
	r = cli.run(strings.Repeat("b", n)+"\n", "produce", "big")
	if r.code != 0 || !strings.Contains(r.stderr, "1 record acknowledged") {
		t.Fatalf("produce a record of %d bytes to a topic with max-record-bytes %d:\n%s", n, maxRecord, truncated(r))
	}
	var d struct {
		Partitions []struct {
			NextOffset json.Number `json:"nextOffset"`
		} `json:"partitions"`
	}
	r = cli.must("", "topic", "describe", "big", "--format", "json")
	if err := json.Unmarshal([]byte(strings.ReplaceAll(r.stdout, `"1"`, "1")), &d); err != nil || len(d.Partitions) != 1 || d.Partitions[0].NextOffset != "1" {
		t.Fatalf("topic describe big after the 64 MiB record (%v): want next offset 1:\n%s", err, r)
	}
	dev.stopGracefully(35 * time.Second)
}

// produceUntilDone produces one record at a time (values prefix-0, -1,
// ...) until the background command exits, for up to 45 s, and returns how
// many it produced.
func produceUntilDone(t *testing.T, cli devCLI, bg *bgCLI, topic string, key *string, prefix string) int {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-bg.done:
			return i
		default:
		}
		if time.Now().After(deadline) {
			_ = bg.cmd.Process.Kill()
			<-bg.done
			t.Fatalf("`varve %s` did not finish within 45s while %d records were produced:\n%s", strings.Join(bg.args, " "), i, bg.result())
		}
		cli.produce(topic, key, []string{fmt.Sprintf("%s-%d", prefix, i)})
	}
}

// truncated shows a result without a 64 MiB stdin echoed anywhere.
func truncated(r cliResult) string {
	s := r.String()
	if len(s) > 4000 {
		s = s[:4000] + "..."
	}
	return s
}
