package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/obs"
	"github.com/varve-io/varve/internal/randhex"
	"github.com/varve-io/varve/internal/reqlimit"
	"github.com/varve-io/varve/internal/strictjson"
	"github.com/varve-io/varve/kafka"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node/topicapi"
	"github.com/varve-io/varve/tier"
)

// Node is a running Varve node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	meta   *metadata.Client
	store  tier.Store
	topics *metadata.Cache
	index  *metadata.Cache
	// ownIndex is the compact role's index on a node without the fetch
	// role (maintenanceIndex).
	ownIndex *metadata.Cache
	in       *ingest.Ingester
	fetcher  *fetch.Fetcher
	// held keeps, on an ingest node without the fetch role, the blocks of
	// the last objects it wrote, for the fetch nodes' GetObject (blocks.go).
	held *blockcache.Memory
	// place says, on an ingest node, where a producer client belongs
	// (placement.go); nil without the ingest role.
	place *placer
	meter *sdkmetric.MeterProvider
	tel   *obs.Telemetry
	ready *readiness
	sec   security
	seqw  seqWiring

	ln       net.Listener
	flightLn net.Listener
	kafkaLn  net.Listener
	kafka    *kafka.Server
	srv      *http.Server
	baseCtx  context.Context
	cancel   context.CancelFunc
	draining atomic.Bool
	served   chan error

	// registered are the roles this node registered under in etcd (its
	// kafka address too): Shutdown removes them first.
	registered []string
	keepRegs   atomic.Bool

	closeOnce sync.Once
	closeErr  error
	onClose   []func()
}

// Options are the parts a caller may supply instead of having them built
// from Config (tests wrap the store with a recorder this way).
type Options struct {
	Logger *slog.Logger
	Store  tier.Store
}

// New connects to etcd and the store, starts the configured roles and
// begins serving on cfg.Listen.
func New(ctx context.Context, cfg Config, opts Options) (*Node, error) {
	cfg.FillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NodeID == "" {
		cfg.NodeID = randhex.String(4)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeID)
	n := &Node{cfg: cfg, log: log, served: make(chan error, 1)}
	ok := false
	defer func() {
		if !ok {
			if n.srv != nil {
				n.srv.Close() // started before a later step failed
			}
			n.closeParts()
		}
	}()

	if err := n.startTelemetry(ctx); err != nil {
		return nil, err
	}

	var err error
	ctx = metadata.WithCaller(ctx, metadata.CallerNode)
	n.meta, err = metadata.Connect(ctx, metadata.Config{Endpoints: cfg.EtcdEndpoints, RequestTimeout: cfg.EtcdRequestTimeout, Logger: log, MeterProvider: n.meter})
	if err != nil {
		return nil, err
	}
	n.store = opts.Store
	if n.store == nil {
		n.store, err = tier.Open(ctx, cfg.Store, tier.S3Config{Endpoint: cfg.S3Endpoint, Region: cfg.S3Region, PathStyle: cfg.S3PathStyle})
		if err != nil {
			return nil, fmt.Errorf("open store %s: %w", cfg.Store, err)
		}
	}
	n.store = n.watchStore(n.store)

	if err := n.startSecurity(ctx); err != nil {
		return nil, err
	}
	if err := n.startRoles(ctx); err != nil {
		return nil, err
	}

	mux, hopts, err := n.routes(ctx)
	if err != nil {
		return nil, err
	}

	n.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	n.ln = n.secureListener(n.ln)
	n.baseCtx, n.cancel = context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerNode))
	// Shutdown waits for the readiness probes (and the election watch they
	// run) to end before it closes the etcd client they use.
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		n.ready.run(n.baseCtx)
	}()
	n.onClose = append(n.onClose, func() { <-readyDone })
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	n.srv = &http.Server{
		Handler:           n.secureHandler(reqlimit.CheckEnvelopes(mux)),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return n.baseCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { n.served <- n.srv.Serve(n.ln) }()
	if err := n.startFlight(cfg); err != nil {
		return nil, err
	}

	if err := n.startKafka(cfg); err != nil {
		return nil, err
	}

	if err := n.startJanitor(); err != nil {
		return nil, err
	}
	if err := n.startCompaction(mux, hopts...); err != nil {
		return nil, err
	}
	if err := n.startSequencer(mux, hopts); err != nil {
		return nil, err
	}
	roles := cfg.Roles
	if n.held != nil {
		roles = append(slices.Clip(roles), RoleWriter)
	}
	// The address others reach: with a 0.0.0.0 listener (the Terraform
	// module's), this host's, not 0.0.0.0.
	if err := n.meta.RegisterRoles(n.baseCtx, cfg.NodeID, n.internalURL(), roles...); err != nil {
		return nil, err
	}
	n.registered = append(n.registered, roles...)
	ok = true
	log.Info("node started", "addr", n.Addr(), "flight", n.FlightAddr(), "kafka", n.KafkaAddr(), "etcd", cfg.EtcdEndpoints, "roles", cfg.Roles, "store", cfg.Store, "version", obs.BuildInfo().Version, "tracing", cfg.OTLPEndpoint, "auth", n.sec.guard.Auth(), "tls", n.sec.tls != nil)
	return n, nil
}

