package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata/internal/keys"
)

// seqActiveKey is the sequencer's marker (docs/metadata.md, "The
// sequencer"): while it exists no direct commit writes.
var seqActiveKey = keys.SeqActive

// PartitionState is stored at partitions/<topic>/<p>.
type PartitionState struct {
	// Next is the offset the next record gets (the high watermark).
	Next int64 `json:"next"`
	// Start is the log start offset (advanced by retention).
	Start int64 `json:"start"`
	// Bytes and Segments count the stored blocks.
	Bytes    int64 `json:"bytes"`
	Segments int64 `json:"segments"`
}

// IndexEntry points the offset range [Base, End()) at one byte range (one
// block) of one immutable object. The range is dense — Records offsets —
// unless compaction of a compacted topic removed records: then Span says
// how many offsets the entry covers and the block's records carry their
// offset gaps (docs/segment-format.md, block version 2).
type IndexEntry struct {
	Topic     string `json:"-"`
	Partition int32  `json:"-"`
	Base      int64  `json:"-"`
	Object    string `json:"o"`
	Off       int64  `json:"off"`
	Len       int64  `json:"len"`
	Records   int64  `json:"n"`
	MinTS     int64  `json:"mints"`
	MaxTS     int64  `json:"maxts"`
	RawBytes  int64  `json:"raw"`
	// Span is the number of offsets the entry covers when that is more
	// than Records (a compacted range); 0 means Records.
	Span int64 `json:"span,omitempty"`
	// Level is 0 for a block an ingest node wrote, 1 or more for one
	// compaction wrote (docs/compaction.md).
	Level int `json:"lvl,omitempty"`
	// ModRev is the etcd ModRevision of the entry's key when read (not
	// stored): compaction compares it to swap entries atomically.
	ModRev int64 `json:"-"`
	// Record is, for a block committed through the sequencer, the batch
	// whose record (seq/records/<batch>) holds it, and ModRev that key's
	// ModRevision; 0 for an entry under its own index key (not stored).
	Record uint64 `json:"-"`
}

// End is the offset after the entry's range.
func (e IndexEntry) End() int64 {
	if e.Span > e.Records {
		return e.Base + e.Span
	}
	return e.Base + e.Records
}

// Append is one block to commit: a partition's records stored at a byte
// range of an object already written.
type Append struct {
	Topic     string
	Partition int32
	Object    string
	Off, Len  int64
	Records   int64
	MinTS     int64
	MaxTS     int64
	RawBytes  int64
	// Batches are the idempotent producers' batches in the block, in block
	// order (records outside every batch carry no sequence). The block is
	// committed only if every batch is the next one of its producer;
	// otherwise nothing of it is (ErrBlockRefused) and each batch's result
	// says why.
	Batches []ProducerBatch
}

// AppendResult is the outcome of one Append: its base offset, or why it was
// not committed (ErrTopicNotFound, ErrPartitionOutOfRange, ErrBlockRefused).
// Batches holds one result per Append.Batches entry.
type AppendResult struct {
	Base    int64
	Err     error
	Batches []BatchResult
}

// MaxProducersPerBlock bounds the distinct producer ids of one block, so
// that its commit fits in one etcd transaction.
const MaxProducersPerBlock = 32

const (
	// partitionsPerTxn and opsPerTxn keep a commit transaction within
	// etcd's default limit of 128 compares and 128 puts per transaction: per
	// partition one compare and two puts, per producer in its block one
	// put, plus one compare per topic and per producer, and the guard. The
	// snapshot read before it may need more than 128 gets; it is split
	// into reads of at most opsPerTxn gets at one revision.
	partitionsPerTxn = 60
	opsPerTxn        = 120
	// commitParallelism bounds concurrent chunk transactions of one commit.
	commitParallelism = 4
	// guardTTL bounds how long a guard key lives; commit retries end well
	// before it (maxCommitTime).
	guardTTL      = 120 * time.Second
	guardRotate   = 30 * time.Second
	maxCommitTime = 60 * time.Second
)

