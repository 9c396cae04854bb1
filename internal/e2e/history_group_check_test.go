package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/varve-io/varve/metadata/groups"
)

// TestGroupHistoryCheck feeds groupHist.check histories with one violation
// each and a clean one: the checks of TestRandomizedHistory must not pass
// vacuously.
func TestGroupHistoryCheck(t *testing.T) {
	const group, topic = "g", "t"
	pre := groupPrefixKey(group)
	meta := func(gen int64, assign map[string][]int32, revoked map[string][]int32) groupEvent {
		m := groups.Meta{Generation: gen, Assignment: map[string]groups.Assignment{}, Revoked: map[string]groups.Assignment{}}
		for id, ps := range assign {
			m.Members = append(m.Members, id)
			m.Assignment[id] = groups.Assignment{topic: ps}
		}
		for id, ps := range revoked {
			m.Revoked[id] = groups.Assignment{topic: ps}
		}
		b, _ := json.Marshal(m)
		return groupEvent{key: pre + "meta", val: b}
	}
	member := func(id string, del bool) groupEvent {
		return groupEvent{key: pre + "members/" + id, del: del, val: []byte("{}")}
	}
	commit := func(id string, gen int64, p string, off int64) groupEvent {
		b, _ := json.Marshal(groups.CommittedOffset{Offset: off, Generation: gen, Member: id})
		return groupEvent{key: pre + "offsets/" + topic + "/" + p, val: b}
	}
	log := [][]logRecord{{{offset: 0, value: "a"}, {offset: 1, value: "b"}}}
	allProcessed := map[int32]map[int64][]string{0: {0: {"a"}, 1: {"b", "b"}}}
	clean := []groupEvent{
		member("m1", false), meta(1, map[string][]int32{"m1": {0}}, nil),
		commit("m1", 1, "0", 1),
		member("m2", false), meta(2, map[string][]int32{"m2": {0}}, map[string][]int32{"m1": {0}}),
		commit("m1", 2, "0", 2), // m1's last commit of a revoked partition
		commit("m2", 2, "0", 2),
		member("m1", true),
	}
	cases := []struct {
		name      string
		events    []groupEvent
		ops       []histOp
		processed map[int32]map[int64][]string
		want      string
	}{
		{"clean", clean, nil, allProcessed, ""},
		{"zombie", append(clean[:len(clean):len(clean)], commit("m1", 2, "0", 2)), nil, allProcessed, "zombie commit"},
		{"stale generation", append(clean[:5:5], commit("m2", 1, "0", 2)), nil, allProcessed, "in generation 1, the group is in 2"},
		{"not assigned", append(clean[:3:3], commit("m1", 1, "1", 0)), nil, allProcessed, "neither assigned"},
		{"regress", append(clean[:7:7], commit("m2", 2, "0", 1)), nil, allProcessed, "went back from 2 to 1"},
		{"zombie in real time", clean, []histOp{{kind: opGroupCommit, ok: true, member: "m1", call: 20, ret: 30}}, allProcessed, "zombie commit accepted"},
		{"unprocessed", clean, nil, map[int32]map[int64][]string{0: {0: {"a"}}}, "never processed"},
		{"phantom", clean, nil, map[int32]map[int64][]string{0: {0: {"a"}, 1: {"b", "x"}}}, "which the log does not hold"},
	}
	for _, c := range cases {
		g := &groupHist{group: group, topic: topic, processed: c.processed, removedAt: map[string]int64{"m1": 10}, events: c.events}
		rep := g.check(c.ops, log)
		got := strings.Join(rep.bad, "\n")
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: unexpected findings:\n%s", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: want a finding with %q, got:\n%s", c.name, c.want, got)
		}
		if c.name == "clean" && (rep.processed != 2 || rep.duplicates != 1 || rep.offsetWrites != 3 || rep.generations != 2) {
			t.Errorf("clean: report %+v", rep)
		}
	}
}
