package fetchloop

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// scripted is a Cluster whose partitions each hold records 0..n-1 (a
// record is its partition*1000 plus its offset) and whose answers can fail as scripted: the
// failures of a partition are used up one per call that asks for it; the
// call's failures one per call.
type scripted struct {
	mu        sync.Mutex
	n         int64
	partFails map[int32][]error
	callFails []error
	calls     [][]Request
}

func (s *scripted) PartitionCount(context.Context, string) (int32, error) { return 3, nil }

func (s *scripted) ListOffsets(_ context.Context, _ string, spec varvev1.OffsetSpec, _ time.Time, ps ...int32) (map[int32]int64, error) {
	out := make(map[int32]int64)
	for _, p := range ps {
		if spec == varvev1.OffsetSpec_OFFSET_SPEC_LATEST {
			out[p] = s.n
		} else {
			out[p] = 0
		}
	}
	return out, nil
}

func (s *scripted) FetchPartitions(ctx context.Context, _ string, reqs []Request, _ int32, maxWait time.Duration) ([]Result[int64], error) {
	s.mu.Lock()
	s.calls = append(s.calls, slices.Clone(reqs))
	if len(s.callFails) > 0 {
		err := s.callFails[0]
		s.callFails = s.callFails[1:]
		s.mu.Unlock()
		return nil, err
	}
	var out []Result[int64]
	got := false
	for _, r := range reqs {
		if fs := s.partFails[r.Partition]; len(fs) > 0 {
			s.partFails[r.Partition] = fs[1:]
			out = append(out, Result[int64]{Partition: r.Partition, Err: fs[0]})
			got = true
			continue
		}
		if r.Offset < 0 || r.Offset > s.n {
			out = append(out, Result[int64]{Partition: r.Partition, Err: connect.NewError(connect.CodeOutOfRange, fmt.Errorf("offset %d", r.Offset))})
			got = true
			continue
		}
		b := &Batch[int64]{NextOffset: s.n, HighWatermark: s.n}
		for o := r.Offset; o < s.n; o++ {
			b.Records = append(b.Records, int64(r.Partition)*1000+o)
			got = true
		}
		out = append(out, Result[int64]{Partition: r.Partition, Batch: b})
	}
	s.mu.Unlock()
	if !got {
		select { // a long poll with nothing new
		case <-ctx.Done():
		case <-time.After(maxWait):
		}
	}
	return out, nil
}

func newTestLoop(s *scripted) *Loop[int64] {
	return New("t", Options[int64]{
		Cluster: s, MaxWait: 20 * time.Millisecond,
		Offset: func(r int64) int64 { return r % 1000 },
		Reset: func(p int32, from, logStart, logEnd int64, err error) (int64, error) {
			return 0, fmt.Errorf("reset none: %w", err)
		},
		CtxError: func(err error) error { return err },
	})
}

// TestPartitionRetriesAlone: a partition failing with a retriable code is
// retried (alone, after a backoff) while the others' records are handed to
// Poll at once; a failure of the whole call is retried as a whole; a
// partition failing for good fails Poll with the others' records.
func TestPartitionRetriesAlone(t *testing.T) {
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("block owner gone"))
	s := &scripted{n: 3, partFails: map[int32][]error{1: {unavailable, unavailable}},
		callFails: []error{connect.NewError(connect.CodeUnavailable, errors.New("node restarting"))}}
	l := newTestLoop(s)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	per := map[int32][]int64{}
	for len(per[0])+len(per[1])+len(per[2]) < 9 {
		recs, err := l.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			per[int32(r/1000)] = append(per[int32(r/1000)], r%1000)
		}
	}
	for p, offs := range per {
		if !slices.Equal(offs, []int64{0, 1, 2}) {
			t.Fatalf("partition %d: offsets %v, want 0 1 2", p, offs)
		}
	}
	s.mu.Lock()
	var calls [][]Request // the calls asking for partition 1
	for _, c := range s.calls {
		if slices.ContainsFunc(c, func(r Request) bool { return r.Partition == 1 }) {
			calls = append(calls, c)
		}
	}
	s.mu.Unlock()
	// Call 1 fails whole and is retried whole (call 2); partition 1 fails
	// in call 2 and is retried alone (failing again, then answered), while
	// the others' records went to Poll and they were fetched on without it.
	want := [][]Request{
		{{0, 0}, {1, 0}, {2, 0}},
		{{0, 0}, {1, 0}, {2, 0}},
		{{1, 0}},
		{{1, 0}},
	}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("calls asking for partition 1: %v, want %v", calls, want)
	}

	// For good: DataLoss of partition 2 fails Poll, with the records of
	// the others.
	s.mu.Lock()
	s.n = 4
	s.partFails = map[int32][]error{2: {connect.NewError(connect.CodeDataLoss, errors.New("gone"))}}
	s.mu.Unlock()
	var err error
	for err == nil {
		_, err = l.Poll(ctx)
	}
	if connect.CodeOf(err) != connect.CodeDataLoss || l.Position(2) != 3 {
		t.Fatalf("poll: %v, partition 2 at %d; want DATA_LOSS at 3", err, l.Position(2))
	}
	for l.Position(0) < 4 || l.Position(1) < 4 || l.Position(2) < 4 {
		if _, err := l.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