// ErrNotCommitted marks appends whose transaction certainly did not apply.
var ErrNotCommitted = errors.New("not committed")

// ErrCommitUnknown marks appends whose last write attempt failed without an
// answer (a timeout, a lost connection): etcd may still have applied it.
var ErrCommitUnknown = errors.New("commit outcome unknown")

// ErrSequencerActive refuses a direct commit once a sequencer has led
// (the marker key seq/active exists): two offset authorities would hand
// out the same offsets. Nothing of the refused chunk is written.
var ErrSequencerActive = errors.New("the cluster commits through the sequencer; set commit_path: sequencer")

type guardValue struct {
	Bases   []int64        `json:"bases"`             // per append of the chunk, -1 when not committed
	Refused []string       `json:"refused,omitempty"` // per append, why it was not committed
	Batches [][]guardBatch `json:"batches,omitempty"` // per append, per producer batch
}

type guardBatch struct {
	Base   int64  `json:"b"`
	Dup    bool   `json:"d,omitempty"`
	Reason string `json:"r,omitempty"`
}

// refusalSentinels are the errors a guard's reasons map back to.
var refusalSentinels = []error{ErrTopicNotFound, ErrPartitionOutOfRange, ErrBlockRefused,
	ErrProducerFenced, ErrOutOfOrderSequence, ErrUnknownProducer, ErrInvalidArgument}

func reasonError(reason string) error {
	if reason == "" {
		return nil
	}
	for _, sentinel := range refusalSentinels {
		if strings.Contains(reason, sentinel.Error()) {
			return fmt.Errorf("%w (%s)", sentinel, reason)
		}
	}
	return errors.New(reason)
}

// chunkBounds splits appends into transactions that fit etcd's limits.
func chunkBounds(appends []Append) [][2]int {
	var out [][2]int
	start, cmps, puts := 0, 2, 1
	for i, a := range appends {
		k := distinctProducers(a.Batches)
		// Compares: partition, topic and producer ids (at most); puts:
		// partition, index entry and one state per producer.
		c, p := 2+k, 2+k
		if i > start && (i-start >= partitionsPerTxn || cmps+c > opsPerTxn || puts+p > opsPerTxn) {
			out = append(out, [2]int{start, i})
			start, cmps, puts = i, 2, 1
		}
		cmps += c
		puts += p
	}
	if start < len(appends) {
		out = append(out, [2]int{start, len(appends)})
	}
	return out
}

func distinctProducers(bs []ProducerBatch) int {
	n := 0
	for i, b := range bs {
		dup := false
		for _, e := range bs[:i] {
			if e.ID == b.ID {
				dup = true
				break
			}
		}
		if !dup {
			n++
		}
	}
	return n
}

// Commit assigns base offsets to appends and records them in etcd: index
// entries written and partitions advanced, in transactions of at most
// partitionsPerTxn partitions each. Each partition may appear once.
//
// commitID must be unique to this set of appends (the object key serves).
// Calling Commit again with the same commitID and appends — after a timeout
// or a lost response — returns the offsets of the first commit instead of
// committing twice: a guard key written in the same transaction records them.
//
// Conflicts with other writers are retried. An error return means some
// appends may be committed and others not; results of chunks that committed
// are still filled in and a retry with the same commitID completes the rest.
func (c *Client) Commit(ctx context.Context, commitID string, appends []Append) ([]AppendResult, error) {
	if err := ValidateAppends(commitID, appends); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, maxCommitTime)
	defer cancel()

	results := make([]AppendResult, len(appends))
	for i, a := range appends {
		results[i] = AppendResult{Base: -1, Err: fmt.Errorf("%s/%d: %w", a.Topic, a.Partition, ErrNotCommitted)}
	}
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, commitParallelism)
		errMu    sync.Mutex
		firstErr error
	)
	for chunk, b := range chunkBounds(appends) {
		start, end := b[0], b[1]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := c.commitChunk(ctx, commitID, chunk, appends[start:end], results[start:end])
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	return results, firstErr
}

