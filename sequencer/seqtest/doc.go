// Package seqtest runs a sequencer in process for tests of the packages
// that read or write through it (fetch, ingest, compaction, GC, metadata):
// Start elects it on the test's etcd and returns a sequencer.Client that
// reaches it without RPC. It is for tests only.
package seqtest
