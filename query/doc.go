// Package query owns the read path: fetching records from an offset, waiting
// for new ones (woken by the metadata watch, never by polling), listing
// offsets, and the block cache in front of object storage.
//
// query never writes objects or etcd state: it reads the segment index
// through metadata and blocks through tier.
package query
