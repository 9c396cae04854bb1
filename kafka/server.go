package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

// Role is the role under which nodes register their Kafka address in
// etcd (metadata.Client.Register): the brokers Metadata lists.
const Role = "kafka"

// DefaultMaxRequestBytes bounds one request frame when Config sets none
// (Kafka's socket.request.max.bytes is 100 MiB).
const DefaultMaxRequestBytes = 100 << 20

// Config configures a Server.
type Config struct {
	// NodeID is the Varve node's id; its broker id is BrokerID(NodeID).
	NodeID string
	// Advertised is the host:port Metadata names for this node.
	Advertised string
	// ClusterID is what Metadata and DescribeCluster return.
	ClusterID string
	// MaxRequestBytes bounds a request frame (0: DefaultMaxRequestBytes);
	// a larger one closes the connection with a logged reason, as Kafka
	// does.
	MaxRequestBytes int
	// FetchMaxBytes caps a Fetch's max bytes (0: none).
	FetchMaxBytes int
	// IdleTimeout closes a connection with no request for that long (0:
	// 10 minutes, Kafka's connections.max.idle.ms).
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// Deps are the node's parts the listener maps Kafka onto. A node with
// only one of the ingest (In) and fetch (Fetcher) roles serves what the
// other needs through the other nodes: Metadata names ingest nodes as
// leaders, and Fetch sends consumers to a fetch node (roles.go).
type Deps struct {
	Meta    *metadata.Client
	Topics  *metadata.Cache
	In      *ingest.Ingester
	Fetcher *fetch.Fetcher
	Groups  *groups.Groups
	// ProducerStateTTL is how long an idempotent producer's state lives
	// without a produce (a node without the ingest role issues producer
	// ids with it; ingest.Config.ProducerStateTTL).
	ProducerStateTTL time.Duration
	// OffsetsByTime answers, on a node without the fetch role, the first
	// offset at or after ts of each partition (fetch.ByTimestamp) from a
	// fetch node; nil: such requests fail.
	OffsetsByTime func(ctx context.Context, topic string, parts []int32, ts int64) ([]fetch.PartitionOffset, error)
	// Security authenticates and authorizes connections; nil: every
	// connection may do everything (auth none).
	Security Security
	// RecordLimit refuses a topic's max.message.bytes (Varve's
	// max_record_bytes) that a produce request of this node could not
	// carry, as the TopicService does (topicapi.Config.RecordLimit); nil:
	// any.
	RecordLimit func(topic string, maxRecordBytes int32) error
}

// Security is what the listener needs of the node's guard: who a
// connection is, and what it may do.
type Security interface {
	// Allowed reports whether id may do op on r.
	Allowed(id guard.Identity, r authz.Resource, op authz.Operation) bool
	// AnyAllowed reports whether id may do op on some resource of kind.
	AnyAllowed(id guard.Identity, kind authz.Kind, op authz.Operation) bool
}

// Server serves the Kafka protocol on listeners. It is safe for
// concurrent use.
type Server struct {
	cfg  Config
	d    Deps
	log  *slog.Logger
	self int32

	brokers atomic.Pointer[[]broker]

	sessions *fetchSessions
	coord    *coordinator
	// frames bounds the request bytes held by all connections at once:
	// twice max_request_bytes and 64 MiB (frames.go).
	frames *budget

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
}

type broker struct {
	id            int32
	node          string
	host          string
	port          int32
	ingest, fetch bool
}

// BrokerID is the Kafka broker id of a Varve node: a stable 31-bit hash of
// its node id.
func BrokerID(node string) int32 {
	h := fnv.New32a()
	h.Write([]byte(node))
	return int32(h.Sum32() & 0x7fffffff)
}

// New returns a Server; Serve starts it on a listener.
func New(cfg Config, d Deps) (*Server, error) {
	if (d.In == nil && d.Fetcher == nil) || d.Meta == nil || d.Topics == nil || d.Groups == nil {
		return nil, errors.New("kafka: the listener needs a node with the ingest or the fetch role")
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, _, err := splitHostPort(cfg.Advertised); err != nil {
		return nil, fmt.Errorf("kafka: advertised address: %w", err)
	}
	s := &Server{cfg: cfg, d: d, log: cfg.Logger.With("listener", "kafka"), self: BrokerID(cfg.NodeID), conns: map[net.Conn]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerNode))
	s.sessions = newFetchSessions(maxFetchSessions)
	s.frames = newBudget(int64(2*cfg.MaxRequestBytes) + 64<<20)
	s.coord = newCoordinator(s)
	s.SetBrokers(map[string]string{cfg.NodeID: Registration(cfg.Advertised, d.In != nil, d.Fetcher != nil)})
	return s, nil
}

func splitHostPort(addr string) (string, int32, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: the port must be 1 to 65535", addr)
	}
	return host, int32(port), nil
}

