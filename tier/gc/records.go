package gc

import (
	"context"
	"fmt"
	"time"

	"github.com/varve-io/varve/metadata/maintenance"
)

// DefaultRecordGrace is Config.RecordGrace's default, RecordGrace of the
// sequencer's default dedupe window.
const DefaultRecordGrace = 3 * time.Minute

// RecordGrace is how long sequencer batch records are kept for a
// sequencer whose dedupe window is window: a sequencer answers a retried
// commit from its batch record within that window (a new sequencer too,
// after recovering the records), so a record is kept 1.5 times as long.
// A window of 0 gives DefaultRecordGrace.
func RecordGrace(window time.Duration) time.Duration {
	if window <= 0 {
		return DefaultRecordGrace
	}
	return window * 3 / 2
}

// recordsPerPass bounds the sequencer records one pruning pass examines.
const recordsPerPass = 4096

// PruneRecords deletes the sequencer batch records no reader and no
// recovering sequencer needs any more (maintenance.PruneRecords): at or
// before the sequencer's checkpoint, written at least RecordGrace ago, and
// every block of them covered by index keys, below its log start or of a
// topic that is gone. The leading janitor runs it every
// retention_check_interval on a ticker of its own (not behind a retention
// pass, which takes minutes at thousands of partitions); each pass
// examines a bounded number of records, the next one carries on where it
// stopped.
// GC then deletes the objects only those records named, after its grace.
func (j *Janitor) PruneRecords(ctx context.Context) (maintenance.PruneReport, error) {
	j.pruneMu.Lock()
	defer j.pruneMu.Unlock()
	now := j.cfg.Now()
	rev, err := j.etcd.Revision(ctx)
	if err != nil {
		return maintenance.PruneReport{}, fmt.Errorf("prune records: %w", err)
	}
	j.pruneSamples = append(j.pruneSamples, revSample{now, rev})
	var maxRev int64
	if j.cfg.RecordGrace < 0 {
		maxRev = rev
	} else {
		// The newest sample at least RecordGrace old bounds the records
		// examined; the samples before it are spent.
		spent := -1
		for i, smp := range j.pruneSamples {
			if now.Sub(smp.at) >= j.cfg.RecordGrace {
				maxRev, spent = smp.rev, i
			}
		}
		if spent > 0 {
			j.pruneSamples = j.pruneSamples[spent:]
		}
		if maxRev == 0 {
			return maintenance.PruneReport{Revision: rev}, nil
		}
	}
	rep, err := j.etcd.PruneRecords(ctx, maintenance.PruneOptions{From: j.pruneFrom, MaxRecords: recordsPerPass, MaxModRev: maxRev})
	j.pruneFrom = rep.Next
	if rep.Deleted > 0 {
		j.m.prunedRecords.Add(ctx, int64(rep.Deleted))
	}
	return rep, err
}
