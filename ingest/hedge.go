package ingest

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Hedged segment PUTs. An object store's tail latency is per request: one
// PUT in a few hundred can take ten times its peers while the store is
// otherwise quick (AWS advises latency-sensitive applications to track
// slow S3 requests and retry them aggressively). A flush's producers wait
// for its PUT, so such a straggler becomes an ack latency spike for a whole
// tick. When a PUT has not answered after twice the p90 of the node's
// recent PUTs (and at least Config.PutHedgeMin), the same bytes are PUT
// again under a new key; the first to succeed is committed, the other is
// cancelled and deleted (or, if it lands after the delete, left to the
// orphan collector: no index entry ever names it).

const (
	// hedgeWindow is how many recent PUT durations the delay is taken from.
	hedgeWindow = 128
	// hedgeWarmup is how many PUTs a node makes before it hedges at all.
	hedgeWarmup = 20
)

// putHedge decides when a PUT is raced by a second one.
type putHedge struct {
	min time.Duration // negative: never

	mu     sync.Mutex
	recent [hedgeWindow]time.Duration
	n      int // PUTs observed (the window holds the last hedgeWindow)
	sorted []time.Duration
}

// observe records a PUT's duration (first attempt to success).
func (h *putHedge) observe(d time.Duration) {
	h.mu.Lock()
	h.recent[h.n%hedgeWindow] = d
	h.n++
	h.mu.Unlock()
}

// delay is how long a PUT runs alone before it is hedged; 0: not at all.
func (h *putHedge) delay() time.Duration {
	if h.min < 0 {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n < hedgeWarmup {
		return 0
	}
	h.sorted = append(h.sorted[:0], h.recent[:min(h.n, hedgeWindow)]...)
	slices.Sort(h.sorted)
	p90 := h.sorted[len(h.sorted)*9/10]
	return max(h.min, 2*p90)
}

// putResult is one PUT's outcome.
type putResult struct {
	key   string
	err   error
	hedge bool
}

// putHedged stores obj under key, racing a second PUT under a fresh key
// (newKey) if the first has not answered within the hedge delay. It
// returns the key that holds obj. When both fail, the error is the first
// PUT's (about key: the caller's retry logic reads it so).
func (in *Ingester) putHedged(ctx context.Context, key string, obj []byte, newKey func() string) (string, error) {
	wait := in.hedge.delay()
	if wait <= 0 {
		return key, in.store.PutIfAbsent(ctx, key, obj)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan putResult, 2)
	put := func(k string, hedge bool) {
		results <- putResult{key: k, err: in.store.PutIfAbsent(pctx, k, obj), hedge: hedge}
	}
	go put(key, false)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	running, hedgeKey := 1, ""
	var firstErr error
	for {
		select {
		case <-timer.C:
			if running == 1 && firstErr == nil {
				hedgeKey = newKey()
				running++
				in.m.putHedges.Add(ctx, 1)
				go put(hedgeKey, true)
			}
		case r := <-results:
			running--
			if r.err == nil {
				loser := hedgeKey
				if r.hedge {
					loser = key
					in.m.putHedgesWon.Add(ctx, 1)
				}
				if running > 0 {
					// cancel (deferred) ends the loser; its object, if the
					// store took it all the same, goes once it answers.
					go in.dropLoser(loser, results)
				}
				return r.key, nil
			}
			if !r.hedge {
				firstErr = r.err
			} else {
				in.log.Warn("hedged segment put failed", "object", r.key, "err", r.err)
			}
			if running == 0 {
				if firstErr == nil {
					firstErr = r.err
				}
				return key, firstErr
			}
		}
	}
}

// dropLoser waits for the PUT that lost its race to answer (it was
// cancelled), then deletes its object in case the store took it anyway. A
// failure, or a PUT still unanswered after the put timeout, leaves the
// object to the orphan collector: no index entry names it.
func (in *Ingester) dropLoser(key string, results <-chan putResult) {
	select {
	case <-results:
	case <-time.After(in.cfg.PutTimeout):
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.PutTimeout)
	defer cancel()
	if err := in.store.Delete(ctx, key); err != nil {
		in.log.Debug("could not delete the object of a hedged put that lost; the orphan collector will", "object", key, "err", err)
	}
}