func (c *Client) commitChunk(ctx context.Context, commitID string, chunk int, appends []Append, results []AppendResult) error {
	gk := guardKey(commitID, chunk)
	backoff := 2 * time.Millisecond
	ambiguous := false // a write attempt ended without an answer
	// unavailableSince is when the current run of unanswered attempts began.
	var unavailableSince time.Time
	giveUp := func(attempt int, err error) error {
		// The last write may have applied after all: look at the guard once
		// more, with a deadline of its own, unless etcd has not answered for
		// a whole request timeout (the answer would be no answer, after
		// another wait).
		rctx, cancel := context.WithTimeout(WithCaller(context.Background(), CallerOf(ctx)), 5*time.Second)
		defer cancel()
		if c.health.Down() < c.health.Timeout() {
			if resp, gerr := c.cli.Get(rctx, gk); gerr == nil && len(resp.Kvs) > 0 {
				if c.fillFromGuard(gk, resp.Kvs[0].Value, appends, results) == nil {
					return nil
				}
			}
		}
		if ambiguous {
			for i, a := range appends {
				results[i] = AppendResult{Base: -1, Err: fmt.Errorf("%s/%d: %w", a.Topic, a.Partition, ErrCommitUnknown)}
			}
		}
		return fmt.Errorf("commit %s chunk %d after %d attempts: %w", commitID, chunk, attempt+1, err)
	}
	for attempt := 0; ; attempt++ {
		attemptStart := time.Now()
		done, wrote, err := c.tryCommitChunk(ctx, gk, appends, results)
		if done {
			return nil
		}
		if errors.Is(err, ErrSequencerActive) {
			for i, a := range appends {
				results[i] = AppendResult{Base: -1, Err: fmt.Errorf("%s/%d: %w", a.Topic, a.Partition, ErrSequencerActive)}
			}
			return fmt.Errorf("commit %s chunk %d: %w", commitID, chunk, ErrSequencerActive)
		}
		if wrote && err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// A refused lease (an expired producer) means the write did
			// not apply; anything else may have.
			ambiguous = true
		}
		if err != nil {
			if ctx.Err() != nil {
				return giveUp(attempt, err)
			}
			// An outage is not waited out: once etcd has not answered for
			// the request timeout (this commit's attempts, or every call of
			// the client: commits queued behind the first one fail after
			// one attempt), the commit fails (ErrNotCommitted, or
			// ErrCommitUnknown after an unanswered write) and the producer
			// is told to retry, instead of waiting up to maxCommitTime.
			if IsUnavailable(err) {
				if unavailableSince.IsZero() {
					unavailableSince = attemptStart
				}
				if time.Since(unavailableSince) >= c.health.Timeout() || c.health.Down() >= c.health.Timeout() {
					return giveUp(attempt, err)
				}
			} else {
				unavailableSince = time.Time{}
			}
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				c.dropGuardLease()
			}
			c.log.Debug("commit attempt failed, retrying", "commit", commitID, "chunk", chunk, "attempt", attempt, "err", err)
		}
		// Conflict or transient error: back off with jitter and retry. The
		// guard makes the retry safe if the failed attempt did commit.
		sleep := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return giveUp(attempt, ctx.Err())
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// fillFromGuard answers a chunk from the guard an earlier attempt wrote.
func (c *Client) fillFromGuard(gk string, v []byte, appends []Append, results []AppendResult) error {
	var gv guardValue
	if err := json.Unmarshal(v, &gv); err != nil || len(gv.Bases) != len(appends) {
		return fmt.Errorf("guard %s is malformed", gk)
	}
	errs := make([]error, len(appends))
	for i, reason := range gv.Refused {
		if i < len(errs) {
			errs[i] = reasonError(reason)
		}
	}
	batches := make([][]BatchResult, len(appends))
	for i := range appends {
		if len(appends[i].Batches) == 0 {
			continue
		}
		if i >= len(gv.Batches) || len(gv.Batches[i]) != len(appends[i].Batches) {
			return fmt.Errorf("guard %s is malformed", gk)
		}
		for _, g := range gv.Batches[i] {
			batches[i] = append(batches[i], BatchResult{Base: g.Base, Duplicate: g.Dup, Err: reasonError(g.Reason)})
		}
	}
	c.fillResults(appends, results, gv.Bases, errs, batches)
	return nil
}

