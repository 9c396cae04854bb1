// Package parquet owns writing Arrow record batches as Parquet files: Write
// turns an array.RecordReader into one file on an io.Writer, ExportDir and
// ExportBucket split a scan into files in a Hive-style layout
// (topic=T/partition=P[/date=…[/hour=…]]/part-<first>-<last>.parquet) in a
// local directory or an object store, each published whole, never
// overwriting. Properties are the writer settings every file shares.
//
// parquet must never import a server package (node, fetch, scan,
// blockcache, metadata, ingest, tier, …; internal/lint/boundaries checks
// it): it reads any array.RecordReader, so the CLI and the SDK write
// Parquet without linking server code, and an object store is only the
// Bucket interface.
package parquet
