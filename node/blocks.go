package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/guard"
)

// RoleWriter is registered (not configured) by an ingest node without the
// fetch role that keeps the objects it wrote for the fetch nodes
// (writer_cache_bytes not off): the fetch nodes watch it to know whom to
// ask first for a fresh object.
const RoleWriter = "writer"

// heldObjects is how many flushes' worth of fresh objects (flush_bytes
// each) an ingest node without the fetch role keeps for the fetch nodes by
// default (writer_cache_bytes 0): they ask within a tick or two of the
// commit.
const heldObjects = 4

// startBlocks sets up the tiers of the fetch role's block reads below the
// memory cache: the disk cache (when cache_dir is set), the ownership of
// blocks among the live fetch nodes (kept current by a watch of their
// registrations), the ingest nodes without the fetch role to ask first
// for the fresh objects they wrote (another watch), the client that asks
// an owner for a block, and the internal BlockService through which this
// node answers the others. An ingest node without the fetch role serves
// only GetObject, from the objects it holds (heldBlockService).
func (n *Node) startBlocks(ctx context.Context, mux *http.ServeMux, hopts []connect.HandlerOption) error {
	if n.fetcher == nil {
		if n.held != nil {
			mux.Handle(varvev1connect.NewBlockServiceHandler(&heldBlockService{mem: n.held}, hopts...))
		}
		return nil
	}
	if n.cfg.CacheDir != "" {
		d, err := blockcache.OpenDisk(n.cfg.CacheDir, n.cfg.DiskCacheBytes)
		if err != nil {
			return err
		}
		n.fetcher.Blocks().SetDisk(d)
		n.log.Info("disk cache opened", "dir", d.Dir(), "bytes", d.Size(), "blocks", d.Len(), "max", n.cfg.DiskCacheBytes)
	}
	owners := blockcache.NewOwners(n.cfg.NodeID)
	stop, err := n.meta.WatchNodes(ctx, RoleFetch, func(nodes map[string]string) {
		owners.Set(nodes)
		n.log.Debug("fetch nodes changed", "nodes", nodes)
	})
	if err != nil {
		return err
	}
	n.onClose = append(n.onClose, stop)
	stop, err = n.meta.WatchNodes(ctx, RoleWriter, func(nodes map[string]string) {
		owners.SetWriters(nodes)
		n.log.Debug("ingest nodes holding what they wrote changed", "nodes", nodes)
	})
	if err != nil {
		return err
	}
	peers := newPeerClient(n.sec.peer, n.sec.guard.NodeSecret())
	n.onClose = append(n.onClose, stop, peers.close)
	n.fetcher.Blocks().SetOwners(owners, peers)
	mux.Handle(varvev1connect.NewBlockServiceHandler(&blockService{b: n.fetcher.Blocks(), f: n.fetcher}, hopts...))
	return nil
}

// BlockOwners returns how the fetch role assigns blocks to fetch nodes
// (nil without the fetch role).
func (n *Node) BlockOwners() *blockcache.Owners {
	if n.fetcher == nil {
		return nil
	}
	return n.fetcher.Blocks().Owners()
}

// DiskCache returns the fetch role's disk cache (nil without one).
func (n *Node) DiskCache() *blockcache.Disk {
	if n.fetcher == nil {
		return nil
	}
	return n.fetcher.Blocks().Disk()
}

// blockService answers the internal BlockService: another fetch node asks
// for a block this node owns.
type blockService struct {
	b *blockcache.Reader
	f *fetch.Fetcher
}

// ListOffsets answers offsets for the Kafka listener of a node without
// the fetch role.
func (s *blockService) ListOffsets(ctx context.Context, req *connect.Request[varvev1.BlockServiceListOffsetsRequest]) (*connect.Response[varvev1.BlockServiceListOffsetsResponse], error) {
	out, err := listOffsets(ctx, s.f, req.Msg.GetRequest())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&varvev1.BlockServiceListOffsetsResponse{Response: out}), nil
}