// tryCommitChunk makes one attempt. done reports that results are final;
// wrote that the attempt sent its write transaction (so an error leaves
// the outcome unknown).
func (c *Client) tryCommitChunk(ctx context.Context, gk string, appends []Append, results []AppendResult) (done, wrote bool, err error) {
	at := newCommitAttempt(gk, appends)
	rs, err := c.snapshot(ctx, at.reads)
	if err != nil {
		return false, false, err
	}
	if g := rs[0].GetResponseRange().Kvs; len(g) > 0 {
		// An earlier attempt committed; answer with its offsets.
		if err := c.fillFromGuard(gk, g[0].Value, appends, results); err != nil {
			return false, false, err
		}
		return true, false, nil
	}
	if err := at.decode(rs); err != nil {
		return false, false, err
	}
	for i := range appends {
		if err := at.plan(i); err != nil {
			return false, false, err
		}
	}
	if len(at.puts) == 0 {
		c.fillResults(appends, results, at.bases, at.errs, at.batchResults)
		return true, false, nil
	}
	lease, err := c.leaseForGuard(ctx)
	if err != nil {
		return false, false, err
	}
	// The marker compare is the one beyond chunkBounds' count: at most
	// opsPerTxn+1 compares, within etcd's 128.
	cmps := append(at.cmps, clientv3.Compare(clientv3.CreateRevision(gk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(seqActiveKey()), "=", 0))
	puts := append(at.puts, clientv3.OpPut(gk, string(at.guard()), clientv3.WithLease(lease)))
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(puts...).Else(clientv3.OpGet(seqActiveKey(), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return false, true, err
	}
	if !tresp.Succeeded {
		if tresp.Responses[0].GetResponseRange().Count > 0 {
			return false, false, ErrSequencerActive
		}
		c.commitRetries.Add(1)
		return false, false, nil // conflict: reread and retry
	}
	c.fillResults(appends, results, at.bases, at.errs, at.batchResults)
	if len(at.committedPids) > 0 {
		c.refreshProducerLeases(ctx, at.committedPids)
	}
	return true, false, nil
}

// commitAttempt is one attempt of a chunk: the reads of its snapshot, what
// they returned, and the write transaction it plans (compares and puts)
// with each append's outcome.
type commitAttempt struct {
	gk      string
	appends []Append

	// The snapshot: the guard, each topic, each partition, each producer's
	// info once and its state on each partition it has a batch in.
	reads      []clientv3.Op
	rs         []*etcdserverpb.ResponseOp
	topics     []string
	topicIdx   map[string]int
	pids       []int64
	pidIdx     map[int64]int
	pidRead0   int                     // index of the first producer read
	stateReads []map[int64]producerRef // per append: producer → its state read

	snaps     []topicSnap
	infos     []*producerInfo
	pidModRev []int64

	// The write and the outcomes.
	pidCompared   []bool
	topicCompared []bool
	committedPids map[int64]*producerInfo
	bases         []int64
	errs          []error
	batchResults  [][]BatchResult
	cmps          []clientv3.Cmp
	puts          []clientv3.Op
}

// producerRef is a producer state key and its index in the reads.
type producerRef struct {
	key  string
	read int
}

// topicSnap is a topic as read (nil: not found) and its ModRevision.
type topicSnap struct {
	t      *Topic
	modRev int64
}

// newCommitAttempt lists the reads of one consistent snapshot: the guard,
// the topics, the partitions, and for idempotence each producer's info
// once and its state on each partition it has a batch in.
func newCommitAttempt(gk string, appends []Append) *commitAttempt {
	at := &commitAttempt{gk: gk, appends: appends, topicIdx: map[string]int{}, pidIdx: map[int64]int{}}
	for _, a := range appends {
		if _, ok := at.topicIdx[a.Topic]; !ok {
			at.topicIdx[a.Topic] = len(at.topics)
			at.topics = append(at.topics, a.Topic)
		}
	}
	at.reads = []clientv3.Op{clientv3.OpGet(gk)}
	for _, t := range at.topics {
		at.reads = append(at.reads, clientv3.OpGet(topicKey(t)))
	}
	for _, a := range appends {
		at.reads = append(at.reads, clientv3.OpGet(partitionKey(a.Topic, a.Partition)))
	}
	at.stateReads = make([]map[int64]producerRef, len(appends))
	for _, a := range appends {
		for _, b := range a.Batches {
			if _, ok := at.pidIdx[b.ID]; !ok {
				at.pidIdx[b.ID] = len(at.pids)
				at.pids = append(at.pids, b.ID)
			}
		}
	}
	at.pidRead0 = len(at.reads)
	for _, id := range at.pids {
		at.reads = append(at.reads, clientv3.OpGet(producerKey(id)))
	}
	for i, a := range appends {
		for _, b := range a.Batches {
			if at.stateReads[i] == nil {
				at.stateReads[i] = map[int64]producerRef{}
			}
			if _, ok := at.stateReads[i][b.ID]; !ok {
				k := producerStateKey(b.ID, a.Topic, a.Partition)
				at.stateReads[i][b.ID] = producerRef{key: k, read: len(at.reads)}
				at.reads = append(at.reads, clientv3.OpGet(k))
			}
		}
	}
	return at
}

// decode reads the topics and the producers' infos out of the snapshot
// and prepares the outcomes.
func (at *commitAttempt) decode(rs []*etcdserverpb.ResponseOp) error {
	at.rs = rs
	at.snaps = make([]topicSnap, len(at.topics))
	for i := range at.topics {
		kvs := rs[1+i].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		var t Topic
		if err := json.Unmarshal(kvs[0].Value, &t); err != nil {
			return fmt.Errorf("decode topic %q: %w", at.topics[i], err)
		}
		at.snaps[i] = topicSnap{t: &t, modRev: kvs[0].ModRevision}
	}
	at.infos = make([]*producerInfo, len(at.pids))
	at.pidCompared = make([]bool, len(at.pids))
	at.pidModRev = make([]int64, len(at.pids))
	for i := range at.pids {
		if kvs := rs[at.pidRead0+i].GetResponseRange().Kvs; len(kvs) > 0 {
			at.infos[i] = new(producerInfo)
			if err := json.Unmarshal(kvs[0].Value, at.infos[i]); err != nil {
				return fmt.Errorf("decode producer %d: %w", at.pids[i], err)
			}
			at.pidModRev[i] = kvs[0].ModRevision
		}
	}
	at.committedPids = map[int64]*producerInfo{}
	at.bases = make([]int64, len(at.appends))
	at.errs = make([]error, len(at.appends))
	at.batchResults = make([][]BatchResult, len(at.appends))
	at.topicCompared = make([]bool, len(at.topics))
	return nil
}

// plan decides append i against the snapshot: refused (its outcome in
// errs), or its partition state, index entry and producer states added to
// the write with the compares that fence them.
func (at *commitAttempt) plan(i int) error {
	a := at.appends[i]
	ti := at.topicIdx[a.Topic]
	snap := at.snaps[ti]
	at.bases[i] = -1
	switch {
	case snap.t == nil:
		at.errs[i] = fmt.Errorf("topic %q: %w", a.Topic, ErrTopicNotFound)
		return nil
	case a.Partition < 0 || a.Partition >= snap.t.Partitions:
		at.errs[i] = fmt.Errorf("%w: topic %q has %d partitions, got partition %d", ErrPartitionOutOfRange, a.Topic, snap.t.Partitions, a.Partition)
		return nil
	}
	pk := partitionKey(a.Topic, a.Partition)
	var st PartitionState
	var modRev int64
	if kvs := at.rs[1+len(at.topics)+i].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &st); err != nil {
			return fmt.Errorf("decode partition %s/%d: %w", a.Topic, a.Partition, err)
		}
		modRev = kvs[0].ModRevision
	}
	if len(a.Batches) > 0 {
		sim, refused, err := at.checkBatches(i, st.Next)
		if err != nil || refused {
			return err
		}
		at.putProducerStates(i, sim)
	}
	if !at.topicCompared[ti] {
		at.topicCompared[ti] = true
		at.cmps = append(at.cmps, clientv3.Compare(clientv3.ModRevision(topicKey(a.Topic)), "=", snap.modRev))
	}
	at.cmps = append(at.cmps, clientv3.Compare(clientv3.ModRevision(pk), "=", modRev))
	at.bases[i] = st.Next
	st.Next += a.Records
	st.Bytes += a.Len
	st.Segments++
	sv, _ := json.Marshal(st)
	ev, _ := json.Marshal(IndexEntry{Object: a.Object, Off: a.Off, Len: a.Len, Records: a.Records, MinTS: a.MinTS, MaxTS: a.MaxTS, RawBytes: a.RawBytes})
	at.puts = append(at.puts, clientv3.OpPut(pk, string(sv)), clientv3.OpPut(indexKey(a.Topic, a.Partition, at.bases[i]), string(ev)))
	return nil
}

