package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
)

// Fetch v4 is the first that answers record batches with a log start
// offset of sorts; v13 and later name topics by id and are left out.
func init() { register(1, 4, 12, handleFetch) }

// maxFetchSessions bounds the incremental fetch sessions one node keeps
// (Kafka's max.incremental.fetch.session.cache.slots is 1,000); past it
// the least recently used is evicted, and its client falls back to a full
// fetch (FETCH_SESSION_ID_NOT_FOUND).
const maxFetchSessions = 1000

// maxFetchWait caps a fetch's max wait.
const maxFetchWait = 30 * time.Second

type tp struct {
	topic string
	part  int32
}

// sessPart is one partition of a fetch session: where the client fetches
// from, and what the last answer said of it (an incremental answer
// includes a partition only when something changed).
type sessPart struct {
	offset   int64
	maxBytes int32
	sent     bool
	hw, ls   int64
}

// fetchSession is a KIP-227 incremental fetch session.
type fetchSession struct {
	id    int32
	mu    sync.Mutex
	epoch int32 // the epoch the next request must carry
	parts map[tp]*sessPart
	order []tp
	next  int // where the next answer starts, rotating for fairness
	used  time.Time
}

type fetchSessions struct {
	mu  sync.Mutex
	max int
	m   map[int32]*fetchSession
}

func newFetchSessions(max int) *fetchSessions {
	return &fetchSessions{max: max, m: map[int32]*fetchSession{}}
}

func (fs *fetchSessions) create() *fetchSession {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.m) >= fs.max {
		var old *fetchSession
		for _, s := range fs.m {
			if old == nil || s.used.Before(old.used) {
				old = s
			}
		}
		delete(fs.m, old.id)
	}
	s := &fetchSession{epoch: 1, parts: map[tp]*sessPart{}, used: time.Now()}
	for {
		s.id = rand.Int32N(math.MaxInt32-1) + 1
		if fs.m[s.id] == nil {
			break
		}
	}
	fs.m[s.id] = s
	return s
}

func (fs *fetchSessions) get(id int32) *fetchSession {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	s := fs.m[id]
	if s != nil {
		s.used = time.Now()
	}
	return s
}

func (fs *fetchSessions) remove(id int32) {
	fs.mu.Lock()
	delete(fs.m, id)
	fs.mu.Unlock()
}

func (s *fetchSession) set(k tp, offset int64, maxBytes int32) {
	if p := s.parts[k]; p != nil {
		p.offset, p.maxBytes = offset, maxBytes
		return
	}
	s.parts[k] = &sessPart{offset: offset, maxBytes: maxBytes}
	s.order = append(s.order, k)
}

