package bench

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/varve-io/varve/sdk"
)

// produceStats counts what one Varve producer of the bench saw of its
// Produce RPCs (through the SDK's hooks): every attempt's round trip, and
// the attempts that failed (the SDK retries most of them, so a slow
// acknowledgement with no failed record can still come from a retry).
type produceStats struct {
	mu     sync.Mutex
	rpc    *hdrhistogram.Histogram // µs
	failed map[string]int64        // by Connect code
}

func newProduceStats() *produceStats {
	return &produceStats{rpc: newHist(), failed: map[string]int64{}}
}

// hooks are the SDK hooks that feed s.
func (s *produceStats) hooks() sdk.Hooks {
	return sdk.Hooks{OnProduceBatch: func(e sdk.ProduceBatchEvent) {
		s.mu.Lock()
		defer s.mu.Unlock()
		_ = s.rpc.RecordValue(max(1, e.Latency.Microseconds()))
		if e.Err != nil {
			code := "unknown"
			var ce *connect.Error
			if errors.As(e.Err, &ce) {
				code = ce.Code().String()
			}
			s.failed[code]++
		}
	}}
}

// produceRPCs is implemented by producers that count their RPCs.
type produceRPCs interface {
	rpcStats() *produceStats
}

// ProduceRPCs are a workload's producers' Produce round trips (every
// attempt) and the attempts that failed, by Connect code.
type ProduceRPCs struct {
	Latency Latency          `json:"latency"`
	Failed  int64            `json:"failed"`
	Codes   map[string]int64 `json:"failed_by_code,omitempty"`
}

// mergeRPCs sums the stats of the producers that have them; nil if none.
func mergeRPCs(prs []Producer) *ProduceRPCs {
	all, out := newHist(), &ProduceRPCs{}
	seen := false
	for _, pr := range prs {
		p, ok := pr.(produceRPCs)
		if !ok {
			continue
		}
		seen = true
		s := p.rpcStats()
		s.mu.Lock()
		all.Merge(s.rpc)
		for k, n := range s.failed {
			if out.Codes == nil {
				out.Codes = map[string]int64{}
			}
			out.Codes[k] += n
			out.Failed += n
		}
		s.mu.Unlock()
	}
	if !seen {
		return nil
	}
	out.Latency = summarize(all)
	out.Latency.CDF = nil
	return out
}

// codesString is "aborted 1, unavailable 2" (sorted), or "" for none.
func codesString(codes map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(codes)) {
		parts = append(parts, k+" "+strconv.FormatInt(codes[k], 10))
	}
	return strings.Join(parts, ", ")
}