// checkBatches decides every producer batch of append i (whose block would
// start at next) against its producer's state; the block commits only if
// each one is its producer's next. It returns each producer's state after
// the block, or refused with the outcomes in batchResults and errs.
func (at *commitAttempt) checkBatches(i int, next int64) (sim map[int64]*ProducerState, refused bool, err error) {
	a := at.appends[i]
	sim = map[int64]*ProducerState{}
	for id, ref := range at.stateReads[i] {
		var st *ProducerState
		if kvs := at.rs[ref.read].GetResponseRange().Kvs; len(kvs) > 0 {
			st = new(ProducerState)
			if err := json.Unmarshal(kvs[0].Value, st); err != nil {
				return nil, false, fmt.Errorf("decode producer %d state on %s/%d: %w", id, a.Topic, a.Partition, err)
			}
		}
		sim[id] = st
	}
	br := make([]BatchResult, len(a.Batches))
	for j, b := range a.Batches {
		dup, err := checkBatch(at.infos[at.pidIdx[b.ID]], sim[b.ID], b, a.Topic, a.Partition)
		switch {
		case err != nil:
			br[j] = BatchResult{Base: -1, Err: err}
			refused = true
		case dup >= 0:
			br[j] = BatchResult{Base: dup, Duplicate: true}
			refused = true
		default:
			br[j] = BatchResult{Base: next + b.Index}
			sim[b.ID] = advance(sim[b.ID], b, next+b.Index)
		}
	}
	at.batchResults[i] = br
	if refused {
		for j := range br {
			if br[j].Err == nil && !br[j].Duplicate {
				br[j] = BatchResult{Base: -1, Err: fmt.Errorf("%w: %s/%d: another batch in the same block was a duplicate or out of order; retry", ErrBlockRefused, a.Topic, a.Partition)}
			}
		}
		at.bases[i] = -1
		at.errs[i] = fmt.Errorf("%w: %s/%d: the block held a duplicate or out-of-order producer batch", ErrBlockRefused, a.Topic, a.Partition)
	}
	return sim, refused, nil
}

