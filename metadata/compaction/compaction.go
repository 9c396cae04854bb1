package compaction

import (
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/conn"
)

// Client is compaction's state in the etcd of a metadata client. It is
// safe for concurrent use.
type Client struct {
	meta *metadata.Client
	cli  *clientv3.Client
}

// New returns compaction's state kept in meta's etcd; meta outlives it.
func New(meta *metadata.Client) *Client {
	return &Client{meta: meta, cli: conn.Of(meta).KV}
}
