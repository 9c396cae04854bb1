package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
)

// Env is what every target is started with.
type Env struct {
	// VarveBin is the varve binary run as the server processes.
	VarveBin string
	// Dir is a scratch directory for the target's data and logs.
	Dir string
	// FlushBytes is the nodes' flush_bytes (0: the node default).
	FlushBytes int
	// NodeSettings are more VARVE_* settings of every varve serve node
	// (Profile.NodeSettings).
	NodeSettings []string
	// Compact runs the compact role (compaction, retention, record
	// pruning, GC) on the first varve serve node (Profile.Compact).
	Compact bool
}

// Msg is one consumed record as the bench sees it.
type Msg struct {
	Bytes  int
	SentAt time.Time
}

// Producer sends records of one workload. ack is called once per record
// when the target has acknowledged it as durable, or with the error.
type Producer interface {
	Send(ctx context.Context, topic string, key, value []byte, sentAt time.Time, ack func(error))
	Close(ctx context.Context) error
}

// Consumer reads records of assigned partitions from the start of a topic.
type Consumer interface {
	Poll(ctx context.Context) ([]Msg, error)
	Close()
}

// Target is a system under test, started and stopped by the bench on
// loopback. Varve targets and peers implement it alike.
type Target interface {
	Name() string
	Start(ctx context.Context, env Env) error
	// Stop stops every process the target started.
	Stop()
	CreateTopic(ctx context.Context, topic string, partitions int) error
	NewProducer(i int, w Workload) Producer
	NewConsumer(i int, topic string, partitions []int32) Consumer
	// Processes reports CPU time and peak RSS of the target's server processes.
	Processes() []ProcStats
}

// VarveTarget is a target running Varve, which also reports its own
// counters and exposes its store and etcd for the floor.
type VarveTarget interface {
	Target
	Counters(ctx context.Context) (Counters, error)
	// FloorStore is a store of the same kind and place as the target's (a
	// separate directory or bucket), for the physical floor.
	FloorStore(ctx context.Context) (tier.Store, error)
	EtcdEndpoints() []string
}

// Counters are Varve's cumulative figures: from the nodes' /metrics and etcd.
type Counters struct {
	Puts        float64 `json:"puts"`
	Gets        float64 `json:"gets"`
	IngestBytes float64 `json:"ingest_bytes"`
	ObjectBytes float64 `json:"object_bytes"`
	Records     float64 `json:"records"`
	EtcdKeys    int64   `json:"etcd_keys"`
	EtcdDBBytes int64   `json:"etcd_db_bytes"`
	// EtcdBytes is the live keys' and values' size (maintenance.Footprint).
	EtcdBytes    int64 `json:"etcd_bytes"`
	EtcdRevision int64 `json:"etcd_revision"`

	// Commit is the nodes' commit duration histogram, merged.
	Commit Hist `json:"commit_seconds"`
	// Put is the nodes' segment build and PUT duration histogram
	// (varve_ingest_put_duration_seconds), merged.
	Put Hist `json:"put_seconds"`
	// Flush is the nodes' time from a file's first record to its commit
	// (varve_ingest_flush_duration_seconds), merged.
	Flush Hist `json:"flush_seconds"`
	// PutHedges and PutHedgesWon are the nodes' segment PUTs raced by a
	// second one (varve_ingest_put_hedges_total) and those the second won.
	PutHedges    float64 `json:"put_hedges"`
	PutHedgesWon float64 `json:"put_hedges_won"`
	// CommitRetries is the nodes' commit attempts made again
	// (varve_ingest_commit_retries_total: direct-path conflicts,
	// sequencer calls after a lost leader).
	CommitRetries float64 `json:"commit_retries"`
	// SeqBatches are the batches the nodes wrote as sequencer leader
	// (varve_sequencer_batches_total), one etcd transaction each.
	SeqBatches float64 `json:"sequencer_batches"`
	// EtcdTxnsBy are the Txn requests the nodes sent to etcd, by caller
	// (varve_etcd_requests_total{method="Txn"}: "sequencer", "ingest",
	// "compaction", ..., or the API procedure a client called).
	EtcdTxnsBy map[string]float64 `json:"etcd_txns_by_caller,omitempty"`
	// From etcd's own /metrics: Txn RPCs answered, raft proposals
	// committed (every write request), keys written, and the CPU seconds
	// of the etcd process (0 where etcd shares a process, as in varve dev).
	EtcdTxns      float64 `json:"etcd_txns"`
	EtcdProposals float64 `json:"etcd_proposals"`
	EtcdPuts      float64 `json:"etcd_puts"`
	EtcdCPU       float64 `json:"etcd_cpu_seconds"`
	// StorePuts and StoreGets are the S3 requests the store counted
	// (MinIO's metrics; StoreMetrics is false on other stores).
	StorePuts    float64 `json:"store_puts"`
	StoreGets    float64 `json:"store_gets"`
	StoreMetrics bool    `json:"store_metrics"`
}