// KeepRegistrations makes Shutdown leave the node's registrations in etcd
// to expire with their lease, as a killed node's do: tests of a dead peer
// that the others still take for live.
func (n *Node) KeepRegistrations() { n.keepRegs.Store(true) }

// Addr is the node's base URL, http://host:port (https:// with TLS).
func (n *Node) Addr() string { return n.scheme() + n.ln.Addr().String() }

// FlightAddr is the Arrow Flight address, host:port ("" without one).
func (n *Node) FlightAddr() string {
	if n.flightLn == nil {
		return ""
	}
	return n.flightLn.Addr().String()
}

// Ingester returns the node's ingester (nil without the ingest role).
func (n *Node) Ingester() *ingest.Ingester { return n.in }

// Meta returns the node's etcd client.
func (n *Node) Meta() *metadata.Client { return n.meta }

// startRoles starts the fetch and ingest roles the node is configured
// with: a fetch node watches the index and reads through a block cache, an
// ingest node writes and commits segments (and, with fetch too, puts the
// blocks it wrote into that cache).
func (n *Node) startRoles(ctx context.Context) error {
	var err error
	var blocks *blockcache.Memory
	if n.cfg.has(RoleFetch) {
		n.index, err = n.meta.NewCache(ctx, true)
		if err != nil {
			return err
		}
		blocks = blockcache.NewMemory(n.cfg.CacheBytes)
		n.fetcher = fetch.NewFetcher(n.store, n.meta, n.index, blocks, n.log, n.meter)
		n.fetcher.SetTracerProvider(n.tel.Tracer)
	}
	if n.cfg.has(RoleIngest) {
		n.topics = n.index
		if n.topics == nil {
			n.topics, err = n.meta.NewCache(ctx, false)
			if err != nil {
				return err
			}
		}
		if err := n.startPlacer(ctx); err != nil {
			return err
		}
		n.in, err = ingest.New(ingest.Config{
			NodeID: n.cfg.NodeID, FlushBytes: n.cfg.FlushBytes, Linger: n.cfg.Linger, MaxBufferBytes: n.cfg.MaxBufferBytes,
			ProducerStateTTL: n.cfg.ProducerStateTTL, TracerProvider: n.tel.Tracer, PutHedgeMin: n.cfg.PutHedgeMin,
		}, n.store, n.committer(), n.topics, n.log, n.meter)
		if err != nil {
			return err
		}
		if held := n.cfg.WriterCacheBytes; blocks == nil && held != OffBytes {
			// Without the fetch role: the fresh objects this node wrote,
			// for the fetch nodes to ask for rather than read the bucket.
			if held == 0 {
				held = heldObjects * int64(n.cfg.FlushBytes)
			}
			n.held = blockcache.NewMemory(held)
			blocks = n.held
		}
		if blocks != nil {
			// Fresh blocks written by this node are read from memory:
			// cached as stored once PUT (before any index entry names
			// them), decoded at their first record fetch.
			n.in.OnStored = func(f ingest.Flushed) {
				for _, b := range f.Blocks {
					// Stored is a window of the whole object's buffer: a
					// copy lets the cache's byte budget free each block
					// alone (one cached block would otherwise keep the
					// object, up to flush_bytes, alive).
					blocks.PutEncoded(f.Object, b.Info.Offset, bytes.Clone(b.Stored), b.Info.Records, b.Info.RawBytes)
				}
				blocks.RememberObject(f.Object, flushedBlocks(f)) // so GetObject answers it from memory (blocks.go)
			}
		}
	}
	return nil
}