func (s *fetchSession) forget(k tp) {
	if s.parts[k] == nil {
		return
	}
	delete(s.parts, k)
	for i, o := range s.order {
		if o == k {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// handleFetch answers a Fetch, full or incremental (KIP-227): the stored
// record batches of each partition from its offset, waiting up to the max
// wait until they hold the request's min bytes (woken by the metadata
// watch of the index, not polling).
func handleFetch(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.FetchRequest)
	resp := req.ResponseKind().(*kmsg.FetchResponse)

	var sess *fetchSession
	incremental := false
	switch {
	case req.Version < 7 || (req.SessionID == 0 && req.SessionEpoch == -1):
		// Sessionless full fetch.
	case req.SessionEpoch == -1:
		c.s.sessions.remove(req.SessionID)
	case req.SessionEpoch == 0:
		if req.SessionID != 0 {
			c.s.sessions.remove(req.SessionID)
		}
		sess = c.s.sessions.create()
	default:
		sess = c.s.sessions.get(req.SessionID)
		if sess == nil {
			resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
			return resp, nil
		}
		incremental = true
	}

	// The partitions this fetch reads, in order.
	var want []tp
	state := map[tp]*sessPart{}
	if sess != nil {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		if incremental && req.SessionEpoch != sess.epoch {
			resp.ErrorCode = kerr.InvalidFetchSessionEpoch.Code
			return resp, nil
		}
		for _, ft := range req.ForgottenTopics {
			for _, p := range ft.Partitions {
				sess.forget(tp{ft.Topic, p})
			}
		}
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				sess.set(tp{rt.Topic, rp.Partition}, rp.FetchOffset, rp.PartitionMaxBytes)
			}
		}
		if incremental { // a new session expects epoch 1 next
			if sess.epoch == math.MaxInt32 {
				sess.epoch = 1
			} else {
				sess.epoch++
			}
		}
		resp.SessionID = sess.id
		n := len(sess.order)
		for i := range n {
			k := sess.order[(sess.next+i)%n]
			want = append(want, k)
			state[k] = sess.parts[k]
		}
		if n > 0 {
			sess.next = (sess.next + 1) % n
		}
	} else {
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				k := tp{rt.Topic, rp.Partition}
				if state[k] == nil {
					want = append(want, k)
				}
				state[k] = &sessPart{offset: rp.FetchOffset, maxBytes: rp.PartitionMaxBytes}
			}
		}
	}

	if c.s.d.Fetcher == nil {
		return redirectFetch(c, req, resp, want), nil
	}

	maxBytes := int(req.MaxBytes)
	if req.Version < 3 || maxBytes <= 0 {
		maxBytes = math.MaxInt32
	}
	if lim := c.s.cfg.FetchMaxBytes; lim > 0 && maxBytes > lim {
		maxBytes = lim
	}
	wait := min(time.Duration(max(req.MaxWaitMillis, 0))*time.Millisecond, maxFetchWait)
	q := c.quotas()
	var results map[tp]partResult
	if w := time.Duration(0); q != nil {
		w = q.KafkaFetchThrottle(c.id)
		if w > 0 {
			// Over the fetch quota: no records, and the connection waits
			// out the debt before its next request.
			resp.ThrottleMillis = c.throttle.set(w)
			results = make(map[tp]partResult, len(want))
			for _, k := range want {
				st := c.s.d.Fetcher.View(k.topic, k.part).State
				results[k] = partResult{hw: st.Next, ls: st.Start}
			}
		}
	}
	if results == nil {
		results = c.readPartitions(ctx, want, state, maxBytes, int(req.MinBytes), wait)
	}
	if q != nil {
		n := 0
		for _, r := range results {
			n += len(r.batches)
		}
		q.KafkaFetchCharge(c.id, n)
	}

	// The answer: every partition of a full fetch; of an incremental one,
	// those with records, an error, or a changed high watermark or log
	// start.
	byTopic := map[string]int{}
	for _, k := range want {
		r := results[k]
		st := state[k]
		changed := !st.sent || r.hw != st.hw || r.ls != st.ls
		st.sent, st.hw, st.ls = true, r.hw, r.ls
		if incremental && len(r.batches) == 0 && r.code == 0 && !changed {
			continue
		}
		i, ok := byTopic[k.topic]
		if !ok {
			i = len(resp.Topics)
			byTopic[k.topic] = i
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = k.topic
			resp.Topics = append(resp.Topics, rt)
		}
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition = k.part
		rp.ErrorCode = r.code
		rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = r.hw, r.hw, r.ls
		rp.PreferredReadReplica = -1
		rp.RecordBatches = r.batches
		if rp.RecordBatches == nil {
			// Empty, never null, as Kafka answers: librdkafka takes a
			// null record set as a protocol error ("invalid
			// MessageSetSize -1") and fetches the partition again forever.
			rp.RecordBatches = []byte{}
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
	}
	return resp, nil
}

type partResult struct {
	batches []byte
	code    int16
	hw, ls  int64
}