// subCounts returns c - o by key, without the keys that did not grow.
func subCounts(c, o map[string]float64) map[string]float64 {
	var out map[string]float64
	for k, n := range c {
		if d := n - o[k]; d > 0 {
			if out == nil {
				out = map[string]float64{}
			}
			out[k] = d
		}
	}
	return out
}

// Sub returns c - o.
func (c Counters) Sub(o Counters) Counters {
	return Counters{
		Puts: c.Puts - o.Puts, Gets: c.Gets - o.Gets, IngestBytes: c.IngestBytes - o.IngestBytes,
		ObjectBytes: c.ObjectBytes - o.ObjectBytes, Records: c.Records - o.Records,
		EtcdKeys: c.EtcdKeys - o.EtcdKeys, EtcdDBBytes: c.EtcdDBBytes - o.EtcdDBBytes, EtcdBytes: c.EtcdBytes - o.EtcdBytes,
		EtcdRevision: c.EtcdRevision - o.EtcdRevision,
		Commit:       c.Commit.Sub(o.Commit), Put: c.Put.Sub(o.Put), Flush: c.Flush.Sub(o.Flush),
		PutHedges: c.PutHedges - o.PutHedges, PutHedgesWon: c.PutHedgesWon - o.PutHedgesWon,
		CommitRetries: c.CommitRetries - o.CommitRetries, SeqBatches: c.SeqBatches - o.SeqBatches,
		EtcdTxnsBy: subCounts(c.EtcdTxnsBy, o.EtcdTxnsBy),
		EtcdTxns:   c.EtcdTxns - o.EtcdTxns, EtcdProposals: c.EtcdProposals - o.EtcdProposals,
		EtcdPuts: c.EtcdPuts - o.EtcdPuts, EtcdCPU: c.EtcdCPU - o.EtcdCPU,
		StorePuts: c.StorePuts - o.StorePuts, StoreGets: c.StoreGets - o.StoreGets, StoreMetrics: c.StoreMetrics && o.StoreMetrics,
	}
}

// NewTarget returns the target called name.
func NewTarget(name string) (Target, error) {
	switch name {
	case TargetVarveFS:
		return &VarveFS{}, nil
	case TargetVarveMinIO1:
		return &VarveMinIO{Nodes: 1}, nil
	case TargetVarveMinIO2:
		return &VarveMinIO{Nodes: 2}, nil
	case TargetVarveMinIO4:
		return &VarveMinIO{Nodes: 4}, nil
	case TargetVarveMinIOTiered1:
		return &VarveMinIO{Nodes: 1, Tiered: true}, nil
	case TargetVarveMinIOTiered2:
		return &VarveMinIO{Nodes: 2, Tiered: true}, nil
	case TargetVarveMinIOTiered4:
		return &VarveMinIO{Nodes: 4, Tiered: true}, nil
	case TargetVarveMinIO1Secure:
		return &VarveMinIO{Nodes: 1, Secure: true}, nil
	case TargetVarveMinIO1Direct:
		return &VarveMinIO{Nodes: 1, CommitPath: CommitPathDirect}, nil
	case TargetVarveMinIO1Kafka:
		return &VarveMinIO{Nodes: 1, Kafka: true}, nil
	case TargetNATS:
		return &NATS{}, nil
	case TargetRedis:
		return &Redis{}, nil
	}
	return nil, fmt.Errorf("unknown target %q (known: %s)", name, strings.Join(KnownTargets(), ", "))
}

// producerBuffer bounds each producer's unacknowledged bytes, so a max-rate
// run measures the target's latency rather than a deep client queue.
const producerBuffer = 8 << 20

// tsHeader carries the send time (Unix nanoseconds, big endian) in every
// record, so consumers measure end-to-end latency without touching the
// payload.
const tsHeader = "bench-ts"

func encodeTS(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }

func decodeTS(b []byte) time.Time {
	if len(b) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)))
}

