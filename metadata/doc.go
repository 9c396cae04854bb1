// Package metadata owns Varve's state in etcd: topic configuration,
// partition state, the segment index, commit transactions, producers'
// idempotence state, watches and node leases. It and the
// packages under it are the only ones that import the etcd client.
//
// Features with their own package under metadata/:
//
//	metadata/groups       consumer groups: sessions, fenced commits, assignment
//	metadata/compaction   index swaps, compaction claims, the pause switch
//	metadata/retention    retention: which entries expire, and dropping them
//	metadata/maintenance  referenced objects for GC, history compaction,
//	                      storage figures, defragmentation, janitor election
//	metadata/embedded     an etcd server in this process (dev, tests)
//	metadata/internal/keys  the key layout, every family spelled once
//	metadata/internal/conn  hands this package's etcd client to the ones above
//	metadata/internal/bounded  a deadline on every unary etcd call (ErrUnavailable)
//
// It never touches object storage and never interprets segment contents: an
// index entry is a pointer (object key and byte range) plus the numbers the
// read path needs to choose a block. It never exports an etcd type: a
// subpackage gets the client from a *Client through metadata/internal/conn.
//
// Key layout (all under /varve/, see docs/metadata.md and
// metadata/internal/keys):
//
//	topics/<topic>                     Topic as JSON
//	partitions/<topic>/<p>             PartitionState as JSON (created lazily at first commit)
//	index/<topic>/<p>/<base, 20 digits> IndexEntry as JSON
//	guards/<commit id>/<chunk>         commit guard, bound to a short lease
//	nodes/<role>/<id>                  live node, bound to its session lease
//	idem/…, groups/…, compaction/…, claims/…, elections/…
package metadata
