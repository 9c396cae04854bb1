package maintenance

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
	"github.com/varve-io/varve/metadata/seqlog"
)

// The record pruner deletes sequencer batch records (seq/records/<batch>)
// that readers no longer need: compaction puts index keys over their
// blocks (key entries shadow record entries), retention moves log starts
// past them, or their topic is gone. docs/metadata.md, "Reading the
// records", says why this is safe.

// PruneOptions bound one PruneRecords pass.
type PruneOptions struct {
	// From is the first batch to examine (a cursor: the previous pass's
	// Next), MaxRecords how many records one pass examines at most.
	From       uint64
	MaxRecords int
	// MaxModRev, when positive, leaves records written after it (a
	// record the sequencer may still answer a retried commit from).
	MaxModRev int64
}

// PruneReport says what one PruneRecords pass did.
type PruneReport struct {
	// Checkpoint is the sequencer checkpoint's batch: only records at or
	// before it were examined (a recovering sequencer reads those after).
	Checkpoint uint64
	// Examined and Deleted count records; Kept those still needed.
	Examined, Deleted, Kept int
	// DeleteTxns counts the delete transactions sent (one per pass unless
	// its records form more than pruneRunsPerTxn runs).
	DeleteTxns int
	// Next is where the next pass starts: 0 once the pass reached the
	// checkpoint or MaxModRev.
	Next uint64
	// Revision is the etcd revision the pass read at.
	Revision int64
}

// prunePage is how many records one read takes.
const prunePage = 32

// pruneRunsPerTxn bounds the runs of records one delete transaction
// takes (a range comparison and a range delete each; etcd allows 128
// of each per transaction).
const pruneRunsPerTxn = 120

// PruneRecords examines the sequencer records from opts.From on, up to the
// current checkpoint's batch, and deletes each one every committed block
// of which is covered by index keys, lies below its partition's log start,
// or belongs to a topic id that no longer exists. Everything is read at
// one revision; at most opts.MaxRecords records are examined. Records to
// delete are taken in runs (the records between two kept ones), each run
// one range delete fenced by a range comparison (no record of it written
// since the read), and all the runs of a pass go in one transaction
// (pruneRunsPerTxn of them at most): a pass costs one etcd transaction
// whatever the records, where a delete per page of records cost one per
// 32 records.
func (c *Etcd) PruneRecords(ctx context.Context, opts PruneOptions) (PruneReport, error) {
	var rep PruneReport
	if opts.MaxRecords <= 0 {
		opts.MaxRecords = 1024
	}
	resp, err := c.cli.Get(ctx, keys.SeqCheckpoint())
	if err != nil {
		return rep, fmt.Errorf("prune records: read checkpoint: %w", err)
	}
	rep.Revision = resp.Header.Revision
	if len(resp.Kvs) == 0 {
		return rep, nil // no checkpoint: a recovering sequencer reads every record
	}
	cp, _, err := seqlog.IndexDecoder.CheckpointHead(resp.Kvs[0].Value)
	if err != nil {
		return rep, fmt.Errorf("prune records: %w", err)
	}
	rep.Checkpoint = cp
	if opts.From > cp {
		return rep, nil
	}
	cov := &coverage{c: c, rev: rep.Revision, topics: map[string]*topicCoverage{}}
	var runs []recordRun
	open := false // the last record examined is to be deleted
	flush := func() error {
		if len(runs) > 0 {
			rep.DeleteTxns++
		}
		n, err := c.deleteRuns(ctx, runs, rep.Revision)
		rep.Deleted += n
		runs = runs[:0]
		open = false
		return err
	}
	key, end := keys.SeqRecord(opts.From), keys.SeqRecord(cp)+"\x00"
	for rep.Examined < opts.MaxRecords {
		page := min(int64(prunePage), int64(opts.MaxRecords-rep.Examined))
		r, err := c.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(page), clientv3.WithRev(rep.Revision))
		if err != nil {
			return rep, fmt.Errorf("prune records: read from %s: %w", key, err)
		}
		stop := false
		for _, kv := range r.Kvs {
			if opts.MaxModRev > 0 && kv.ModRevision > opts.MaxModRev {
				stop = true
				break
			}
			rep.Examined++
			batch, _ := keys.ParseSeqRecord(string(kv.Key))
			rep.Next = batch + 1
			rb, err := seqlog.IndexDecoder.DecodeBlocks(kv.Value)
			if err != nil {
				// Never guess: keep what cannot be read.
				return rep, fmt.Errorf("prune records: sequencer record %s: %w", kv.Key, err)
			}
			ok, err := cov.needless(ctx, rb)
			if err != nil {
				return rep, err
			}
			switch {
			case !ok:
				rep.Kept++
				open = false
			case open:
				runs[len(runs)-1].last = string(kv.Key)
				runs[len(runs)-1].n++
			default:
				if len(runs) == pruneRunsPerTxn {
					if err := flush(); err != nil {
						return rep, err
					}
				}
				runs = append(runs, recordRun{first: string(kv.Key), last: string(kv.Key), n: 1})
				open = true
			}
		}
		if stop || !r.More || len(r.Kvs) == 0 {
			rep.Next = 0
			break
		}
		key = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
	return rep, flush()
}