// varveCluster is what both Varve targets share: API addresses, processes
// and the client side through the sdk.
type varveCluster struct {
	// addrs are every node's API address; produceAddrs and consumeAddrs,
	// when set, the nodes producers and consumers use (else addrs).
	addrs                      []string
	produceAddrs, consumeAddrs []string
	procs                      []*Process
	etcd                       []string
	// opts are the SDK options of every client (TLS, token).
	opts []sdk.Option
	// etcdOwnProcess: etcd runs in a process of its own, so its /metrics'
	// process CPU is etcd's alone.
	etcdOwnProcess bool
	// minioEndpoint, when set, is scraped for the S3 requests served.
	minioEndpoint string
	// kafka, when set, are the nodes' Kafka listeners (host:port): the
	// producers and consumers are franz-go clients of them, spread round
	// robin, instead of the SDK's.
	kafka []string
}

// orAll is some, or all when some is empty.
func orAll(some, all []string) []string {
	if len(some) > 0 {
		return some
	}
	return all
}

func (v *varveCluster) CreateTopic(ctx context.Context, topic string, partitions int) error {
	c := admin.New(v.addrs[0], v.opts...)
	defer c.Close()
	_, err := c.CreateTopic(ctx, topic, int32(partitions), nil)
	return err
}

type varveProducer struct {
	st *produceStats
	c  *sdk.Client
	p  *sdk.Producer
}

func (p *varveProducer) rpcStats() *produceStats { return p.st }

// NewProducer returns producer i, spread over the nodes round robin.
func (v *varveCluster) NewProducer(i int, w Workload) Producer {
	if len(v.kafka) > 0 {
		return newKafkaProducer(v.kafka[i%len(v.kafka)], w)
	}
	st := newProduceStats()
	addrs := orAll(v.produceAddrs, v.addrs)
	c := sdk.New(addrs[i%len(addrs)], append(slices.Clip(v.opts), sdk.WithHooks(st.hooks()))...)
	return &varveProducer{st: st, c: c, p: c.NewProducer(sdk.ProducerOptions{Linger: w.Linger, MaxBatchBytes: w.MaxBatchBytes, MaxBufferedBytes: producerBuffer})}
}

func (p *varveProducer) Send(ctx context.Context, topic string, key, value []byte, sentAt time.Time, ack func(error)) {
	p.p.Produce(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: key, Value: value,
		Headers: []sdk.Header{{Key: tsHeader, Value: encodeTS(sentAt)}}},
		func(_ sdk.Record, err error) { ack(err) })
}

func (p *varveProducer) Close(ctx context.Context) error {
	err := p.p.Close(ctx)
	p.c.Close()
	return err
}

type varveConsumer struct {
	c    *sdk.Client
	cons *sdk.Consumer
}

// NewConsumer returns consumer i reading partitions, from node i round robin.
func (v *varveCluster) NewConsumer(i int, topic string, partitions []int32) Consumer {
	if len(v.kafka) > 0 {
		return newKafkaConsumer(v.kafka[i%len(v.kafka)], topic, partitions)
	}
	addrs := orAll(v.consumeAddrs, v.addrs)
	c := sdk.New(addrs[i%len(addrs)], v.opts...)
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 200 * time.Millisecond, MaxBytes: 4 << 20})
	cons.Assign(partitions...)
	return &varveConsumer{c: c, cons: cons}
}

func (c *varveConsumer) Poll(ctx context.Context) ([]Msg, error) {
	recs, err := c.cons.Poll(ctx)
	out := make([]Msg, len(recs))
	for i, r := range recs {
		out[i].Bytes = len(r.Value) + len(r.Key)
		for _, h := range r.Headers {
			if h.Key == tsHeader {
				out[i].SentAt = decodeTS(h.Value)
			}
		}
	}
	return out, err
}

func (c *varveConsumer) Close() { c.cons.Close(); c.c.Close() }

func (v *varveCluster) Processes() []ProcStats {
	var out []ProcStats
	for _, p := range v.procs {
		if st, err := p.Stats(); err == nil {
			out = append(out, st)
		}
	}
	return out
}

func (v *varveCluster) EtcdEndpoints() []string { return v.etcd }

