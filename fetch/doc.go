// Package fetch owns serving records from an offset: Fetcher.Fetch reads a
// partition from an offset across consecutive blocks, waits at the high
// watermark for new records (woken by the metadata watch, never by
// polling), and ListOffsets answers the earliest, latest or first offset at
// a time. FetchBatches answers with the blocks' stored Kafka record
// batches instead of decoded records; FetchPartitions serves many
// partitions of a topic in one call, with one wait woken by any of them.
// Blocks come through blockcache.Reader.
//
// fetch never writes objects or etcd state: it reads the segment index
// through metadata and blocks through blockcache. Analytic scans are
// package scan's job, Parquet files package parquet's.
package fetch
