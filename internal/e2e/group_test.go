package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/sdk"
)

// groupView is `varve group describe --format json`.
type groupView struct {
	Summary struct {
		State      string `json:"state"`
		Members    int    `json:"members"`
		Generation string `json:"generation"`
	} `json:"summary"`
	Members []struct {
		MemberID   string `json:"memberId"`
		ClientID   string `json:"clientId"`
		Assignment []struct {
			Topic      string  `json:"topic"`
			Partitions []int32 `json:"partitions"`
		} `json:"assignment"`
	} `json:"members"`
	Partitions []struct {
		Partition int32  `json:"partition"`
		MemberID  string `json:"memberId"`
		Committed string `json:"committedOffset"`
		End       string `json:"endOffset"`
		Lag       string `json:"lag"`
	} `json:"partitions"`
}

func (v groupView) lag() int64 {
	var n int64
	for _, p := range v.Partitions {
		var l int64
		fmt.Sscan(p.Lag, &l)
		n += l
	}
	return n
}

// owners maps client id → partition count.
func (v groupView) owners() map[string]int {
	out := map[string]int{}
	for _, m := range v.Members {
		for _, a := range m.Assignment {
			out[m.ClientID] += len(a.Partitions)
		}
	}
	return out
}

// TestGroupRebalance runs three `varve consume --group` processes on one
// `varve dev`: two start, a third joins late, one is killed -9. Every
// record is printed by some member, the killed member's partitions move to
// the others well within the session timeout (its stream closes with the
// process), its member id can no longer commit, and the group ends with
// no lag.
func TestGroupRebalance(t *testing.T) {
	port := freePortRun(t)
	addr := fmt.Sprintf("http://127.0.0.1:%d", port)
	startDev(t, t.TempDir(), port)
	cli := devCLI{t: t, addr: addr}
	cli.must("", "topic", "create", "rb", "--partitions", "6")
	values := func(from, n int) []string {
		var vs []string
		for i := from; i < from+n; i++ {
			vs = append(vs, fmt.Sprintf("v%04d", i))
		}
		return vs
	}
	key := "k"
	var all []produced
	produceSpread := func(from, n int) {
		// One key per batch of 10 spreads the records over the partitions.
		for i := from; i < from+n; i += 10 {
			k := fmt.Sprintf("%s%d", key, i)
			all = append(all, cli.produce("rb", &k, values(i, 10))...)
		}
	}
	produceSpread(0, 300)

	describe := func() groupView {
		r := cli.run("", "group", "describe", "g", "--format", "json")
		var v groupView
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
			return groupView{}
		}
		return v
	}
	waitFor := func(what string, cond func(groupView) bool) (groupView, time.Duration) {
		t.Helper()
		start := time.Now()
		var v groupView
		if !testenv.EventuallyEvery(60*time.Second, 20*time.Millisecond, func() bool { v = describe(); return cond(v) }) {
			t.Fatalf("waiting for %s: last view %+v", what, v)
		}
		return v, time.Since(start)
	}
	member := func(id string) *bgCLI {
		return startCLI(t, "consume", "rb", "--group", "g", "--format", "json", "--client-id", id, "--addr", addr)
	}
	a, b := member("a"), member("b")
	waitFor("two members and no lag", func(v groupView) bool {
		o := v.owners()
		return v.Summary.Members == 2 && o["a"] == 3 && o["b"] == 3 && v.lag() == 0
	})

	// c joins late.
	produceSpread(300, 300)
	joinStart := time.Now()
	c := member("c")
	_, _ = waitFor("three members", func(v groupView) bool {
		o := v.owners()
		return v.Summary.Members == 3 && o["a"] == 2 && o["b"] == 2 && o["c"] == 2
	})
	t.Logf("figure: rebalance after a member joins (process start to assignment visible): %v", time.Since(joinStart))

	// b is killed -9: its partitions move and its id is a zombie.
	before := describe()
	var bID string
	for _, m := range before.Members {
		if m.ClientID == "b" {
			bID = m.MemberID
		}
	}
	var gen int64
	fmt.Sscan(before.Summary.Generation, &gen)
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-b.done
	_, moved := waitFor("b's partitions to move", func(v groupView) bool {
		o := v.owners()
		return v.Summary.Members == 2 && o["a"] == 3 && o["c"] == 3
	})
	t.Logf("figure: rebalance after kill -9 of a member: %v (session timeout 10s)", moved)
	if moved >= 10*time.Second {
		t.Errorf("partitions moved after %v, not within the session timeout", moved)
	}
	gc := varvev1connect.NewGroupServiceClient(sdk.NewHTTPClient(), addr)
	_, err := gc.CommitOffsets(context.Background(), connect.NewRequest(&varvev1.CommitOffsetsRequest{
		Group: "g", MemberId: bID, Generation: gen,
		Offsets: []*varvev1.OffsetCommit{{Topic: "rb", Partition: 0, Offset: 0}},
	}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || sdk.GroupReason(err) != "UNKNOWN_MEMBER" {
		t.Fatalf("zombie commit of the killed member: %v", err)
	}

	produceSpread(600, 300)
	waitFor("no lag after the kill", func(v groupView) bool { return v.Summary.Members == 2 && v.lag() == 0 })
	for _, m := range []*bgCLI{a, c} {
		_ = m.cmd.Process.Signal(os.Interrupt)
		<-m.done
		if r := m.result(); r.code != 0 {
			t.Fatalf("member: %s", r)
		}
	}
	waitFor("an empty group", func(v groupView) bool { return v.Summary.State == "empty" && v.lag() == 0 })

	// Every produced record was printed by some member (at least once).
	got := map[string]bool{}
	dups := 0
	for _, m := range []*bgCLI{a, b, c} {
		for _, line := range nonEmptyLines(m.stdout.String()) {
			var r consumed
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				if m == b {
					continue // killed mid-line
				}
				t.Fatalf("bad line %q: %v", line, err)
			}
			k := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
			if got[k] {
				dups++
			}
			got[k] = true
		}
	}
	var missing []string
	for _, p := range all {
		if !got[fmt.Sprintf("%d/%d", p.partition, p.offset)] {
			missing = append(missing, fmt.Sprintf("%d/%d", p.partition, p.offset))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d records never processed: %s", len(missing), len(all), strings.Join(missing[:min(20, len(missing))], " "))
	}
	t.Logf("%d records processed, %d twice (the killed member's uncommitted tail)", len(all), dups)

	// Reset and delete through the CLI.
	r := cli.must("", "group", "reset", "g", "--topic", "rb", "--to", "earliest")
	if len(nonEmptyLines(r.stdout)) != 6 {
		t.Fatalf("reset: %s", r)
	}
	if r := cli.must("", "group", "list"); !strings.Contains(r.stdout, "g ") {
		t.Fatalf("list: %s", r)
	}
	cli.must("", "group", "delete", "g")
	if r := cli.run("", "group", "describe", "g"); r.code == 0 || !strings.Contains(r.stderr, `group "g" not found`) {
		t.Fatalf("describe a deleted group: %s", r)
	}
}
