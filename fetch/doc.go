// Package query owns the read path: fetching records from an offset, waiting
// for new ones (woken by the metadata watch, never by polling), listing
// offsets, the block cache in front of object storage, and analytic replay:
// Scan returns a range of a topic as Arrow record batches (served over
// Connect as an Arrow IPC stream and over Arrow Flight) and exports it to
// Parquet.
//
// query never writes objects or etcd state: it reads the segment index
// through metadata and blocks through tier.
package query
