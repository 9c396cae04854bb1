package sequencer

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

var _ ingest.Committer = (*Client)(nil)

func connectEtcd(tb testing.TB) *metadata.Client {
	tb.Helper()
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// cluster is sequencer candidates in one process, named by Config.ID,
// reached in process or (rpc) over the SequencerService on loopback HTTP,
// where a node's id is its server's URL.
type cluster struct {
	tb   testing.TB
	meta *metadata.Client
	rpc  bool
	mu   sync.Mutex
	seqs map[string]*Sequencer // by id
	ids  map[string]string     // name → id
	stop map[string]context.CancelFunc
	wg   sync.WaitGroup
}

func newCluster(tb testing.TB, meta *metadata.Client) *cluster {
	c := &cluster{tb: tb, meta: meta, seqs: map[string]*Sequencer{}, ids: map[string]string{}, stop: map[string]context.CancelFunc{}}
	tb.Cleanup(func() {
		c.mu.Lock()
		for _, cancel := range c.stop {
			cancel()
		}
		c.mu.Unlock()
		c.wg.Wait()
	})
	return c
}

// start runs a candidate with cfg; cfg.ID names it.
func (c *cluster) start(cfg Config) *Sequencer { return c.startWith(c.meta, cfg) }

// startWith runs a candidate over its own etcd client.
func (c *cluster) startWith(meta *metadata.Client, cfg Config) *Sequencer {
	name := cfg.ID
	if cfg.WriterBytes == 0 {
		// No producer placement: these tests count etcd writes per batch,
		// and a first leader's placement/writers would be one more
		// (placement_test.go and the node's tests cover placement).
		cfg.WriterBytes = -1
	}
	var srv *httptest.Server
	mux := http.NewServeMux()
	if c.rpc {
		srv = httptest.NewUnstartedServer(mux)
		cfg.ID = "http://" + srv.Listener.Addr().String()
	}
	s, err := New(meta, cfg)
	if err != nil {
		c.tb.Fatal(err)
	}
	if srv != nil {
		mux.Handle(NewHandler(s))
		srv.Start()
		c.tb.Cleanup(srv.Close)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.seqs[cfg.ID], c.ids[name], c.stop[name] = s, cfg.ID, cancel
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = s.Run(ctx)
	}()
	return s
}

func (c *cluster) kill(name string) {
	c.mu.Lock()
	cancel := c.stop[name]
	c.mu.Unlock()
	cancel()
}

// node returns the candidate named name (nil if not started).
func (c *cluster) node(name string) *Sequencer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seqs[c.ids[name]]
}

func (c *cluster) dial(_ context.Context, id string) (Service, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.seqs[id]
	if !ok {
		return nil, fmt.Errorf("no node %q", id)
	}
	return s, nil
}

func (c *cluster) client() *Client {
	if c.rpc {
		return NewClient(c.meta, NewDialer(&http.Client{}))
	}
	return NewClient(c.meta, c.dial)
}

func waitLeading(tb testing.TB, s *Sequencer) {
	tb.Helper()
	if !testenv.Eventually(30*time.Second, s.Leading) {
		tb.Fatalf("sequencer %s never led", s.cfg.ID)
	}
}

func revision(tb testing.TB, meta *metadata.Client) int64 {
	tb.Helper()
	st, err := meta.Stats(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return st.Revision
}

// span is one committed block's offsets.
type span struct {
	base, n int64
	commit  string
}

// ledger collects committed blocks per partition and checks density.
type ledger struct {
	mu    sync.Mutex
	parts map[tp][]span
}

func newLedger() *ledger { return &ledger{parts: map[tp][]span{}} }

func (l *ledger) add(tb testing.TB, commit string, appends []metadata.Append, res []metadata.AppendResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, a := range appends {
		if res[i].Err != nil {
			tb.Errorf("commit %s %s/%d: %v", commit, a.Topic, a.Partition, res[i].Err)
			continue
		}
		k := tp{a.Topic, a.Partition}
		l.parts[k] = append(l.parts[k], span{res[i].Base, a.Records, commit})
	}
}

// check asserts every partition's blocks tile [0, end) with no gap and no
// overlap, and returns the number of partitions.
func (l *ledger) check(tb testing.TB) int {
	tb.Helper()
	for k, spans := range l.parts {
		sort.Slice(spans, func(i, j int) bool { return spans[i].base < spans[j].base })
		next := int64(0)
		for _, s := range spans {
			if s.base != next {
				tb.Fatalf("%s/%d: block of %s at %d, want %d (gap or duplicate)", k.topic, k.p, s.commit, s.base, next)
			}
			next += s.n
		}
	}
	return len(l.parts)
}

// flush builds one flush's appends: a block on each of parts.
func flush(topic, object string, parts []int32, records func(int32) int64) []metadata.Append {
	out := make([]metadata.Append, len(parts))
	for i, p := range parts {
		n := records(p)
		out[i] = metadata.Append{Topic: topic, Partition: p, Object: object, Off: int64(i) * 100, Len: 100, Records: n, MinTS: 1, MaxTS: 2, RawBytes: 100}
	}
	return out
}

func allParts(n int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}

// recordedCommits reads every record and counts each commit id.
func recordedCommits(tb testing.TB, meta *metadata.Client) map[string][]seqlog.Commit {
	tb.Helper()
	recs, err := seqlog.New(meta).Records(context.Background(), 0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]seqlog.Commit{}
	for _, r := range recs {
		for _, c := range r.Commits {
			out[c.ID] = append(out[c.ID], c)
		}
	}
	return out
}
