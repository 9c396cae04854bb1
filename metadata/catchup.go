package metadata

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// catchUpTimeout bounds one CatchUp round: past it the caller falls back
// to reading etcd itself.
const catchUpTimeout = 2 * time.Second

// progressRetry is how long a catch-up waits for the answer to one
// progress request before asking again.
const progressRetry = 200 * time.Millisecond

// catchUp groups concurrent CatchUp calls into rounds.
type catchUp struct {
	mu      sync.Mutex
	running bool
	next    []chan error
	rounds  atomic.Int64
}

// CatchUpRounds counts the catch-up rounds run (each one linearizable read
// of etcd).
func (ca *Cache) CatchUpRounds() int64 { return ca.catchUp.rounds.Load() }

// CatchUp returns once the cache reflects everything etcd had committed
// when it was called: one linearizable read gives etcd's current revision,
// and a progress request makes the watch report it if no event in the
// cache's range came since. So a reader that finds nothing in the cache
// after CatchUp knows etcd has nothing either, without reading the index
// or the sequencer's records in etcd. Concurrent calls share rounds, and a
// round starts only after every call it answers was made (linearizable
// for each of them): at most one round runs at a time, whatever the number
// of tailing readers.
func (ca *Cache) CatchUp(ctx context.Context) error {
	cu := &ca.catchUp
	ch := make(chan error, 1)
	cu.mu.Lock()
	cu.next = append(cu.next, ch)
	if !cu.running {
		cu.running = true
		go ca.catchUpRounds()
	}
	cu.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ca *Cache) catchUpRounds() {
	cu := &ca.catchUp
	for {
		cu.mu.Lock()
		round := cu.next
		cu.next = nil
		if len(round) == 0 {
			cu.running = false
			cu.mu.Unlock()
			return
		}
		cu.mu.Unlock()
		cu.rounds.Add(1)
		err := ca.catchUpOnce()
		for _, ch := range round {
			ch <- err
		}
	}
}

func (ca *Cache) catchUpOnce() error {
	ctx, cancel := context.WithTimeout(WithCaller(context.Background(), CallerCache), catchUpTimeout)
	defer cancel()
	resp, err := ca.c.cli.Get(ctx, ca.from, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("metadata cache catch-up: %w", err)
	}
	rev := resp.Header.Revision
	if ca.Revision() >= rev {
		return nil
	}
	// The watch runs with WithRequireLeader: the progress request must
	// carry the same metadata to reach its stream.
	// etcd drops a progress request while one of the client's watches is
	// still catching up (it answers none then), so ask again every
	// progressRetry until the cache reaches rev or the timeout.
	for {
		if err := ca.c.cli.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil {
			return fmt.Errorf("metadata cache catch-up: %w", err)
		}
		wctx, wcancel := context.WithTimeout(ctx, progressRetry)
		err := ca.WaitRevision(wctx, rev)
		wcancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("metadata cache catch-up to revision %d: %w", rev, ctx.Err())
		}
	}
}