func (s *blockService) GetBlock(ctx context.Context, req *connect.Request[varvev1.GetBlockRequest]) (*connect.Response[varvev1.GetBlockResponse], error) {
	b, _, err := s.b.BlockBytes(ctx, req.Msg.Object, req.Msg.Offset, req.Msg.Length)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&varvev1.GetBlockResponse{Block: b}), nil
}

// GetObject answers every block of a fresh level 0 object this node owns
// (of the partitions asked for, when the request names some).
func (s *blockService) GetObject(ctx context.Context, req *connect.Request[varvev1.GetObjectRequest]) (*connect.Response[varvev1.GetObjectResponse], error) {
	blocks, _, err := s.b.ObjectBytes(ctx, req.Msg.Object, req.Msg.MaxBytes, askedPartitions(req.Msg))
	return objectAnswer(blocks, err)
}

// heldBlockService answers the internal BlockService on an ingest node
// without the fetch role: a fetch node asks it for a fresh object it wrote
// (GetObject), answered from memory while it holds the object, never from
// the bucket.
type heldBlockService struct {
	mem *blockcache.Memory
}

func (s *heldBlockService) GetBlock(context.Context, *connect.Request[varvev1.GetBlockRequest]) (*connect.Response[varvev1.GetBlockResponse], error) {
	return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node has no fetch role: it answers only GetObject, for the fresh objects it wrote and still holds"))
}

func (s *heldBlockService) ListOffsets(context.Context, *connect.Request[varvev1.BlockServiceListOffsetsRequest]) (*connect.Response[varvev1.BlockServiceListOffsetsResponse], error) {
	return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node has no fetch role: ask a fetch node for offsets"))
}

func (s *heldBlockService) GetObject(_ context.Context, req *connect.Request[varvev1.GetObjectRequest]) (*connect.Response[varvev1.GetObjectResponse], error) {
	return objectAnswer(blockcache.HeldObjectBytes(s.mem, req.Msg.Object, req.Msg.MaxBytes, askedPartitions(req.Msg)))
}

// askedPartitions are the partitions a GetObject request names (nil: all).
func askedPartitions(msg *varvev1.GetObjectRequest) []blockcache.TopicPartitions {
	if len(msg.Partitions) == 0 {
		return nil
	}
	parts := make([]blockcache.TopicPartitions, len(msg.Partitions))
	for i, tp := range msg.Partitions {
		parts[i] = blockcache.TopicPartitions{Topic: tp.Topic, Partitions: tp.Partitions}
	}
	return parts
}

// objectAnswer is GetObject's answer of blocks, or of err: an object not
// served whole is FAILED_PRECONDITION (the asker then asks otherwise).
func objectAnswer(blocks []blockcache.ObjectBlock, err error) (*connect.Response[varvev1.GetObjectResponse], error) {
	if errors.Is(err, blockcache.ErrNotWhole) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	out := &varvev1.GetObjectResponse{Blocks: make([]*varvev1.ObjectBlock, len(blocks))}
	for i, b := range blocks {
		out.Blocks[i] = &varvev1.ObjectBlock{Offset: b.Offset, Block: b.Stored, Records: b.Records, RawBytes: b.RawBytes}
	}
	return connect.NewResponse(out), nil
}

// flushedBlocks lists the blocks of an object this node's ingester stored
// (their ranges and counts), for blockcache.Memory.RememberObject: the
// node can then answer GetObject for it from memory.
func flushedBlocks(f ingest.Flushed) []blockcache.ObjectBlock {
	out := make([]blockcache.ObjectBlock, len(f.Blocks))
	for i, b := range f.Blocks {
		out[i] = blockcache.ObjectBlock{Offset: b.Info.Offset, Stored: b.Stored, Records: b.Info.Records, RawBytes: b.Info.RawBytes, Topic: b.Info.Topic, Partition: b.Info.Partition}
	}
	return out
}

// peerClient calls the BlockService of other fetch nodes over HTTP/2
// (h2c without TLS), one client per address, with the cluster secret.
type peerClient struct {
	tr     *http.Transport
	http   *http.Client
	secret string

	mu      sync.Mutex
	clients map[string]varvev1connect.BlockServiceClient
}

