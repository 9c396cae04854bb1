package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Etcd is an etcd server running inside this process: the metadata store
// of `varve dev` and of the tests. It is a full etcd, not a stand-in.
type Etcd struct {
	etcd    *embed.Etcd
	closing *atomic.Bool
}

// Config configures an in-process etcd server.
type Config struct {
	// Dir holds etcd's data; reusing it restores the previous state.
	Dir string
	// ClientURL is where clients connect, e.g. http://127.0.0.1:2379.
	// Port 0 picks a free port.
	ClientURL string
	// PeerURL is the raft peer URL; port 0 picks a free port.
	PeerURL string
	// Logger receives etcd's warnings and errors (a full disk, a corrupt
	// WAL, the reason before etcd stops the process); nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to serve (default 60s).
	ReadyTimeout time.Duration
}

// Start starts an etcd server and waits until it serves requests.
func Start(c Config) (*Etcd, error) {
	return StartContext(context.Background(), c)
}

// StartContext is Start that gives up when ctx ends (a
// signal) or after c.ReadyTimeout, with an error saying which: etcd blocks
// without a word while another process holds its data directory's locks.
func StartContext(ctx context.Context, c Config) (*Etcd, error) {
	if c.ClientURL == "" {
		c.ClientURL = "http://127.0.0.1:0"
	}
	if c.PeerURL == "" {
		c.PeerURL = "http://127.0.0.1:0"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	cu, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client url %q: %w", c.ClientURL, err)
	}
	pu, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer url %q: %w", c.PeerURL, err)
	}
	closing := new(atomic.Bool)
	cfg := embed.NewConfig()
	cfg.Dir = c.Dir
	cfg.Name = "varve"
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Warnings and errors go to the caller's log; etcd's info chatter and
	// the closed-listener errors of its own shutdown do not.
	lg := zap.NewNop()
	if c.Logger != nil {
		lg = zap.New(&slogCore{h: c.Logger.Handler(), closing: closing})
	}
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	// Keep history bounded in long-running dev clusters.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"

	// embed.StartEtcd cannot be interrupted (it waits on file locks), so it
	// runs aside; a caller that gave up leaves it to be closed if it ever
	// returns.
	type started struct {
		e   *embed.Etcd
		err error
	}
	startc := make(chan started) // unbuffered: either the caller takes it or abandon closes it
	abandon := make(chan struct{})
	go func() {
		e, err := embed.StartEtcd(cfg)
		select {
		case startc <- started{e, err}:
		case <-abandon:
			if err == nil {
				closing.Store(true)
				e.Close()
			}
		}
	}()
	timer := time.NewTimer(c.ReadyTimeout)
	defer timer.Stop()
	giveUp := func(e *embed.Etcd, why error) (*Etcd, error) {
		if e != nil {
			closing.Store(true)
			e.Server.Stop()
			e.Close()
		} else {
			close(abandon)
		}
		return nil, why
	}
	var e *embed.Etcd
	select {
	case s := <-startc:
		if s.err != nil {
			return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, s.err)
		}
		e = s.e
	case <-ctx.Done():
		return giveUp(nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, context.Cause(ctx)))
	case <-timer.C:
		return giveUp(nil, fmt.Errorf("start embedded etcd in %s: not started after %v (is another process using the directory?)", c.Dir, c.ReadyTimeout))
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return giveUp(e, fmt.Errorf("embedded etcd in %s: %w", c.Dir, err))
	case <-ctx.Done():
		return giveUp(e, fmt.Errorf("embedded etcd in %s: waiting until ready: %w", c.Dir, context.Cause(ctx)))
	case <-timer.C:
		return giveUp(e, fmt.Errorf("embedded etcd in %s: not ready after %v", c.Dir, c.ReadyTimeout))
	}
	return &Etcd{etcd: e, closing: closing}, nil
}

// Endpoints returns the client URLs the server listens on.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, l := range e.etcd.Clients {
		out = append(out, "http://"+l.Addr().String())
	}
	return out
}

// Close stops the server.
func (e *Etcd) Close() {
	e.closing.Store(true)
	e.etcd.Close()
}

// slogCore is a zapcore.Core that hands etcd's warnings and errors to a
// slog.Handler, so they come out in the node's log format. Once the server
// is closing, only fatal entries pass (etcd reports every listener it
// closes as an error).
type slogCore struct {
	h       slog.Handler
	fields  []zapcore.Field
	closing *atomic.Bool
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	if c.closing.Load() {
		return l >= zapcore.DPanicLevel
	}
	return l >= zapcore.WarnLevel
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...), closing: c.closing}
}

// etcdNoise are warnings embedded etcd prints at every start of `varve
// dev` about choices made deliberately for it.
var etcdNoise = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

func (c *slogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) && (ent.Level > zapcore.WarnLevel || !etcdNoise[ent.Message]) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *slogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	level := slog.LevelWarn
	if ent.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	r := slog.NewRecord(ent.Time, level, "etcd: "+ent.Message, 0)
	r.AddAttrs(slog.String("component", "etcd"))
	if ent.Caller.Defined {
		r.AddAttrs(slog.String("caller", ent.Caller.TrimmedPath()))
	}
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		v := enc.Fields[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		r.AddAttrs(slog.Any(k, v))
	}
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

var _ zapcore.Core = (*slogCore)(nil)
