package metadata

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Embedded is an etcd server running inside this process: the metadata store
// of `varve dev` and of the tests. It is a full etcd, not a stand-in.
type Embedded struct {
	etcd *embed.Etcd
}

// EmbeddedConfig configures an in-process etcd server.
type EmbeddedConfig struct {
	// Dir holds etcd's data; reusing it restores the previous state.
	Dir string
	// ClientURL is where clients connect, e.g. http://127.0.0.1:2379.
	// Port 0 picks a free port.
	ClientURL string
	// PeerURL is the raft peer URL; port 0 picks a free port.
	PeerURL string
}

// StartEmbedded starts an etcd server and waits until it serves requests.
func StartEmbedded(c EmbeddedConfig) (*Embedded, error) {
	if c.ClientURL == "" {
		c.ClientURL = "http://127.0.0.1:0"
	}
	if c.PeerURL == "" {
		c.PeerURL = "http://127.0.0.1:0"
	}
	cu, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client url %q: %w", c.ClientURL, err)
	}
	pu, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer url %q: %w", c.PeerURL, err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = c.Dir
	cfg.Name = "varve"
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// etcd's own logs are not Varve's: keep them out of the way (they report
	// every closed listener at shutdown as an error).
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Keep history bounded in long-running dev clusters.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", c.Dir, err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready after 60s", c.Dir)
	}
	return &Embedded{etcd: e}, nil
}

// Endpoints returns the client URLs the server listens on.
func (e *Embedded) Endpoints() []string {
	var out []string
	for _, l := range e.etcd.Clients {
		out = append(out, "http://"+l.Addr().String())
	}
	return out
}

// Close stops the server.
func (e *Embedded) Close() {
	e.etcd.Close()
}
