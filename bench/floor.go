package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// Floor is the physical floor under a Varve target, measured on the same
// machine, store and etcd in the same run: what no implementation can beat.
type Floor struct {
	Target string `json:"target"`
	// Payload is the workload payload the compression figures used.
	Payload string `json:"payload"`
	Cores   int    `json:"cores"`

	// ZstdCompressMiBs and ZstdDecompressMiBs are uncompressed MiB/s of
	// segment.Build and segment.DecodeBlock on every core.
	ZstdCompressMiBs   float64 `json:"zstd_compress_mib_s"`
	ZstdDecompressMiBs float64 `json:"zstd_decompress_mib_s"`
	ZstdRatio          float64 `json:"zstd_ratio"`
	// Zstd has the compression floor of every workload payload.
	Zstd []ZstdFloor `json:"zstd"`

	// ObjectBytes is the size of the PUT objects (the segment of flush_bytes).
	ObjectBytes int     `json:"object_bytes"`
	PutMiBs     float64 `json:"put_mib_s"`
	Put         Latency `json:"put_latency"`
	// Get is a ranged GET of one block (object / partitions).
	GetBytes int     `json:"get_bytes"`
	GetMiBs  float64 `json:"get_mib_s"`
	Get      Latency `json:"get_latency"`
	// Commit is one metadata.Commit transaction of one block per partition.
	Commit Latency `json:"etcd_commit_latency"`
}

// ZstdFloor is segment compression and decompression of one payload on
// every core.
type ZstdFloor struct {
	// Payload names the payload: json, or random-<bytes>.
	Payload        string  `json:"payload"`
	CompressMiBs   float64 `json:"compress_mib_s"`
	DecompressMiBs float64 `json:"decompress_mib_s"`
	Ratio          float64 `json:"ratio"`
}

// payloadName is the key of a workload's payload in Floor.Zstd.
func payloadName(w Workload) string {
	if w.Payload == PayloadRandom {
		return fmt.Sprintf("random-%d", w.MessageBytes)
	}
	return w.Payload
}

// zstdFor returns the compression floor of w's payload; the first payload's
// figures when w's was not measured.
func (f *Floor) zstdFor(w Workload) ZstdFloor {
	name := payloadName(w)
	for _, z := range f.Zstd {
		if z.Payload == name {
			return z
		}
	}
	return ZstdFloor{Payload: f.Payload, CompressMiBs: f.ZstdCompressMiBs, DecompressMiBs: f.ZstdDecompressMiBs, Ratio: f.ZstdRatio}
}