// putProducerStates adds the producers' new states on append i's
// partition to the write, fenced by each producer's info key.
func (at *commitAttempt) putProducerStates(i int, sim map[int64]*ProducerState) {
	for id, st := range sim {
		k := at.pidIdx[id]
		info := at.infos[k]
		if !at.pidCompared[k] {
			at.pidCompared[k] = true
			at.cmps = append(at.cmps, clientv3.Compare(clientv3.ModRevision(producerKey(id)), "=", at.pidModRev[k]))
		}
		at.committedPids[id] = info
		// No compare on the state key itself: only a commit to this
		// partition changes it, and that changes the partition key,
		// compared by plan; its expiry deletes the id key too (one
		// lease), compared above.
		ref := at.stateReads[i][id]
		sv, _ := json.Marshal(st)
		at.puts = append(at.puts, clientv3.OpPut(ref.key, string(sv), clientv3.WithLease(clientv3.LeaseID(info.Lease))))
	}
}

// guard is the guard value: every append's outcome, so a retry of a
// commit that went through answers the same.
func (at *commitAttempt) guard() []byte {
	refused := make([]string, len(at.appends))
	for i, e := range at.errs {
		if e != nil {
			refused[i] = e.Error()
		}
	}
	gvv := guardValue{Bases: at.bases, Refused: refused}
	for i := range at.appends {
		var gb []guardBatch
		for _, r := range at.batchResults[i] {
			g := guardBatch{Base: r.Base, Dup: r.Duplicate}
			if r.Err != nil {
				g.Reason = r.Err.Error()
			}
			gb = append(gb, g)
		}
		gvv.Batches = append(gvv.Batches, gb)
	}
	gv, _ := json.Marshal(gvv)
	return gv
}

