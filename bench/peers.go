package bench

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/varve-io/varve/internal/testenv"
)

// findBinary finds a peer's server binary: $env, .tools/bin/name in the
// repository, then the PATH.
func findBinary(name, env, hint string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s from %s: %w", name, env, err)
		}
		return p, nil
	}
	if root, err := testenv.RepoRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found (set %s, or %s)", name, env, hint)
}

// partitionOf places a record on a peer without its own partitioner: FNV
// of the key, or round robin without a key.
func partitionOf(key []byte, partitions int, rr *atomic.Uint64) int {
	if len(key) == 0 {
		return int(rr.Add(1) % uint64(partitions))
	}
	h := fnv.New32a()
	h.Write(key)
	return int(h.Sum32() % uint32(partitions))
}

// NATS is NATS JetStream with file storage: one stream per topic, one
// subject per partition, async publishes (the client's batching: many
// publishes in flight, acknowledged by the server once stored), ordered
// consumers.
type NATS struct {
	serverProc
	url string

	mu    sync.Mutex
	parts map[string]int
}

func (t *NATS) Name() string { return TargetNATS }

func (t *NATS) Start(ctx context.Context, env Env) error {
	return retryPortRace(func() error {
		bin, dir, port, err := preparePeer(env, TargetNATS, 2, "nats-server", "VARVE_NATS_BIN", "go install github.com/nats-io/nats-server/v2@"+NATSVersion+" into .tools/bin")
		if err != nil {
			return err
		}
		p, err := StartProcess("nats-server", dir, bin, nil, "-js", "-sd", filepath.Join(dir, "store"),
			"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-m", fmt.Sprint(port+1))
		if err != nil {
			return err
		}
		if err := waitReady(fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", port+1), p, 30*time.Second); err != nil {
			p.Stop(5 * time.Second)
			return err
		}
		t.proc, t.url, t.parts = p, fmt.Sprintf("nats://127.0.0.1:%d", port), map[string]int{}
		return nil
	})
}

// retryPortRace calls start again (up to 3 times in all) when the peer
// it started lost its ports to another process between preparePeer
// finding them free and the peer binding them.
func retryPortRace(start func() error) error {
	var err error
	for range 3 {
		if err = start(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "address already in use") {
			return err
		}
	}
	return err
}

func (t *NATS) CreateTopic(ctx context.Context, topic string, partitions int) error {
	nc, err := nats.Connect(t.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: topic, Subjects: []string{topic + ".*"}, Storage: jetstream.FileStorage}); err != nil {
		return fmt.Errorf("create stream %s: %w", topic, err)
	}
	t.mu.Lock()
	t.parts[topic] = partitions
	t.mu.Unlock()
	return nil
}

type natsProducer struct {
	t       *NATS
	nc      *nats.Conn
	js      jetstream.JetStream
	futures chan natsPending
	done    chan struct{}
	rr      atomic.Uint64
}

type natsPending struct {
	f   jetstream.PubAckFuture
	ack func(error)
}

func (t *NATS) NewProducer(i int, w Workload) Producer {
	p := &natsProducer{t: t, futures: make(chan natsPending, 65536), done: make(chan struct{})}
	nc, err := nats.Connect(t.url)
	if err == nil {
		p.nc = nc
		p.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(256, producerBuffer/max(64, w.MessageBytes, 430))))
	}
	go func() {
		defer close(p.done)
		for f := range p.futures {
			select {
			case <-f.f.Ok():
				f.ack(nil)
			case err := <-f.f.Err():
				f.ack(err)
			}
		}
	}()
	if err != nil {
		close(p.futures)
		p.futures = nil
	}
	return p
}

func (p *natsProducer) Send(ctx context.Context, topic string, key, value []byte, sentAt time.Time, ack func(error)) {
	if p.futures == nil {
		ack(errors.New("nats: not connected"))
		return
	}
	p.t.mu.Lock()
	n := p.t.parts[topic]
	p.t.mu.Unlock()
	m := nats.NewMsg(fmt.Sprintf("%s.%d", topic, partitionOf(key, n, &p.rr)))
	m.Data = value
	m.Header.Set(tsHeader, fmt.Sprint(sentAt.UnixNano()))
	if len(key) > 0 {
		m.Header.Set("key", string(key))
	}
	f, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute))
	if err != nil {
		ack(err)
		return
	}
	p.futures <- natsPending{f: f, ack: ack}
}

func (p *natsProducer) Close(ctx context.Context) error {
	if p.futures == nil {
		return errors.New("nats: not connected")
	}
	close(p.futures)
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.nc.Close()
	return nil
}

type natsConsumer struct {
	nc  *nats.Conn
	cc  jetstream.ConsumeContext
	ch  chan Msg
	err error
}