// recordRun is records from first to last (keys), n of them, none kept
// between them, to be deleted.
type recordRun struct {
	first, last string
	n           int
}

// deleteRuns deletes runs in one transaction, each a range delete fenced
// by a range comparison: no key in the run's range modified or created
// after rev. It returns how many records it deleted: all or none.
func (c *Etcd) deleteRuns(ctx context.Context, runs []recordRun, rev int64) (int, error) {
	if len(runs) == 0 {
		return 0, nil
	}
	cmps := make([]clientv3.Cmp, len(runs))
	ops := make([]clientv3.Op, len(runs))
	n := 0
	for i, run := range runs {
		end := run.last + "\x00"
		cmps[i] = clientv3.Compare(clientv3.ModRevision(run.first), "<", rev+1).WithRange(end)
		ops[i] = clientv3.OpDelete(run.first, clientv3.WithRange(end))
		n += run.n
	}
	tr, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("prune records: delete: %w", err)
	}
	if !tr.Succeeded {
		return 0, nil
	}
	return n, nil
}

// coverage answers, at one revision, whether a record's blocks are still
// needed; it reads each topic's index keys and partition keys once.
type coverage struct {
	c      *Etcd
	rev    int64
	topics map[string]*topicCoverage
}

type topicCoverage struct {
	id     string // "" if the topic does not exist
	spans  map[int32][][2]int64
	starts map[int32]int64
}

// needless reports whether every committed block of rb is covered by index
// keys, below its partition's log start, or of a topic id that is gone.
func (cv *coverage) needless(ctx context.Context, rb *metadata.RecordBlocks) (bool, error) {
	for _, e := range rb.Entries {
		tc, err := cv.topic(ctx, e.Topic)
		if err != nil {
			return false, err
		}
		if tc.id == "" || rb.TopicIDs[e.Topic] != tc.id {
			continue // the topic is gone or was created again
		}
		if e.End() <= tc.starts[e.Partition] {
			continue // below the log start: retention dropped it
		}
		if !covers(tc.spans[e.Partition], e.Base, e.End()) {
			return false, nil
		}
	}
	return true, nil
}

// covers reports whether the merged, sorted spans hold all of [base, end).
func covers(spans [][2]int64, base, end int64) bool {
	i := sort.Search(len(spans), func(i int) bool { return spans[i][1] > base })
	return i < len(spans) && spans[i][0] <= base && spans[i][1] >= end
}

func (cv *coverage) topic(ctx context.Context, name string) (*topicCoverage, error) {
	if tc, ok := cv.topics[name]; ok {
		return tc, nil
	}
	tc := &topicCoverage{spans: map[int32][][2]int64{}, starts: map[int32]int64{}}
	cv.topics[name] = tc
	r, err := cv.c.cli.Get(ctx, keys.Topic(name), clientv3.WithRev(cv.rev))
	if err != nil {
		return nil, fmt.Errorf("prune records: read topic %q: %w", name, err)
	}
	if len(r.Kvs) == 0 {
		return tc, nil
	}
	var t metadata.Topic
	if err := json.Unmarshal(r.Kvs[0].Value, &t); err != nil {
		return nil, fmt.Errorf("prune records: decode topic %q: %w", name, err)
	}
	tc.id = t.ID
	if _, err := cv.c.pages(ctx, keys.PartitionsPrefix(name), referencedPage, cv.rev, func(kv *mvccpb.KeyValue) error {
		k, ok := keys.Parse(string(kv.Key))
		if !ok {
			return nil
		}
		var st metadata.PartitionState
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		tc.starts[k.Partition] = st.Start
		return nil
	}); err != nil {
		return nil, fmt.Errorf("prune records: %w", err)
	}
	// Index keys come in base order within a partition: merge adjacent
	// spans as they come.
	if _, err := cv.c.pages(ctx, keys.IndexTopicPrefix(name), referencedPage, cv.rev, func(kv *mvccpb.KeyValue) error {
		k, ok := keys.Parse(string(kv.Key))
		if !ok {
			return nil
		}
		var e metadata.IndexEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return fmt.Errorf("decode index entry %s: %w", kv.Key, err)
		}
		e.Base = k.Base
		sp := tc.spans[k.Partition]
		if n := len(sp); n > 0 && sp[n-1][1] >= e.Base {
			sp[n-1][1] = max(sp[n-1][1], e.End())
		} else {
			sp = append(sp, [2]int64{e.Base, e.End()})
		}
		tc.spans[k.Partition] = sp
		return nil
	}); err != nil {
		return nil, fmt.Errorf("prune records: %w", err)
	}
	return tc, nil
}