// Counters sums the nodes' /metrics and reads etcd's key count and size.
func (v *varveCluster) Counters(ctx context.Context) (Counters, error) {
	var c Counters
	for _, a := range v.addrs {
		m, err := scrapePage(ctx, a+"/metrics")
		if err != nil {
			return c, err
		}
		c.Puts += m.sum("varve_ingest_flushes_total", nil)
		c.Gets += m.sum("varve_fetch_object_gets_total", nil)
		c.IngestBytes += m.sum("varve_ingest_bytes_total", nil)
		c.ObjectBytes += m.sum("varve_ingest_object_bytes_total", nil)
		c.Records += m.sum("varve_ingest_records_total", nil)
		c.CommitRetries += m.sum("varve_ingest_commit_retries_total", nil)
		c.PutHedges += m.sum("varve_ingest_put_hedges_total", nil)
		c.PutHedgesWon += m.sum("varve_ingest_put_hedges_won_total", nil)
		c.SeqBatches += m.sum("varve_sequencer_batches_total", nil)
		for caller, n := range m.sumBy(metricEtcdRequests, map[string]string{"method": "Txn"}, "caller") {
			if c.EtcdTxnsBy == nil {
				c.EtcdTxnsBy = map[string]float64{}
			}
			c.EtcdTxnsBy[caller] += n
		}
		c.Commit = c.Commit.merge(m.hist(metricCommitSeconds))
		c.Put = c.Put.merge(m.hist(metricPutSeconds))
		c.Flush = c.Flush.merge(m.hist(metricFlushSeconds))
	}
	if err := etcdCounters(ctx, v.etcd[0], v.etcdOwnProcess, &c); err != nil {
		return c, err
	}
	if v.minioEndpoint != "" {
		if err := minioCounters(ctx, v.minioEndpoint, &c); err != nil {
			return c, err
		}
	}
	mc, err := metadata.Connect(ctx, metadata.Config{Endpoints: v.etcd})
	if err != nil {
		return c, err
	}
	defer mc.Close()
	st, err := mc.Stats(ctx)
	if err != nil {
		return c, err
	}
	c.EtcdKeys, c.EtcdDBBytes, c.EtcdRevision = st.Keys, st.DBSize, st.Revision
	fp, err := maintenance.New(mc).Footprint(ctx)
	if err != nil {
		return c, err
	}
	c.EtcdBytes = fp.Bytes
	return c, nil
}

// VarveFS is `varve dev`: one process with every role, its own embedded
// etcd and the filesystem store.
type VarveFS struct {
	varveCluster
	dir string
}

func (t *VarveFS) Name() string { return TargetVarveFS }

// Sequenced: `varve dev` commits through its sequencer (the default).
func (t *VarveFS) Sequenced() bool { return true }

func (t *VarveFS) Start(ctx context.Context, env Env) error {
	t.dir = filepath.Join(env.Dir, TargetVarveFS)
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePortRun(3)
		if err != nil {
			return err
		}
		args := []string{"dev", "--data-dir", filepath.Join(t.dir, "data"), "--listen", fmt.Sprintf("127.0.0.1:%d", port)}
		if env.FlushBytes > 0 {
			args = append(args, "--flush-bytes", strconv.Itoa(env.FlushBytes))
		}
		p, err := StartProcess("varve-dev", t.dir, env.VarveBin, nil, args...)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("http://127.0.0.1:%d", port)
		if lastErr = waitReady(addr+"/readyz", p, 60*time.Second); lastErr != nil {
			p.Stop(5 * time.Second)
			continue
		}
		t.addrs, t.procs = []string{addr}, []*Process{p}
		t.etcd = []string{fmt.Sprintf("http://127.0.0.1:%d", port+1)}
		return nil
	}
	return fmt.Errorf("start varve dev: %w", lastErr)
}

func (t *VarveFS) Stop() {
	for _, p := range t.procs {
		p.Stop(30 * time.Second)
	}
}

func (t *VarveFS) FloorStore(ctx context.Context) (tier.Store, error) {
	return tier.NewFS(filepath.Join(t.dir, "floor-objects"))
}