// snapshot runs the gets of reads in one consistent snapshot: one read
// transaction, or, past opsPerTxn gets, several at the revision of the
// first.
func (c *Client) snapshot(ctx context.Context, reads []clientv3.Op) ([]*etcdserverpb.ResponseOp, error) {
	n := min(len(reads), opsPerTxn)
	resp, err := c.cli.Txn(ctx).Then(reads[:n]...).Commit()
	if err != nil {
		return nil, err
	}
	out := resp.Responses
	rev := resp.Header.Revision
	for start := n; start < len(reads); start += opsPerTxn {
		end := min(start+opsPerTxn, len(reads))
		pinned := make([]clientv3.Op, 0, end-start)
		for _, op := range reads[start:end] {
			pinned = append(pinned, clientv3.OpGet(string(op.KeyBytes()), clientv3.WithRev(rev)))
		}
		resp, err := c.cli.Txn(ctx).Then(pinned...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read at revision %d: %w", rev, err)
		}
		out = append(out, resp.Responses...)
	}
	return out, nil
}

func (c *Client) fillResults(appends []Append, results []AppendResult, bases []int64, errs []error, batches [][]BatchResult) {
	for i := range appends {
		results[i] = AppendResult{Base: bases[i], Err: errs[i], Batches: batches[i]}
		if results[i].Err == nil && bases[i] < 0 {
			results[i].Err = fmt.Errorf("%s/%d: not committed", appends[i].Topic, appends[i].Partition)
		}
	}
}

// leaseForGuard returns a lease that outlives any retry of a commit. Leases
// rotate so guard keys expire within guardTTL and etcd's key count stays
// bounded.
func (c *Client) leaseForGuard(ctx context.Context) (clientv3.LeaseID, error) {
	c.guardMu.Lock()
	defer c.guardMu.Unlock()
	if c.guardLease != 0 && time.Since(c.guardGranted) < guardRotate {
		return c.guardLease, nil
	}
	resp, err := c.cli.Grant(ctx, int64(guardTTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant guard lease: %w", err)
	}
	c.guardLease, c.guardGranted = resp.ID, time.Now()
	return resp.ID, nil
}

func (c *Client) dropGuardLease() {
	c.guardMu.Lock()
	c.guardLease = 0
	c.guardMu.Unlock()
}
