package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Payload kinds.
const (
	PayloadJSON   = "json"   // JSONEvent: realistic, compressible clickstream events
	PayloadRandom = "random" // incompressible random bytes of MessageBytes
)

// Workload is one OpenMessaging-Benchmark-like load: what every target is
// given, identically.
type Workload struct {
	Name string `json:"name"`
	// Payload is PayloadJSON (about 430 bytes) or PayloadRandom.
	Payload string `json:"payload"`
	// MessageBytes is the value size of random payloads.
	MessageBytes int `json:"message_bytes"`
	Partitions   int `json:"partitions"`
	Producers    int `json:"producers"`
	Consumers    int `json:"consumers"`
	// Rate is the target produce rate in records/s over all producers
	// (open loop: sends are scheduled, not waited for); 0 is max rate.
	Rate int `json:"rate"`
	// Duration is the measured produce phase, after Warmup.
	Duration time.Duration `json:"duration_ns"`
	Warmup   time.Duration `json:"warmup_ns"`
	// Keys is the number of distinct keys, chosen uniformly; 0 sends no key
	// (sticky partitioning).
	Keys int `json:"keys"`
	// Linger and MaxBatchBytes are the client-side batching of the producers.
	Linger        time.Duration `json:"linger_ns"`
	MaxBatchBytes int           `json:"max_batch_bytes"`
	// Sample, when set, samples Varve's etcd footprint this often while
	// producing (WorkloadResult.Steady).
	Sample time.Duration `json:"sample_ns,omitempty"`
}

// Validate reports a workload that cannot run.
func (w Workload) Validate() error {
	switch {
	case w.Payload != PayloadJSON && w.Payload != PayloadRandom:
		return fmt.Errorf("workload %s: payload %q: want json or random", w.Name, w.Payload)
	case w.Payload == PayloadRandom && w.MessageBytes <= 0:
		return fmt.Errorf("workload %s: random payload needs message_bytes > 0", w.Name)
	case w.Partitions <= 0 || w.Producers <= 0 || w.Consumers <= 0:
		return fmt.Errorf("workload %s: partitions, producers and consumers must be > 0", w.Name)
	case w.Duration <= 0:
		return fmt.Errorf("workload %s: duration must be > 0", w.Name)
	case w.Rate < 0 || w.Keys < 0 || w.Warmup < 0 || w.Linger < 0:
		return fmt.Errorf("workload %s: rate, keys, warm-up and linger must be >= 0", w.Name)
	case w.Sample < 0:
		return fmt.Errorf("workload %s: sample must be >= 0", w.Name)
	}
	return nil
}

// Payloads returns n payloads of w's kind, reproducibly from seed.
func (w Workload) Payloads(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 0x7a77e))
	out := make([][]byte, n)
	for i := range out {
		if w.Payload == PayloadRandom {
			b := make([]byte, w.MessageBytes)
			for j := 0; j < len(b); j += 8 {
				v := r.Uint64()
				for k := 0; k < 8 && j+k < len(b); k++ {
					b[j+k] = byte(v >> (8 * k))
				}
			}
			out[i] = b
		} else {
			out[i] = JSONEvent(r, i)
		}
	}
	return out
}

// Profile is a named set of workloads and targets.
type Profile struct {
	Name      string     `json:"name"`
	Targets   []string   `json:"targets"`
	Workloads []Workload `json:"workloads"`
	// FloorObjects is how many flush_bytes objects the store floor PUTs.
	FloorObjects int `json:"floor_objects"`
	// FloorCommits is how many etcd commit transactions the floor times.
	FloorCommits int `json:"floor_commits"`
	// FlushBytes is the nodes' flush_bytes (and the floor's object size).
	FlushBytes int `json:"flush_bytes"`
	// StartupRounds is how many times start-to-first-ack is measured.
	StartupRounds int `json:"startup_rounds"`
	// NodeSettings are VARVE_* settings (NAME=value) every varve serve
	// node of the MinIO targets starts with, besides flush_bytes.
	NodeSettings []string `json:"node_settings,omitempty"`
	// Compact runs the compact role on the first node of the MinIO
	// targets (the other profiles measure ingest and fetch only).
	Compact bool `json:"compact,omitempty"`
}

// Target names.
const (
	TargetVarveFS     = "varve-fs"      // varve dev: embedded etcd, filesystem store
	TargetVarveMinIO1 = "varve-minio-1" // one varve serve on MinIO + etcd
	TargetVarveMinIO2 = "varve-minio-2" // two varve serve ingest nodes on MinIO + etcd
	TargetVarveMinIO4 = "varve-minio-4" // four varve serve ingest nodes on MinIO + etcd

	// One, two and four ingest nodes (roles ingest,sequence) and one
	// fetch node, as the Terraform module deploys them: producers write
	// to the ingest tier, consumers read from the fetch node.
	TargetVarveMinIOTiered1 = "varve-minio-tiered-1"
	TargetVarveMinIOTiered2 = "varve-minio-tiered-2"
	TargetVarveMinIOTiered4 = "varve-minio-tiered-4"
	TargetNATS              = "nats-jetstream" // nats-server -js, file storage
	TargetRedis             = "redis-streams"  // redis-server, AOF everysec
)

// TargetVarveMinIO1Secure is varve-minio-1 with TLS and auth token on: the
// cost of security (not in the profiles: ask for it with --targets).
const TargetVarveMinIO1Secure = "varve-minio-1-tls-token"

