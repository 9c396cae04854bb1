package kafka

import (
	"context"
	"io"
	"sync"
	"time"
)

// frameChunk is how much of a request frame is read (and its memory
// taken) at a time: a client that announces a large frame and sends it
// slowly holds what it sent, not what it announced.
const frameChunk = 1 << 20

// budget bounds the bytes of request frames all connections of a server
// hold at once (being read, or handled: a produce's batches until it is
// committed), as Kafka's queued.max.request.bytes does: a connection that
// finds it spent stops reading until others release theirs.
type budget struct {
	mu   sync.Mutex
	cond *sync.Cond
	left int64
}

func newBudget(n int64) *budget {
	b := &budget{left: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// take waits until n bytes are free and takes them; false when ctx ended
// first.
func (b *budget) take(ctx context.Context, n int64) bool {
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.left < n {
		if ctx.Err() != nil {
			return false
		}
		b.cond.Wait()
	}
	b.left -= n
	return true
}

func (b *budget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.left += n
	b.cond.Broadcast()
	b.mu.Unlock()
}

// readFrame reads a request body of n bytes, a chunk at a time, each
// taken from the server's budget; release gives them back (once the
// request is answered). Reading a frame may take 30 s at most.
func (c *conn) readFrame(n int) (body []byte, release func(), err error) {
	ctx, cancel := context.WithTimeout(c.s.ctx, 30*time.Second)
	defer cancel()
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var taken int64
	release = func() { c.s.frames.give(taken) }
	body = make([]byte, 0, min(n, frameChunk))
	for len(body) < n {
		k := min(n-len(body), frameChunk)
		if !c.s.frames.take(ctx, int64(k)) {
			release()
			return nil, nil, context.Cause(ctx)
		}
		taken += int64(k)
		if cap(body)-len(body) < k {
			grown := make([]byte, len(body), min(n, 2*cap(body)+k))
			copy(grown, body)
			body = grown
		}
		if _, err := io.ReadFull(c.nc, body[len(body):len(body)+k]); err != nil {
			release()
			return nil, nil, err
		}
		body = body[:len(body)+k]
	}
	return body, release, nil
}