// routes builds the HTTP routes: the API services with the handler
// options every one gets (request limits, strict JSON, telemetry), gRPC
// reflection and health, the block service, probes and telemetry. It
// returns the options for the services mounted later.
func (n *Node) routes(ctx context.Context) (*http.ServeMux, []connect.HandlerOption, error) {
	mux := http.NewServeMux()
	hopts := append(reqlimit.Options(n.cfg.MaxRequestBytes), strictjson.HandlerOption)
	tops, err := n.telemetryOptions()
	if err != nil {
		return nil, nil, err
	}
	hopts = append(hopts, tops...)
	hopts = append(hopts, n.securityOptions()...)
	mux.Handle(varvev1connect.NewTopicServiceHandler(topicapi.New(topicapi.Config{Meta: n.meta, Index: n.index, ToConnect: toConnect,
		RecordLimit: func(topic string, maxRecord int32) error {
			return checkRecordFitsRequest(topic, maxRecord, n.cfg.MaxRequestBytes)
		}}), hopts...))
	mux.Handle(varvev1connect.NewProduceServiceHandler(&produceService{in: n.in, place: n.place}, hopts...))
	mux.Handle(varvev1connect.NewFetchServiceHandler(&fetchService{f: n.fetcher, maxBytes: n.cfg.FetchMaxBytes}, hopts...))
	mux.Handle(varvev1connect.NewScanServiceHandler(&scanService{r: n.scanReader()}, hopts...))
	n.mountGroups(mux, hopts...)
	n.mountAccess(mux, hopts)
	services := []string{varvev1connect.TopicServiceName, varvev1connect.ProduceServiceName, varvev1connect.FetchServiceName, varvev1connect.ScanServiceName, varvev1connect.GroupServiceName, varvev1connect.AdminServiceName, varvev1connect.AccessServiceName}
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...)))
	if err := n.startBlocks(ctx, mux, hopts); err != nil {
		return nil, nil, err
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", n.readyz)
	n.mountTelemetry(mux)
	return mux, hopts, nil
}

// Wait blocks until the HTTP server stops on its own (an error) or ctx ends.
func (n *Node) Wait(ctx context.Context) error {
	select {
	case err := <-n.served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

// Shutdown drains the node: it stops accepting connections, flushes and
// commits buffered records so waiting producers get their answer, ends
// long-polls and subscriptions, and releases everything.
func (n *Node) Shutdown(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.draining.Store(true)
		start := time.Now()
		// Leave the live nodes at once, rather than when the
		// registration's lease expires (10 s): clients and other nodes
		// (block owners, Kafka brokers and group coordinators, producer
		// placement) move on while this node drains.
		if !n.keepRegs.Load() {
			dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
			if err := n.meta.Deregister(dctx, n.cfg.NodeID, n.registered...); err != nil {
				n.log.Warn("node registrations left to expire", "err", err)
			}
			dcancel()
		}
		shut := make(chan error, 1)
		go func() { shut <- n.srv.Shutdown(ctx) }()
		var errs []error
		if n.in != nil {
			if err := n.in.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		// Producers are answered; end the waits that would never finish.
		n.cancel()
		if n.kafka != nil {
			n.kafka.Close()
		}
		if err := <-shut; err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			n.srv.Close()
		}
		n.closeParts()
		n.log.Info("node stopped", "drain", time.Since(start))
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) closeParts() {
	if n.cancel != nil {
		n.cancel()
	}
	if n.kafka != nil {
		n.kafka.Close()
	}
	// Background jobs (janitor, compaction, watches) end first, while the
	// etcd client they use is still open: a janitor resigning on a closed
	// client waits out its retries (seconds at every stop).
	for _, f := range n.onClose {
		f()
	}
	if n.index != nil {
		n.index.Close()
	}
	if n.topics != nil && n.topics != n.index {
		n.topics.Close()
	}
	if n.meta != nil {
		n.meta.Close()
	}
	if n.tel != nil {
		_ = n.tel.Shutdown(context.Background())
	}
}
