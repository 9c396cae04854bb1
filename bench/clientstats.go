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
	// inflight is, at each Produce request written, how many of the
	// producer's requests were in flight to that node with it (Kafka
	// producers only: the SDK's are counted by its batches).
	inflight *hdrhistogram.Histogram
}

func newProduceStats() *produceStats {
	return &produceStats{rpc: newHist(), failed: map[string]int64{}, inflight: hdrhistogram.New(1, 1<<10, 3)}
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
// attempt) and the attempts that failed, by Connect code (by error class
// for Kafka producers).
type ProduceRPCs struct {
	Latency Latency          `json:"latency"`
	Failed  int64            `json:"failed"`
	Codes   map[string]int64 `json:"failed_by_code,omitempty"`
	// InflightMean and InflightMax are, over the Produce requests written,
	// how many of its producer's requests were in flight to the node with
	// each (itself included): Kafka producers only (franz-go's hooks).
	InflightMean float64 `json:"inflight_mean,omitempty"`
	InflightMax  int64   `json:"inflight_max,omitempty"`
}

// mergeRPCs sums the stats of the producers that have them; nil if none.
func mergeRPCs(prs []Producer) *ProduceRPCs {
	all, out := newHist(), &ProduceRPCs{}
	inflight := hdrhistogram.New(1, 1<<10, 3)
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
		inflight.Merge(s.inflight)
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
	if inflight.TotalCount() > 0 {
		out.InflightMean, out.InflightMax = inflight.Mean(), inflight.Max()
	}
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
