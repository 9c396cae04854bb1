package metadata

import "github.com/varve-io/varve/metadata/internal/conn"

// Subpackages of metadata reach the shared etcd client through
// metadata/internal/conn, which no package outside metadata/ can import.
func init() {
	conn.Of = func(meta any) conn.Conn {
		c := meta.(*Client)
		return conn.Conn{KV: c.cli, Log: c.log}
	}
}