// SetBrokers sets the live Kafka nodes (node id → advertised host:port),
// as registered under Role; this node is always among them.
func (s *Server) SetBrokers(nodes map[string]string) {
	var bs []broker
	seen := false
	for id, v := range nodes {
		addr, ingest, fetch, err := parseRegistration(v)
		var host string
		var port int32
		if err == nil {
			host, port, err = splitHostPort(addr)
		}
		if err != nil {
			s.log.Warn("kafka broker with a bad registration left out", "node", id, "value", v, "err", err)
			continue
		}
		seen = seen || id == s.cfg.NodeID
		bs = append(bs, broker{id: BrokerID(id), node: id, host: host, port: port, ingest: ingest, fetch: fetch})
	}
	if !seen {
		host, port, _ := splitHostPort(s.cfg.Advertised)
		bs = append(bs, broker{id: s.self, node: s.cfg.NodeID, host: host, port: port, ingest: s.d.In != nil, fetch: s.d.Fetcher != nil})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].node < bs[j].node })
	s.brokers.Store(&bs)
	s.coord.brokersChanged(bs)
}

func (s *Server) brokerList() []broker { return *s.brokers.Load() }

// Serve accepts connections on ln until Close; it returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("kafka listener: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c := newConn(s, nc)
			c.serve()
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, ends every connection (a request in progress
// is abandoned: a produce not yet acknowledged is retried by its
// client) and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.coord.close()
	return nil
}

// conn is one client connection. Requests are handled one at a time, in
// order, as a Kafka broker does (a client pipelines by opening more
// connections, or relies on the order of answers on one).
type conn struct {
	s        *Server
	nc       net.Conn
	remote   string
	clientID string
	id       guard.Identity
	// auth is the state of SASL on this connection (sasl.go).
	auth authState
	// throttle mutes the connection while its principal is over a quota
	// (quota.go).
	throttle throttle
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.id = guard.Identity{Super: s.d.Security == nil, Principal: "anonymous"}
	c.startAuth()
	return c
}

// allowed reports whether the connection may do op on r.
func (c *conn) allowed(kind authz.Kind, name string, op authz.Operation) bool {
	if c.s.d.Security == nil || c.id.Super {
		return true
	}
	return c.s.d.Security.Allowed(c.id, authz.Resource{Kind: kind, Name: name}, op)
}

// errDrop ends a connection: the request cannot be answered (Kafka
// closes the connection in these cases too); the reason is logged.
type errDrop struct{ reason string }

func (e errDrop) Error() string { return e.reason }

// maxAsyncProduce bounds the idempotent produce requests of one
// connection handled at once (Kafka's producers send up to 5).
const maxAsyncProduce = 5

// slot is one request's place in the connection's answer order.
type slot struct {
	done     chan struct{}
	resp     kmsg.Response // nil: nothing to send (acks=0)
	corr     int32
	flexible bool
	err      error
}

// serve reads requests and answers them in order. Requests are handled one
// at a time, as a Kafka broker does, except idempotent produce requests:
// up to maxAsyncProduce of them are appended at once (the ingester orders
// one producer's batches by sequence, however they arrive), so a producer
// with 5 requests in flight waits for about one flush, not five. Any other
// request waits for the produce requests before it.
func (c *conn) serve() {
	defer c.nc.Close()
	log := c.s.log.With("remote", c.remote)
	order := make(chan *slot, maxAsyncProduce+1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeAnswers(log, order)
	}()
	defer func() {
		close(order)
		<-writerDone
	}()
	var async sync.WaitGroup
	defer async.Wait()
	sem := make(chan struct{}, maxAsyncProduce)
	var size [4]byte
	for {
		if !c.throttle.wait(c.s.ctx) { // muted by a quota (quota.go)
			return
		}
		c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout))
		if _, err := io.ReadFull(c.nc, size[:]); err != nil {
			if !errors.Is(err, io.EOF) && c.s.ctx.Err() == nil {
				log.Debug("kafka connection closed", "err", err)
			}
			return
		}
		n := int32(binary.BigEndian.Uint32(size[:]))
		limit := c.s.cfg.MaxRequestBytes
		if c.auth.required() {
			limit = min(limit, maxSASLFrame) // sasl.go
		}
		if n < 8 || int(n) > limit {
			log.Warn("kafka connection closed: request frame size out of bounds", "bytes", n, "max", limit)
			return
		}
		body, release, err := c.readFrame(int(n))
		if err != nil {
			log.Debug("kafka connection closed mid-request", "err", err)
			return
		}
		if c.auth.rawSASL() { // a bare SASL token after SaslHandshake v0 (sasl.go)
			ok := c.rawToken(body)
			release()
			if !ok {
				return
			}
			continue
		}
		a, req, corr, early, err := c.decode(body)
		sl := &slot{done: make(chan struct{}), corr: corr}
		switch {
		case err != nil:
			release()
			sl.err = err
			close(sl.done)
		case early != nil: // ApiVersions too new for us
			release()
			sl.resp = early
			close(sl.done)
		case asyncProduce(req):
			sem <- struct{}{}
			async.Add(1)
			go func() {
				defer func() { release(); <-sem; async.Done() }()
				c.run(a, req, sl)
			}()
		default:
			async.Wait()
			c.run(a, req, sl)
			release()
		}
		select {
		case order <- sl:
		case <-writerDone:
			return
		}
		if sl.err != nil {
			return // the writer logs the reason and closes the connection
		}
		if c.auth.closing() {
			return // a refused authentication: its answer is written, then the connection closed
		}
	}
}