// VarveMinIO is Nodes `varve serve` processes (ingest and fetch) on a real
// MinIO, with etcd embedded in the bench process.
type VarveMinIO struct {
	varveCluster
	Nodes int
	// Tiered runs the Nodes as an ingest tier (roles ingest,sequence, the
	// producers' nodes) and one more node as the fetch tier (roles fetch,
	// and compact when asked: the consumers' node), as the Terraform
	// module deploys them; otherwise every node has every role and the
	// producers and consumers are spread over all of them.
	Tiered bool
	// Secure runs the nodes with TLS (a CA made for the run) and auth
	// token (a bootstrap key the clients use).
	Secure bool
	sec    secureFiles
	// CommitPath, when set, is every node's VARVE_COMMIT_PATH (direct or
	// sequencer); empty leaves the node's default (sequencer).
	CommitPath string
	// Kafka serves the Kafka protocol on every node (--kafka-listen on a
	// free loopback port), and the producers and consumers are franz-go
	// clients of it instead of the SDK (not with Tiered or Secure).
	Kafka bool
	// kafkaOf maps a node's API address to its Kafka listener's.
	kafkaOf map[string]string

	env      Env
	dir      string
	etcdProc *Process
	minio    *testenv.MinIOServer
	stopMin  func()
	bucket   string
	s3client *s3.Client
}

// NodeAddrs are the API base URLs of the target's nodes, in start order,
// and those its producers and its consumers use.
func (t *VarveMinIO) NodeAddrs() (all, produce, consume []string) {
	return t.addrs, orAll(t.produceAddrs, t.addrs), orAll(t.consumeAddrs, t.addrs)
}

// Sequenced reports a target whose nodes commit through the sequencer.
func (t *VarveMinIO) Sequenced() bool { return t.CommitPath != CommitPathDirect }

// nodeSecret is the cluster secret nodes present to each other ("" when
// not Secure): the floor's commits through the sequencer present it too.
func (t *VarveMinIO) nodeSecret() string {
	if !t.Secure {
		return ""
	}
	return t.sec.secretValue
}

func (t *VarveMinIO) Name() string {
	n := fmt.Sprintf("varve-minio-%d", t.Nodes)
	if t.Tiered {
		n = fmt.Sprintf("varve-minio-tiered-%d", t.Nodes)
	}
	if t.Secure {
		n += "-tls-token"
	}
	if t.CommitPath == CommitPathDirect {
		n += "-direct"
	}
	if t.Kafka {
		n += "-kafka"
	}
	return n
}

func (t *VarveMinIO) Start(ctx context.Context, env Env) error {
	if t.Kafka && (t.Tiered || t.Secure) {
		return fmt.Errorf("%s: the Kafka clients need nodes with the ingest and fetch roles and without TLS", t.Name())
	}
	t.env = env
	t.dir = filepath.Join(env.Dir, t.Name())
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return err
	}
	if err := t.startEtcd(ctx); err != nil {
		return err
	}
	// MinIO's metrics without a bearer token, for the S3 requests it
	// served (MinIO inherits the bench's environment).
	os.Setenv("MINIO_PROMETHEUS_AUTH_TYPE", "public")
	m, stop, err := testenv.StartMinIO(filepath.Join(t.dir, "minio"))
	if err != nil {
		t.Stop()
		return fmt.Errorf("start minio: %w", err)
	}
	t.minio, t.stopMin = m, stop
	t.minioEndpoint = m.Endpoint
	t.s3client = s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(m.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	t.bucket = "varve-bench"
	if err := t.createBucket(ctx, t.bucket); err != nil {
		t.Stop()
		return err
	}
	if t.Secure {
		if t.sec, err = newSecureFiles(t.dir); err != nil {
			t.Stop()
			return err
		}
		t.opts = t.sec.clientOptions()
	}
	roles := "ingest,fetch,sequence" // every node a candidate, as serve's default roles
	if t.Tiered {
		roles = "ingest,sequence"
	}
	if !t.Sequenced() {
		roles = strings.TrimSuffix(roles, ",sequence")
	}
	nodes := make([]string, t.Nodes, t.Nodes+1)
	for i := range nodes {
		nodes[i] = roles
	}
	if t.Tiered {
		nodes = append(nodes, "fetch")
	}
	if env.Compact {
		i := 0 // the first node, or the fetch tier's
		if t.Tiered {
			i = len(nodes) - 1
		}
		nodes[i] += ",compact"
	}
	for i, r := range nodes {
		p, addr, err := t.StartNode(ctx, fmt.Sprintf("node-%d", i), r)
		if err != nil {
			t.Stop()
			return err
		}
		if err := waitReady(addr+"/readyz", p, 60*time.Second); err != nil {
			t.Stop()
			return err
		}
		t.procs = append(t.procs, p)
		t.addrs = append(t.addrs, addr)
		if k := t.kafkaOf[addr]; k != "" {
			if err := waitTCP(k, p, 60*time.Second); err != nil {
				t.Stop()
				return err
			}
			t.kafka = append(t.kafka, k)
		}
	}
	if t.Tiered {
		t.produceAddrs, t.consumeAddrs = t.addrs[:t.Nodes], t.addrs[t.Nodes:]
	}
	return nil
}

