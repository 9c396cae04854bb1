// Package conn hands the etcd connection of a *metadata.Client to
// metadata's own subpackages (metadata/groups, ...), so they share one
// client without package metadata exporting an etcd type: only packages
// under metadata/ can import it.
//
// It never dials etcd itself and holds no state but the accessor.
package conn

import (
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Conn is what a subpackage uses of a metadata client.
type Conn struct {
	KV  *clientv3.Client
	Log *slog.Logger
}

// Of returns the connection of a *metadata.Client. Package metadata sets
// it in its init (a function variable, not an import, because metadata's
// subpackages import metadata); it panics on any other argument.
var Of func(meta any) Conn