// TargetVarveMinIO1Direct is varve-minio-1 with VARVE_COMMIT_PATH=direct:
// the node commits with its own etcd transactions rather than through the
// elected sequencer (the default of every other Varve target). In the
// scale profile, for the comparison.
const TargetVarveMinIO1Direct = "varve-minio-1-direct"

// Values of a VarveMinIO target's CommitPath (the nodes'
// VARVE_COMMIT_PATH).
const (
	CommitPathSequencer = "sequencer"
	CommitPathDirect    = "direct"
)

// NATSVersion is the nats-server the NATS peer is built from.
const NATSVersion = "v2.15.2"

// AllTargets lists every target of the profiles, in report order.
var AllTargets = []string{TargetVarveFS, TargetVarveMinIO1, TargetVarveMinIO2, TargetNATS, TargetRedis}

// ExtraTargets are known targets the profiles leave out.
var ExtraTargets = []string{TargetVarveMinIO1Secure, TargetVarveMinIO1Kafka}

// ScaleTargets are the scale profile's targets: Varve on MinIO with one,
// two and four ingest nodes and etcd as its own process, each node with
// every role and then as an ingest tier beside one fetch node, and one
// node on the direct commit path.
var ScaleTargets = []string{TargetVarveMinIO1, TargetVarveMinIO2, TargetVarveMinIO4,
	TargetVarveMinIOTiered1, TargetVarveMinIOTiered2, TargetVarveMinIOTiered4, TargetVarveMinIO1Direct}

// KnownTargets lists every target NewTarget knows.
func KnownTargets() []string {
	return append(append(slices.Clone(AllTargets), TargetVarveMinIO4, TargetVarveMinIOTiered1, TargetVarveMinIOTiered2,
		TargetVarveMinIOTiered4, TargetVarveMinIO1Direct), ExtraTargets...)
}

// Profiles returns the built-in profiles: quick (a few minutes on 2 cores,
// run by `make bench`), full, and scale (many partitions and ingest nodes,
// see ScaleWorkload).
func Profiles() map[string]Profile {
	latency := Workload{
		Name: "json-rate", Payload: PayloadJSON, Partitions: 8, Producers: 2, Consumers: 2,
		Rate: 2000, Duration: 15 * time.Second, Warmup: 2 * time.Second, Keys: 10000,
		Linger: 5 * time.Millisecond, MaxBatchBytes: 1 << 20,
	}
	maxRate := latency
	maxRate.Name, maxRate.Rate = "json-max", 0
	full := []Workload{}
	for _, w := range []Workload{latency, maxRate} {
		w.Duration, w.Warmup = 60*time.Second, 5*time.Second
		full = append(full, w)
	}
	random := maxRate
	random.Name, random.Payload, random.MessageBytes = "random-1k-max", PayloadRandom, 1024
	random.Duration, random.Warmup = 60*time.Second, 5*time.Second
	many := latency
	many.Name, many.Partitions, many.Producers, many.Consumers, many.Rate = "json-100p-rate", 100, 4, 4, 5000
	many.Duration, many.Warmup = 60*time.Second, 5*time.Second
	full = append(full, random, many)
	// The scale workload at 10,000 partitions runs in full only (scale runs
	// it with --partitions 10000).
	big := ScaleWorkload(10000)
	big.Duration, big.Warmup = 60*time.Second, 5*time.Second
	full = append(full, big)
	// throughput: issue 15's comparison in one run — both payloads at max
	// rate and json at a fixed rate, against Redis Streams and NATS
	// JetStream.
	quickRandom := random
	quickRandom.Duration, quickRandom.Warmup = 20*time.Second, 2*time.Second
	return map[string]Profile{
		"throughput": {Name: "throughput", Targets: []string{"varve-minio-1", "redis-streams", "nats-jetstream"},
			Workloads:    []Workload{latency, maxRate, quickRandom},
			FloorObjects: 16, FloorCommits: 200, FlushBytes: 8 << 20, StartupRounds: 3},
		"quick": {Name: "quick", Targets: AllTargets, Workloads: []Workload{latency, maxRate},
			FloorObjects: 16, FloorCommits: 200, FlushBytes: 8 << 20, StartupRounds: 3},
		"full": {Name: "full", Targets: AllTargets, Workloads: full,
			FloorObjects: 64, FloorCommits: 1000, FlushBytes: 8 << 20, StartupRounds: 10},
		// scale: the same keyed, rate-limited load at 8 partitions (the
		// baseline) and at 1,000, on one, two and four ingest nodes. Its
		// floor is small: it is there for the ratios, the scale figures
		// (etcd, commit, store requests, CPU per MiB) are the point.
		"scale": {Name: "scale", Targets: ScaleTargets, Workloads: []Workload{ScaleWorkload(8), ScaleWorkload(1000)},
			FloorObjects: 8, FloorCommits: 100, FlushBytes: 8 << 20},
		// steady: the 1,000-partition scale load for four minutes on one
		// node, etcd's footprint sampled every 10 s, with compaction,
		// retention passes (which prune the sequencer's records) and the
		// sequencer's dedupe window (which bounds how long records are
		// kept) short enough that the run spans ten times the data of
		// the steady state: etcd's live bytes must stay flat.
		"steady": {Name: "steady", Targets: []string{TargetVarveMinIO1}, Workloads: []Workload{SteadyWorkload()},
			FloorObjects: 8, FloorCommits: 100, FlushBytes: 8 << 20, NodeSettings: SteadyNodeSettings, Compact: true},
	}
}