// NewConsumer returns an ordered consumer of the partitions' subjects from
// the start, delivering continuously (pull-based Consume) into a buffer
// that Poll drains.
func (t *NATS) NewConsumer(i int, topic string, partitions []int32) Consumer {
	c := &natsConsumer{ch: make(chan Msg, 1<<16)}
	nc, err := nats.Connect(t.url)
	if err != nil {
		c.err = err
		return c
	}
	c.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		c.err = err
		return c
	}
	var subj []string
	for _, p := range partitions {
		subj = append(subj, fmt.Sprintf("%s.%d", topic, p))
	}
	cons, err := js.OrderedConsumer(context.Background(), topic, jetstream.OrderedConsumerConfig{FilterSubjects: subj, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		c.err = err
		return c
	}
	c.cc, c.err = cons.Consume(func(m jetstream.Msg) {
		var ns int64
		fmt.Sscan(m.Headers().Get(tsHeader), &ns)
		c.ch <- Msg{Bytes: len(m.Data()) + len(m.Headers().Get("key")), SentAt: time.Unix(0, ns)}
	})
	return c
}

func (c *natsConsumer) Poll(ctx context.Context) ([]Msg, error) {
	if c.err != nil {
		time.Sleep(100 * time.Millisecond)
		return nil, c.err
	}
	var out []Msg
	select {
	case m := <-c.ch:
		out = append(out, m)
	case <-time.After(200 * time.Millisecond):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(out) < 4096 {
		select {
		case m := <-c.ch:
			out = append(out, m)
		default:
			return out, nil
		}
	}
	return out, nil
}

func (c *natsConsumer) Close() {
	if c.cc != nil {
		c.cc.Stop()
	}
	if c.nc != nil {
		c.nc.Close()
	}
}

// preparePeer finds target's server binary (findBinary of name, envVar,
// hint), makes its directory under env.Dir and finds a run of ports free
// ports for it.
func preparePeer(env Env, target string, ports int, name, envVar, hint string) (bin, dir string, port int, err error) {
	if bin, err = findBinary(name, envVar, hint); err != nil {
		return "", "", 0, err
	}
	dir = filepath.Join(env.Dir, target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", 0, err
	}
	if port, err = freePortRun(ports); err != nil {
		return "", "", 0, err
	}
	return bin, dir, port, nil
}

// serverProc is a peer served by one process it started: Stop and
// Processes of the NATS and Redis targets.
type serverProc struct{ proc *Process }

func (s *serverProc) Stop() {
	if s.proc != nil {
		s.proc.Stop(10 * time.Second)
	}
}

func (s *serverProc) Processes() []ProcStats {
	if st, err := s.proc.Stats(); err == nil {
		return []ProcStats{st}
	}
	return nil
}

// Redis is Redis Streams (Debian redis-server, AOF with appendfsync
// everysec): one stream per partition, pipelined XADD (the client's
// batching), XREADGROUP with a group per consumer.
type Redis struct {
	serverProc
	addr string

	mu    sync.Mutex
	parts map[string]int
	group atomic.Int64
}

func (t *Redis) Name() string { return TargetRedis }

func (t *Redis) Start(ctx context.Context, env Env) error {
	return retryPortRace(func() error { return t.start(env) })
}

func (t *Redis) start(env Env) error {
	bin, dir, port, err := preparePeer(env, TargetRedis, 1, "redis-server", "VARVE_REDIS_BIN", "apt-get install -y redis-server")
	if err != nil {
		return err
	}
	p, err := StartProcess("redis-server", dir, bin, nil, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--dir", dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no")
	if err != nil {
		return err
	}
	t.addr, t.proc, t.parts = fmt.Sprintf("127.0.0.1:%d", port), p, map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := dialRESP(t.addr)
		if err == nil {
			_, err = c.do("PING")
			c.close()
			if err == nil {
				return nil
			}
		}
		if p.Exited() || time.Now().After(deadline) {
			p.Stop(time.Second)
			return fmt.Errorf("redis-server not ready: %v\n%s", err, p.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (t *Redis) CreateTopic(ctx context.Context, topic string, partitions int) error {
	t.mu.Lock()
	t.parts[topic] = partitions
	t.mu.Unlock()
	return nil
}

func streamKey(topic string, p int) string { return fmt.Sprintf("%s:%d", topic, p) }

// redisProducer pipelines XADDs on one connection: Send queues the command,
// a writer flushes the queue at most every linger, a reader matches replies
// to acks in order.
type redisProducer struct {
	t      *Redis
	c      *respConn
	linger time.Duration
	rr     atomic.Uint64

	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte
	queued   []func(error)
	closed   bool
	pending  chan []func(error)
	inflight chan struct{} // bounds unacknowledged batches
	wdone    chan struct{}
	rdone    chan struct{}
	err      error
}

func (t *Redis) NewProducer(i int, w Workload) Producer {
	p := &redisProducer{t: t, linger: max(w.Linger, time.Millisecond), pending: make(chan []func(error), 1024),
		inflight: make(chan struct{}, 64), wdone: make(chan struct{}), rdone: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	c, err := dialRESP(t.addr)
	if err != nil {
		p.err = err
		close(p.wdone)
		close(p.rdone)
		return p
	}
	p.c = c
	go p.writer(w.MaxBatchBytes)
	go p.reader()
	return p
}

func (p *redisProducer) Send(ctx context.Context, topic string, key, value []byte, sentAt time.Time, ack func(error)) {
	if p.c == nil {
		ack(p.err)
		return
	}
	p.t.mu.Lock()
	n := p.t.parts[topic]
	p.t.mu.Unlock()
	args := [][]byte{[]byte("XADD"), []byte(streamKey(topic, partitionOf(key, n, &p.rr))), []byte("*"),
		[]byte("v"), value, []byte("ts"), encodeTS(sentAt)}
	if len(key) > 0 {
		args = append(args, []byte("k"), key)
	}
	p.mu.Lock()
	for len(p.buf) > producerBuffer && !p.closed {
		p.cond.Wait()
	}
	p.buf = appendCommand(p.buf, args...)
	p.queued = append(p.queued, ack)
	p.mu.Unlock()
}

func (p *redisProducer) writer(maxBatch int) {
	defer close(p.wdone)
	defer close(p.pending)
	if maxBatch <= 0 {
		maxBatch = 1 << 20
	}
	for {
		time.Sleep(p.linger)
		p.mu.Lock()
		buf, acks, closed := p.buf, p.queued, p.closed
		p.buf, p.queued = nil, nil
		p.cond.Broadcast()
		p.mu.Unlock()
		if len(acks) > 0 {
			p.inflight <- struct{}{}
			p.pending <- acks
			if _, err := p.c.w.Write(buf); err != nil {
				p.err = err
			}
		}
		if closed {
			return
		}
	}
}

func (p *redisProducer) reader() {
	defer close(p.rdone)
	for acks := range p.pending {
		for _, ack := range acks {
			_, err := p.c.read()
			if err == nil && p.err != nil {
				err = p.err
			}
			ack(err)
		}
		<-p.inflight
	}
}

func (p *redisProducer) Close(ctx context.Context) error {
	if p.c == nil {
		return p.err
	}
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	select {
	case <-p.rdone:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.c.close()
	return p.err
}

type redisConsumer struct {
	c     *respConn
	group string
	name  string
	keys  []string
	err   error
}

// NewConsumer creates a consumer group of its own on each partition's
// stream, positioned at the start, and reads with XREADGROUP (NOACK).
func (t *Redis) NewConsumer(i int, topic string, partitions []int32) Consumer {
	c := &redisConsumer{group: fmt.Sprintf("g%d", t.group.Add(1)), name: fmt.Sprintf("c%d", i)}
	rc, err := dialRESP(t.addr)
	if err != nil {
		c.err = err
		return c
	}
	c.c = rc
	for _, p := range partitions {
		k := streamKey(topic, int(p))
		c.keys = append(c.keys, k)
		if _, err := rc.do("XGROUP", "CREATE", k, c.group, "0", "MKSTREAM"); err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
			c.err = err
		}
	}
	return c
}

func (c *redisConsumer) Poll(ctx context.Context) ([]Msg, error) {
	if c.err != nil {
		time.Sleep(100 * time.Millisecond)
		return nil, c.err
	}
	args := []string{"XREADGROUP", "GROUP", c.group, c.name, "COUNT", "2000", "BLOCK", "200", "NOACK", "STREAMS"}
	args = append(args, c.keys...)
	for range c.keys {
		args = append(args, ">")
	}
	v, err := c.c.do(args...)
	if err != nil {
		return nil, err
	}
	var out []Msg
	streams, _ := v.([]any)
	for _, s := range streams {
		sv, _ := s.([]any)
		if len(sv) != 2 {
			continue
		}
		entries, _ := sv[1].([]any)
		for _, e := range entries {
			ev, _ := e.([]any)
			if len(ev) != 2 {
				continue
			}
			fields, _ := ev[1].([]any)
			var m Msg
			for j := 0; j+1 < len(fields); j += 2 {
				name, _ := fields[j].([]byte)
				val, _ := fields[j+1].([]byte)
				switch string(name) {
				case "ts":
					m.SentAt = decodeTS(val)
				case "v", "k":
					m.Bytes += len(val)
				}
			}
			out = append(out, m)
		}
	}
	return out, nil
}

func (c *redisConsumer) Close() {
	if c.c != nil {
		c.c.close()
	}
}
