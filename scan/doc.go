// Package scan owns analytic replay: Reader.Scan returns a range of a
// topic (offsets, times, keys, partitions, columns) as Arrow record batches
// (a Scanner is an array.RecordReader), planned from the watched segment
// index and decoded straight from blocks into Arrow buffers, several
// blocks at once within a memory bound. It also owns topic schemas
// (ParseTopicSchema, the typed columns and _error of a JSON topic) and the
// small JSON scanner that checks untrusted record values against them
// (fuzzed by FuzzJSONRow).
//
// scan reads only through three small interfaces it defines: Topics
// (metadata.Client), Index (metadata.Cache) and BlockReader
// (blockcache.Reader); from blockcache it takes only the read path's
// errors. It never writes objects or etcd state, never fills the block
// cache (a long scan must not evict what tailing consumers read), and
// knows no transport: the Connect stream and the Arrow Flight server are
// node's, Parquet files package parquet's.
package scan