// readPartitions reads want (offsets and limits in state) up to maxBytes
// in all, waiting up to wait until they hold minBytes (at least one
// record), woken by the index watch of any of them: an error answers at
// once. One topic's partitions are one FetchPartitions call (which waits
// on its own for their first record); several topics, or a wait for more
// bytes, wait through Fetcher.WaitAny, and then every partition is read
// again.
func (c *conn) readPartitions(ctx context.Context, want []tp, state map[tp]*sessPart, maxBytes, minBytes int, wait time.Duration) map[tp]partResult {
	out := make(map[tp]partResult, len(want))
	f := c.s.d.Fetcher
	type topicReq struct {
		name  string
		parts []fetch.PartitionFetch
	}
	var topics []*topicReq
	idx := map[string]*topicReq{}
	for _, k := range want {
		tr := idx[k.topic]
		if tr == nil {
			if !c.allowed(authz.Topic, k.topic, authz.Consume) {
				out[k] = partResult{code: kerr.TopicAuthorizationFailed.Code, hw: -1, ls: -1}
				continue
			}
			t, ok := c.s.d.Topics.Topic(k.topic)
			if !ok || k.part < 0 || k.part >= t.Partitions {
				out[k] = partResult{code: kerr.UnknownTopicOrPartition.Code, hw: -1, ls: -1}
				continue
			}
			tr = &topicReq{name: k.topic}
			idx[k.topic] = tr
			topics = append(topics, tr)
		} else if t, _ := c.s.d.Topics.Topic(k.topic); k.part < 0 || k.part >= t.Partitions {
			out[k] = partResult{code: kerr.UnknownTopicOrPartition.Code, hw: -1, ls: -1}
			continue
		}
		st := state[k]
		tr.parts = append(tr.parts, fetch.PartitionFetch{Partition: k.part, Offset: st.offset, MaxBytes: int(max(st.maxBytes, 1))})
	}
	if len(topics) == 0 {
		if wait > 0 && len(want) == 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		return out
	}
	deadline := time.Now().Add(wait)
	minBytes = max(minBytes, 1)
	for {
		// The views a wait below needs, taken before the read so that a
		// change during it is not missed; none when no such wait can
		// come (one topic, whose FetchPartitions waits for its first
		// record itself, and min bytes of one).
		var views []metadata.PartitionView
		if len(topics) > 1 || minBytes > 1 {
			for _, tr := range topics {
				for _, pf := range tr.parts {
					views = append(views, f.View(tr.name, pf.Partition))
				}
			}
		}
		budget := maxBytes
		got, failed := false, false
		for _, tr := range topics {
			tw := time.Duration(0)
			if len(topics) == 1 {
				tw = time.Until(deadline)
			}
			rs, err := f.FetchPartitions(ctx, tr.name, tr.parts, max(budget, 1), max(tw, 0), true)
			if err != nil {
				code := errorCode(err)
				for _, pf := range tr.parts {
					out[tp{tr.name, pf.Partition}] = partResult{code: code, hw: -1, ls: -1}
				}
				failed = true
				continue
			}
			for _, r := range rs {
				pr := partResult{batches: r.Batches, hw: r.HighWatermark, ls: r.LogStartOffset}
				if len(r.Batches) > 0 {
					// The watched index's high watermark may trail the
					// records read (asked of etcd past it): never answer
					// one below them (read_committed clients drop records
					// at and past it).
					pr.hw = max(pr.hw, r.Next)
				}
				if r.Err != nil {
					pr = partResult{code: errorCode(r.Err), hw: -1, ls: -1}
					var st metadata.PartitionState
					if errors.Is(r.Err, fetch.ErrOffsetOutOfRange) {
						st = f.View(tr.name, r.Partition).State
						pr.hw, pr.ls = st.Next, st.Start
					}
					failed = true
				}
				budget -= len(r.Batches)
				got = got || len(r.Batches) > 0
				out[tp{tr.name, r.Partition}] = pr
			}
		}
		left := time.Until(deadline)
		switch {
		case failed || maxBytes-budget >= minBytes || left <= 0 || ctx.Err() != nil:
			// An error, min bytes reached, or the max wait over.
			return out
		case !got && len(topics) == 1:
			return out // FetchPartitions waited until the deadline
		}
		// Fewer bytes than min bytes (or none, of several topics): wait
		// for a change of any partition, then read them all again.
		if !f.WaitAny(ctx, views, left) {
			if ctx.Err() != nil {
				return out
			}
			deadline = time.Now() // one last read at the deadline
		}
	}
}

// String names a topic partition in messages.
func (k tp) String() string { return fmt.Sprintf("%s/%d", k.topic, k.part) }

// redirectFetch answers a Fetch on a node without the fetch role: each
// partition names a fetch node as its preferred read replica (KIP-392,
// Fetch v11+), where the client then fetches it, with no records. Older
// versions cannot be redirected: NOT_LEADER_OR_FOLLOWER.
func redirectFetch(c *conn, req *kmsg.FetchRequest, resp *kmsg.FetchResponse, want []tp) *kmsg.FetchResponse {
	bs := c.s.brokerList()
	byTopic := map[string]int{}
	for _, k := range want {
		i, ok := byTopic[k.topic]
		if !ok {
			i = len(resp.Topics)
			byTopic[k.topic] = i
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = k.topic
			resp.Topics = append(resp.Topics, rt)
		}
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition = k.part
		rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = -1, -1, -1
		rp.PreferredReadReplica = -1
		rp.RecordBatches = []byte{}
		t, known := c.s.d.Topics.Topic(k.topic)
		switch r := c.s.readReplicaOf(bs, k.topic, k.part); {
		case !c.allowed(authz.Topic, k.topic, authz.Consume):
			rp.ErrorCode = kerr.TopicAuthorizationFailed.Code
		case !known || k.part < 0 || k.part >= t.Partitions:
			rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
		case r < 0:
			rp.ErrorCode = kerr.LeaderNotAvailable.Code
		case req.Version < 11:
			rp.ErrorCode = kerr.NotLeaderForPartition.Code
		default:
			rp.PreferredReadReplica = r
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
	}
	return resp
}
