package e2e

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The history of a randomized run: every operation a client invoked, with
// the time of the call and of the answer, checked afterwards by porcupine
// (linearizability of produce and fetch per partition) and by direct
// checks of the invariants.

type opKind int

const (
	opProduce opKind = iota
	opFetch
	// opGroupCommit is a consumer group's offset commit (Group, Offset):
	// committed offsets of a (group, partition) must never go backwards in
	// real time. Recorded from the group members' requests (commitRecorder);
	// checked by checkGroupCommits and groupHist.check.
	opGroupCommit
)

// histOp is one operation of one partition.
type histOp struct {
	kind      opKind
	client    int
	partition int32
	call, ret int64 // ns since the start; ret = math.MaxInt64 when unknown

	// opProduce: the values of one batch, and where it landed.
	values  []string
	ok      bool // acknowledged; else the outcome is unknown
	base    int64
	retried int // extra sends, on purpose or after failures

	// opFetch: records read from offset.
	offset int64
	read   []string

	// opGroupCommit: offset is the committed offset; ok means accepted,
	// else reason is the refusal's (ErrorInfo reason or Connect code) or
	// "unknown" (no answer: it may have been applied).
	group      string
	member     string
	generation int64
	reason     string
}

// history records operations from concurrent clients.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []histOp
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op histOp) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

func (h *history) snapshot() []histOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// logState is a partition's log in the model: immutable, shared by the
// states derived from it.
type logState struct {
	vals []string
	hash uint64
}

func (s *logState) append(vals []string) *logState {
	out := &logState{vals: make([]string, 0, len(s.vals)+len(vals)), hash: s.hash}
	out.vals = append(append(out.vals, s.vals...), vals...)
	for _, v := range vals {
		f := fnv.New64a()
		fmt.Fprintf(f, "%d|%s", out.hash, v)
		out.hash = f.Sum64()
	}
	return out
}

type produceIn struct{ values []string }
type produceOut struct {
	ok   bool
	base int64
}
type fetchIn struct{ offset int64 }
type fetchOut struct{ read []string }

// logModel is the sequential specification of one partition: a produce
// appends its batch at the end (base = length) or, when its outcome is
// unknown, either did so or not; a fetch at an offset returns a non-empty
// slice of the log from there, or nothing when the log ends at or before
// it.
var logModel = porcupine.NondeterministicModel{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		by := map[int32][]porcupine.Operation{}
		for _, op := range ops {
			p := op.Metadata.(int32)
			by[p] = append(by[p], op)
		}
		keys := make([]int32, 0, len(by))
		for p := range by {
			keys = append(keys, p)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, p := range keys {
			out = append(out, by[p])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{&logState{}} },
	Step: func(state, input, output interface{}) []interface{} {
		s := state.(*logState)
		switch in := input.(type) {
		case produceIn:
			out := output.(produceOut)
			if !out.ok {
				return []interface{}{s, s.append(in.values)}
			}
			if out.base != int64(len(s.vals)) {
				return nil
			}
			return []interface{}{s.append(in.values)}
		case fetchIn:
			read := output.(fetchOut).read
			if len(read) == 0 {
				if in.offset >= int64(len(s.vals)) {
					return []interface{}{s}
				}
				return nil
			}
			end := in.offset + int64(len(read))
			if end > int64(len(s.vals)) || !slices.Equal(s.vals[in.offset:end], read) {
				return nil
			}
			return []interface{}{s}
		}
		return nil
	},
	Equal: func(a, b interface{}) bool {
		x, y := a.(*logState), b.(*logState)
		return x.hash == y.hash && len(x.vals) == len(y.vals)
	},
	Hash: func(state interface{}) uint64 { return state.(*logState).hash },
	DescribeOperation: func(input, output interface{}) string {
		switch in := input.(type) {
		case produceIn:
			out := output.(produceOut)
			if !out.ok {
				return fmt.Sprintf("produce(%s) -> unknown", strings.Join(in.values, ","))
			}
			return fmt.Sprintf("produce(%s) -> %d", strings.Join(in.values, ","), out.base)
		case fetchIn:
			return fmt.Sprintf("fetch(%d) -> [%s]", in.offset, strings.Join(output.(fetchOut).read, ","))
		}
		return "?"
	},
	DescribeState: func(state interface{}) string {
		s := state.(*logState)
		return fmt.Sprintf("%d records", len(s.vals))
	},
}

// porcupineOps turns the produce and fetch operations into porcupine's.
func porcupineOps(ops []histOp) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		switch op.kind {
		case opProduce:
			ret := op.ret
			if !op.ok {
				ret = math.MaxInt64
			}
			out = append(out, porcupine.Operation{ClientId: op.client, Call: op.call, Return: ret,
				Input: produceIn{op.values}, Output: produceOut{op.ok, op.base}, Metadata: op.partition})
		case opFetch:
			out = append(out, porcupine.Operation{ClientId: op.client, Call: op.call, Return: op.ret,
				Input: fetchIn{op.offset}, Output: fetchOut{op.read}, Metadata: op.partition})
		}
	}
	return out
}

// checkGroupCommits returns what is wrong with the group commits of a
// history: a commit that started after another one of the same group and
// partition was answered must not commit a smaller offset.
func checkGroupCommits(ops []histOp) []string {
	type gp struct {
		group string
		p     int32
	}
	by := map[gp][]histOp{}
	for _, op := range ops {
		if op.kind == opGroupCommit && op.ok {
			k := gp{op.group, op.partition}
			by[k] = append(by[k], op)
		}
	}
	var bad []string
	for k, cs := range by {
		sort.Slice(cs, func(i, j int) bool { return cs[i].ret < cs[j].ret })
		// Highest offset committed by an operation answered before t.
		for i, c := range cs {
			for _, prev := range cs[:i] {
				if prev.ret < c.call && prev.offset > c.offset {
					bad = append(bad, fmt.Sprintf("group %s partition %d: commit of %d at %v after a commit of %d answered at %v",
						k.group, k.p, c.offset, time.Duration(c.call), prev.offset, time.Duration(prev.ret)))
				}
			}
		}
	}
	return bad
}