// MeasureFloor measures the floor of target t for workloads ws: zstd on all
// cores over each distinct payload of ws, PUT and ranged GET of flushBytes
// objects on the target's store, and etcd commit transactions on the
// target's etcd. The top-level zstd fields are those of ws[0]'s payload.
func MeasureFloor(ctx context.Context, t VarveTarget, ws []Workload, flushBytes, objects, commits int) (*Floor, error) {
	if len(ws) == 0 {
		return nil, fmt.Errorf("floor: no workload")
	}
	w := ws[0]
	f := &Floor{Target: t.Name(), Payload: payloadName(w), Cores: runtime.GOMAXPROCS(0)}
	var infos []segment.BlockInfo
	for _, x := range ws {
		if slices.ContainsFunc(f.Zstd, func(z ZstdFloor) bool { return z.Payload == payloadName(x) }) {
			continue
		}
		z, bi, err := measureZstd(x, flushBytes, f.Cores)
		if err != nil {
			return nil, err
		}
		f.Zstd = append(f.Zstd, z)
		if infos == nil {
			infos = bi
			f.ZstdCompressMiBs, f.ZstdDecompressMiBs, f.ZstdRatio = z.CompressMiBs, z.DecompressMiBs, z.Ratio
		}
	}

	// Store: sequential PUTs of the segment, then ranged GETs of its blocks.
	st, err := t.FloorStore(ctx)
	if err != nil {
		return nil, fmt.Errorf("floor store of %s: %w", t.Name(), err)
	}
	// Objects of flush_bytes, incompressible, so the store's raw bandwidth
	// is measured whatever it does with the bytes.
	blob := Workload{Payload: PayloadRandom, MessageBytes: flushBytes}.Payloads(1, 3)[0]
	f.ObjectBytes = len(blob)
	put := newHist()
	t0 := time.Now()
	var keys []string
	for i := 0; i < objects; i++ {
		key := fmt.Sprintf("floor/%d-%06d", time.Now().UnixNano(), i)
		s := time.Now()
		if err := st.PutIfAbsent(ctx, key, blob); err != nil {
			return nil, fmt.Errorf("floor put %s: %w", key, err)
		}
		_ = put.RecordValue(max(1, time.Since(s).Microseconds()))
		keys = append(keys, key)
	}
	f.PutMiBs = float64(objects*len(blob)) / (1 << 20) / time.Since(t0).Seconds()
	f.Put = summarize(put)
	get := newHist()
	var got int64
	t0 = time.Now()
	// Ranged GETs of one compressed block's size at the blocks' places.
	for i := 0; i < objects*len(infos) && i < 2000; i++ {
		bi := infos[i%len(infos)]
		if bi.Offset+bi.Length > int64(len(blob)) {
			bi.Offset = 0
		}
		s := time.Now()
		b, err := st.GetRange(ctx, keys[i%len(keys)], bi.Offset, bi.Length)
		if err != nil {
			return nil, fmt.Errorf("floor get: %w", err)
		}
		_ = get.RecordValue(max(1, time.Since(s).Microseconds()))
		got += int64(len(b))
	}
	f.GetMiBs = float64(got) / (1 << 20) / time.Since(t0).Seconds()
	f.GetBytes = int(infos[0].Length)
	f.Get = summarize(get)
	for _, k := range keys {
		_ = st.Delete(ctx, k)
	}

	// etcd: the commit transaction Varve runs per flush, one block per partition.
	mc, err := metadata.Connect(ctx, metadata.Config{Endpoints: t.EtcdEndpoints()})
	if err != nil {
		return nil, err
	}
	defer mc.Close()
	topic := fmt.Sprintf("floor-%d", time.Now().UnixNano()%1e9)
	if _, err := mc.CreateTopic(ctx, metadata.Topic{Name: topic, Partitions: int32(w.Partitions)}); err != nil {
		return nil, fmt.Errorf("floor topic: %w", err)
	}
	// A target committing through the sequencer refuses direct commits:
	// its floor is the commit through the elected sequencer, as its nodes
	// do it.
	var committer interface {
		Commit(context.Context, string, []metadata.Append) ([]metadata.AppendResult, error)
	} = mc
	if sq, ok := t.(interface{ Sequenced() bool }); ok && sq.Sequenced() {
		// As a node: over TLS trusting the bench's CA, with the cluster
		// secret of a secure target.
		var opts []connect.ClientOption
		if ns, ok := t.(interface{ nodeSecret() string }); ok && ns.nodeSecret() != "" {
			secret := ns.nodeSecret()
			opts = append(opts, connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
				return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
					req.Header().Set(guard.SecretHeader, secret)
					return next(ctx, req)
				}
			})))
		}
		committer = sequencer.NewClient(mc, sequencer.NewDialer(benchHTTP, opts...))
	}
	com := newHist()
	for i := 0; i < commits; i++ {
		apps := make([]metadata.Append, 0, len(infos))
		for _, bi := range infos {
			apps = append(apps, metadata.Append{Topic: topic, Partition: bi.Partition, Object: fmt.Sprintf("floor/%d", i),
				Off: bi.Offset, Len: bi.Length, Records: bi.Records, MinTS: bi.MinTimestamp, MaxTS: bi.MaxTimestamp, RawBytes: bi.RawBytes})
		}
		s := time.Now()
		if _, err := committer.Commit(ctx, fmt.Sprintf("floor-%s-%d", topic, i), apps); err != nil {
			return nil, fmt.Errorf("floor commit: %w", err)
		}
		_ = com.RecordValue(max(1, time.Since(s).Microseconds()))
	}
	f.Commit = summarize(com)
	_ = mc.DeleteTopic(ctx, topic)
	_ = tier.Store(st)
	return f, nil
}

// measureZstd builds a flush_bytes segment of w's payload (one block per
// partition, distinct payloads as the producers send them), then builds and
// decodes it on every core for about a second each.
func measureZstd(w Workload, flushBytes, cores int) (ZstdFloor, []segment.BlockInfo, error) {
	z := ZstdFloor{Payload: payloadName(w)}
	blocks := make([]*segment.BlockBuilder, w.Partitions)
	for p := range blocks {
		blocks[p] = segment.NewBlockBuilder("floor", int32(p))
	}
	payloads := w.Payloads(payloadCount(w), 7)
	raw := 0
	now := time.Now().UnixMilli()
	for i := 0; raw < flushBytes; i++ {
		v := payloads[i%len(payloads)]
		rec := segment.Record{Key: fmt.Appendf(nil, "key-%d", i%10000), Value: v, Timestamp: now,
			Headers: []segment.Header{{Key: tsHeader, Value: encodeTS(time.Now())}}}
		blocks[i%len(blocks)].Append(rec)
		raw += segment.EncodedSize(rec)
	}
	var obj []byte
	var infos []segment.BlockInfo
	var mu sync.Mutex
	var compressed int64
	t0 := time.Now()
	for time.Since(t0) < time.Second {
		var wg sync.WaitGroup
		for range cores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, bi, err := segment.Build(blocks)
				if err == nil {
					mu.Lock()
					obj, infos = o, bi
					compressed += int64(raw)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	if obj == nil {
		return z, nil, fmt.Errorf("floor: build segment of %s failed", z.Payload)
	}
	z.CompressMiBs = float64(compressed) / (1 << 20) / time.Since(t0).Seconds()
	z.Ratio = float64(raw) / float64(len(obj))
	var decoded int64
	t0 = time.Now()
	for time.Since(t0) < time.Second {
		var wg sync.WaitGroup
		for c := range cores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var n int64
				for i := c; i < len(infos); i += cores {
					bi := infos[i]
					if _, err := segment.DecodeBlock(obj[bi.Offset : bi.Offset+bi.Length]); err == nil {
						n += bi.RawBytes
					}
				}
				mu.Lock()
				decoded += n
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	z.DecompressMiBs = float64(decoded) / (1 << 20) / time.Since(t0).Seconds()
	return z, infos, nil
}