// run handles req into sl.
func (c *conn) run(a api, req kmsg.Request, sl *slot) {
	defer close(sl.done)
	resp, err := a.handle(c.s.ctx, c, req)
	if err != nil {
		sl.err = err
		return
	}
	if resp != nil {
		resp.SetVersion(req.GetVersion())
		sl.resp, sl.flexible = resp, req.IsFlexible()
	}
}

// writeAnswers writes the answers of the slots in order, until order is
// closed or a slot failed (the connection is then closed).
func (c *conn) writeAnswers(log *slog.Logger, order <-chan *slot) {
	var out []byte
	for sl := range order {
		<-sl.done
		if sl.err != nil {
			var d errDrop
			if errors.As(sl.err, &d) {
				log.Warn("kafka connection closed", "client", c.clientID, "reason", d.reason)
			}
			c.nc.Close()
			for range order { // let the reader go
			}
			return
		}
		if sl.resp == nil { // acks=0 produce
			continue
		}
		out = append(out[:0], 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(out[4:], uint32(sl.corr))
		if sl.flexible && sl.resp.Key() != 18 { // ApiVersions answers with header v0
			out = append(out, 0)
		}
		out = sl.resp.AppendTo(out)
		binary.BigEndian.PutUint32(out[:4], uint32(len(out)-4))
		c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.nc.Write(out); err != nil {
			log.Debug("kafka connection closed writing an answer", "err", err)
			c.nc.Close()
			for range order {
			}
			return
		}
		if cap(out) > 1<<20 {
			out = nil // do not keep a large fetch's buffer per idle connection
		}
	}
}

// asyncProduce reports whether req is a produce request of an idempotent
// producer (every batch carries a producer id), which may be handled
// beside the requests around it.
func asyncProduce(req kmsg.Request) bool {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok || pr.TransactionID != nil || len(pr.Topics) == 0 {
		return false
	}
	for _, t := range pr.Topics {
		for _, p := range t.Partitions {
			h, err := readProducer(p.Records)
			if err != nil || h.ProducerID < 0 {
				return false
			}
		}
	}
	return true
}

// decode reads one request: its API and body, its correlation id, or an
// answer to send at once (early), or an error that closes the connection.
func (c *conn) decode(body []byte) (a api, req kmsg.Request, corr int32, early kmsg.Response, err error) {
	r := kbin.Reader{Src: body}
	key, version := r.Int16(), r.Int16()
	corr = r.Int32()
	clientID := r.NullableString()
	if r.Complete() != nil {
		return a, nil, corr, nil, errDrop{"malformed request header"}
	}
	if clientID != nil {
		c.clientID = *clientID
	}
	a, ok := apis[key]
	if key == 18 && (!ok || version > a.max || version < 0) {
		// An ApiVersions newer than ours: answer v0 with the error and
		// our versions, so the client retries with one we know (KIP-511).
		resp := &kmsg.ApiVersionsResponse{Version: 0, ErrorCode: errUnsupportedVersion}
		resp.ApiKeys = advertised()
		return a, nil, corr, resp, nil
	}
	if !ok {
		return a, nil, corr, nil, errDrop{fmt.Sprintf("unsupported API key %d (version %d): it is not in ApiVersions", key, version)}
	}
	if version < a.min || version > a.max {
		return a, nil, corr, nil, errDrop{fmt.Sprintf("%s version %d: this listener serves versions %d to %d", kmsg.NameForKey(key), version, a.min, a.max)}
	}
	req = kmsg.RequestForKey(key)
	req.SetVersion(version)
	if req.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	if err := req.ReadFrom(r.Src); err != nil {
		return a, nil, corr, nil, errDrop{fmt.Sprintf("malformed %s v%d request: %v", kmsg.NameForKey(key), version, err)}
	}
	if c.auth.required() && key != 17 && key != 36 && key != 18 {
		return a, nil, corr, nil, errDrop{fmt.Sprintf("%s before SASL authentication", kmsg.NameForKey(key))}
	}
	return a, req, corr, nil, nil
}