// createBucket creates a bucket, waiting up to 30 s while MinIO answers
// that it is not initialized yet (its health check can pass before its
// object layer is up on a loaded machine).
func (t *VarveMinIO) createBucket(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := t.s3client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil {
			return nil
		}
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "XMinioServerNotInitialized" || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("create bucket %s on %s: %w", name, t.minio.Endpoint, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartNode starts one more `varve serve` with roles against the target's
// etcd and bucket, without waiting for it.
func (t *VarveMinIO) StartNode(ctx context.Context, id, roles string) (*Process, string, error) {
	port, err := freePortRun(1)
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"serve", "--roles", roles, "--listen", addr, "--node-id", id,
		"--etcd-endpoints", strings.Join(t.etcd, ","), "--bucket", "s3://" + t.bucket + "/varve",
		"--s3-endpoint", t.minio.Endpoint, "--s3-path-style"}
	if t.env.FlushBytes > 0 {
		args = append(args, "--flush-bytes", strconv.Itoa(t.env.FlushBytes))
	}
	env := []string{"AWS_ACCESS_KEY_ID=" + t.minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + t.minio.SecretKey, "AWS_REGION=us-east-1"}
	if t.CommitPath != "" {
		env = append(env, "VARVE_COMMIT_PATH="+t.CommitPath)
	}
	env = append(env, t.env.NodeSettings...)
	kafkaAddr := ""
	if t.Kafka && strings.Contains(roles, "ingest") && strings.Contains(roles, "fetch") {
		kport, err := freePortRun(1)
		if err != nil {
			return nil, "", err
		}
		kafkaAddr = fmt.Sprintf("127.0.0.1:%d", kport)
		args = append(args, "--kafka-listen", kafkaAddr)
	}
	scheme := "http://"
	if t.Secure {
		args = append(args, t.sec.serveArgs()...)
		env = append(env, "VARVE_BOOTSTRAP_TOKEN="+t.sec.token)
		scheme = "https://"
	}
	p, err := StartProcess("varve-serve-"+id, t.dir, t.env.VarveBin, env, args...)
	if kafkaAddr != "" {
		if t.kafkaOf == nil {
			t.kafkaOf = map[string]string{}
		}
		t.kafkaOf[scheme+addr] = kafkaAddr
	}
	return p, scheme + addr, err
}

func (t *VarveMinIO) Stop() {
	for _, p := range t.procs {
		p.Stop(30 * time.Second)
	}
	t.procs = nil
	if t.stopMin != nil {
		t.stopMin()
		t.stopMin = nil
	}
	if t.etcdProc != nil {
		t.etcdProc.Stop(10 * time.Second)
		t.etcdProc = nil
	}
}

// startEtcd runs etcd as its own process (`varve etcd`), so its CPU and
// memory are measured apart from the bench's clients.
func (t *VarveMinIO) startEtcd(ctx context.Context) error {
	port, err := freePortRun(2)
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", port)
	p, err := StartProcess("etcd", t.dir, t.env.VarveBin, nil, "etcd", "--data-dir", filepath.Join(t.dir, "etcd"),
		"--listen-client", client, "--listen-peer", fmt.Sprintf("http://127.0.0.1:%d", port+1))
	if err != nil {
		return err
	}
	t.etcdProc, t.etcd, t.etcdOwnProcess = p, []string{client}, true
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.LogTail(), "etcd ready") {
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("etcd did not start: %s", p.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Processes adds etcd, MinIO, and the bench process itself (the clients).
// storeProcName names the MinIO process in reports.
const storeProcName = "minio"

func (t *VarveMinIO) Processes() []ProcStats {
	out := append(t.varveCluster.Processes(), SelfStats())
	if t.etcdProc != nil {
		if st, err := t.etcdProc.Stats(); err == nil {
			out = append(out, st)
		}
	}
	for _, pid := range childrenNamed(storeProcName) {
		if st, err := ReadProcStats(storeProcName, pid); err == nil {
			out = append(out, st)
		}
	}
	return out
}

func (t *VarveMinIO) FloorStore(ctx context.Context) (tier.Store, error) {
	name := "varve-floor"
	if err := t.createBucket(ctx, name); err != nil {
		return nil, err
	}
	return tier.NewS3(ctx, t.minio.S3Config(name))
}