func newPeerClient(tlsConf *tls.Config, secret string) *peerClient {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	tr := &http.Transport{
		Protocols:           protocols,
		TLSClientConfig:     tlsConf,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &peerClient{tr: tr, http: &http.Client{Transport: tr}, secret: secret, clients: map[string]varvev1connect.BlockServiceClient{}}
}

func (p *peerClient) client(addr string) varvev1connect.BlockServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.clients[addr]
	if !ok {
		// Blocks are compressed already: ask for no gzip on top.
		c = varvev1connect.NewBlockServiceClient(p.http, addr, connect.WithAcceptCompression("gzip", nil, nil))
		p.clients[addr] = c
	}
	return c
}

// GetBlock implements blockcache.PeerClient.
func (p *peerClient) GetBlock(ctx context.Context, addr, object string, off, length int64) ([]byte, error) {
	req := connect.NewRequest(&varvev1.GetBlockRequest{Object: object, Offset: off, Length: length})
	if p.secret != "" {
		req.Header().Set(guard.SecretHeader, p.secret)
	}
	resp, err := p.client(addr).GetBlock(ctx, req)
	if err != nil {
		return nil, peerErr(ctx, fmt.Sprintf("block %s@%d from %s", object, off, addr), err)
	}
	return resp.Msg.Block, nil
}

// ListOffsets asks the fetch node at addr for offsets (by time: the Kafka
// listener of a node without the fetch role).
func (p *peerClient) ListOffsets(ctx context.Context, addr string, m *varvev1.ListOffsetsRequest) (*varvev1.ListOffsetsResponse, error) {
	req := connect.NewRequest(&varvev1.BlockServiceListOffsetsRequest{Request: m})
	if p.secret != "" {
		req.Header().Set(guard.SecretHeader, p.secret)
	}
	resp, err := p.client(addr).ListOffsets(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetResponse(), nil
}

// GetObject implements blockcache.PeerClient. The answer is one message of
// at most maxBytes of blocks (DefaultWholeObjectBytes by default): the
// client reads answers of any size (no connect.WithReadMaxBytes), and the
// handler's read limit (max_request_bytes) bounds only requests. Each
// block's bytes are their own allocation (protobuf copies bytes fields as
// it unmarshals).
func (p *peerClient) GetObject(ctx context.Context, addr, object string, maxBytes int64, parts []blockcache.TopicPartitions) ([]blockcache.ObjectBlock, error) {
	msg := &varvev1.GetObjectRequest{Object: object, MaxBytes: maxBytes}
	for _, tp := range parts {
		msg.Partitions = append(msg.Partitions, &varvev1.TopicPartitions{Topic: tp.Topic, Partitions: tp.Partitions})
	}
	req := connect.NewRequest(msg)
	if p.secret != "" {
		req.Header().Set(guard.SecretHeader, p.secret)
	}
	resp, err := p.client(addr).GetObject(ctx, req)
	if err != nil {
		what := fmt.Sprintf("object %s from %s", object, addr)
		switch connect.CodeOf(err) {
		case connect.CodeFailedPrecondition:
			return nil, fmt.Errorf("%w: %s: %v", blockcache.ErrNotWhole, what, err)
		case connect.CodeUnimplemented:
			// A node of another version, without GetObject, or of another
			// role: ask for each block, which tells them apart.
			return nil, fmt.Errorf("%w: %s: %v", blockcache.ErrNotWhole, what, err)
		}
		return nil, peerErr(ctx, what, err)
	}
	out := make([]blockcache.ObjectBlock, len(resp.Msg.Blocks))
	for i, b := range resp.Msg.Blocks {
		out[i] = blockcache.ObjectBlock{Offset: b.Offset, Stored: b.Block, Records: b.Records, RawBytes: b.RawBytes}
	}
	return out, nil
}

// peerErr is the error of a call to another node about what: wrapping
// blockcache.ErrUnavailable when the node could not be reached or could not
// answer.
func peerErr(ctx context.Context, what string, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeUnknown,
		connect.CodeUnimplemented: // a node of another role now listens there
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", blockcache.ErrUnavailable, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (p *peerClient) close() { p.tr.CloseIdleConnections() }
