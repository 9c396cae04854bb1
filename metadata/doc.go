// Package metadata owns Varve's state in etcd: the key layout, topic
// configuration, partition state, the segment index, commit transactions,
// watches and node leases. It is the only package that imports the etcd
// client.
//
// It never touches object storage and never interprets segment contents: an
// index entry is a pointer (object key and byte range) plus the numbers the
// read path needs to choose a block.
//
// Key layout (all under /varve/, see docs/metadata.md):
//
//	topics/<topic>                     Topic as JSON
//	partitions/<topic>/<p>             PartitionState as JSON (created lazily at first commit)
//	index/<topic>/<p>/<base, 20 digits> IndexEntry as JSON
//	guards/<commit id>/<chunk>         commit guard, bound to a short lease
//	nodes/<role>/<id>                  live node, bound to its session lease
package metadata
