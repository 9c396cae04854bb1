// Package blockcache owns reading a block of a segment object through the
// tiers, nearest first: Memory (decoded records in this process), Disk (the
// stored bytes in local files, surviving a restart), the block's owner among
// the fetch nodes (Owners: rendezvous hashing over the live nodes, asked
// through a PeerClient; per object for a fresh L0 object, preferring the
// node that wrote it, per block for a compacted one) and the bucket: one
// GET of a whole L0 object, whose blocks are all cached, or one ranged GET
// of a compacted block. Reader ties them together, collapses concurrent
// reads of one block (and of one object) into one, and checks every block
// it decodes. ErrDataLoss and ErrUnavailable are the read
// path's errors for a block that cannot be read back intact or a store that
// does not answer.
//
// blockcache never writes objects or etcd state, never consults the
// segment index (callers hand it index entries), and knows nothing of
// fetch requests, scans or the API: it serves blocks.
package blockcache
