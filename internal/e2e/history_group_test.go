package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata/groups"
	"github.com/varve-io/varve/sdk"
)

// groupHist runs the consumer-group members of TestRandomizedHistory (SDK
// GroupConsumers, each talking to one of the nodes being killed) and
// records what they do: every commit attempt the SDK sends (through a
// recording HTTP client: member, generation, offsets, call and return
// times, accepted / refused with its reason / unknown), every record a
// member processed, and, through an etcd watch of the group's keys, every
// membership change and accepted commit in revision order.
type groupHist struct {
	h          *history
	group      string
	topic      string
	clientBase int // history client ids of members start here
	fail       func(string, ...any)
	apis       []varvev1connect.GroupServiceClient // one per node, recording
	stop       chan struct{}                       // closed: members close and leave
	wg         sync.WaitGroup
	watchStop  context.CancelFunc
	watchDone  chan struct{}

	mu                                       sync.Mutex
	processed                                map[int32]map[int64][]string // partition → offset → values, one per processing
	removedAt                                map[string]int64             // member id → time the watch saw its key deleted
	lastCommit                               map[string]map[int32]int64   // member id → partition → last accepted offset
	lastGen                                  map[string]int64             // member id → generation of its last attempt
	committed                                map[int32]int64              // newest committed offset per partition (watch)
	events                                   []groupEvent
	watchErr                                 error
	nOK, nRefused, nUnknown                  int // commit attempts (requests)
	nProbes, nProbesRefused, nPollErrs, nGen int
	reasons                                  map[string]int
	consumers                                map[int]*sdk.GroupConsumer // by member index, while it runs
	etcd                                     []string
}

// groupEvent is one change of a group key seen by the watch.
type groupEvent struct {
	rev int64
	del bool
	key string
	val []byte
}

func groupPrefixKey(group string) string { return "/varve/groups/" + group + "/" }

// startGroupHist starts the etcd watch and members group members, member i
// talking to nodes[i % len(nodes)].
func startGroupHist(h *history, etcd []string, addrs []string, group, topic string, members, clientBase int, seed uint64, fail func(string, ...any)) (*groupHist, error) {
	g := &groupHist{
		h: h, group: group, topic: topic, clientBase: clientBase, fail: fail,
		stop:       make(chan struct{}),
		watchDone:  make(chan struct{}),
		processed:  map[int32]map[int64][]string{},
		removedAt:  map[string]int64{},
		lastCommit: map[string]map[int32]int64{},
		lastGen:    map[string]int64{},
		committed:  map[int32]int64{},
		reasons:    map[string]int{},
		consumers:  map[int]*sdk.GroupConsumer{},
		etcd:       etcd,
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", etcd, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cur, err := cli.Get(ctx, groupPrefixKey(group), clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("read group %s keys: %w", group, err)
	}
	wctx, wstop := context.WithCancel(context.Background())
	g.watchStop = wstop
	wch := cli.Watch(wctx, groupPrefixKey(group), clientv3.WithPrefix(), clientv3.WithRev(cur.Header.Revision+1))
	go func() {
		defer close(g.watchDone)
		defer cli.Close()
		g.watch(wctx, wch)
	}()
	inner := sdk.NewHTTPClient()
	for _, a := range addrs {
		g.apis = append(g.apis, varvev1connect.NewGroupServiceClient(&commitRecorder{inner: inner, g: g, client: clientBase + members}, a))
	}
	for i := range members {
		c := sdk.New(addrs[i%len(addrs)], sdk.WithHTTPClient(&commitRecorder{inner: inner, g: g, client: clientBase + i}))
		g.wg.Go(func() {
			defer c.Close()
			g.member(c, i, rand.New(rand.NewPCG(seed, uint64(5000+i))))
		})
	}
	return g, nil
}

func (g *groupHist) watch(ctx context.Context, wch clientv3.WatchChan) {
	membersPrefix := groupPrefixKey(g.group) + "members/"
	offsetsPrefix := groupPrefixKey(g.group) + "offsets/" + g.topic + "/"
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if ctx.Err() == nil {
				g.mu.Lock()
				g.watchErr = err
				g.mu.Unlock()
			}
			return
		}
		at := g.h.now()
		var probes []string
		g.mu.Lock()
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			del := ev.Type == clientv3.EventTypeDelete
			g.events = append(g.events, groupEvent{rev: ev.Kv.ModRevision, del: del, key: key, val: slices.Clone(ev.Kv.Value)})
			switch {
			case del && strings.HasPrefix(key, membersPrefix):
				id := key[len(membersPrefix):]
				g.removedAt[id] = at
				probes = append(probes, id)
			case !del && strings.HasPrefix(key, offsetsPrefix):
				var p int32
				var o groups.CommittedOffset
				if _, err := fmt.Sscan(key[len(offsetsPrefix):], &p); err == nil && json.Unmarshal(ev.Kv.Value, &o) == nil {
					g.committed[p] = o.Offset
				}
			}
		}
		g.mu.Unlock()
		for _, id := range probes {
			go g.zombieProbe(id)
		}
	}
	if ctx.Err() == nil {
		g.mu.Lock()
		g.watchErr = fmt.Errorf("watch of group %s ended", g.group)
		g.mu.Unlock()
	}
}

// zombieProbe commits again, as member id after its key was deleted, the
// offsets it last committed: the cluster must refuse (UNKNOWN_MEMBER).
func (g *groupHist) zombieProbe(id string) {
	g.mu.Lock()
	req := &varvev1.CommitOffsetsRequest{Group: g.group, MemberId: id, Generation: g.lastGen[id]}
	for p, o := range g.lastCommit[id] {
		req.Offsets = append(req.Offsets, &varvev1.OffsetCommit{Topic: g.topic, Partition: p, Offset: o})
	}
	api := g.apis[int(g.nProbes)%len(g.apis)] // alternate nodes, deterministically
	g.mu.Unlock()
	if len(req.Offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := api.CommitOffsets(ctx, connect.NewRequest(req))
	g.mu.Lock()
	g.nProbes++
	if err != nil && connect.CodeOf(err) == connect.CodeFailedPrecondition {
		g.nProbesRefused++
	}
	g.mu.Unlock()
}

// member runs one GroupConsumer until stop: poll, process (record), commit
// (the records or the positions, at random), commit in OnRevoked.
func (g *groupHist) member(c *sdk.Client, i int, rng *rand.Rand) {
	gc := c.NewGroupConsumer(g.group, sdk.GroupOptions{
		Topics:             []string{g.topic},
		AutoCommitInterval: -1,
		SessionTimeout:     time.Second,
		ClientID:           fmt.Sprintf("hist-member-%d", i),
		MaxWait:            100 * time.Millisecond,
		MaxBytes:           4 << 10,
		OnAssigned: func(context.Context, *sdk.GroupConsumer, []sdk.TopicPartition) {
			g.mu.Lock()
			g.nGen++
			g.mu.Unlock()
		},
		OnRevoked: func(ctx context.Context, gc *sdk.GroupConsumer, _ []sdk.TopicPartition) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_ = gc.Commit(cctx) // recorded; refused when the member is gone
		},
	})
	g.mu.Lock()
	g.consumers[i] = gc
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.consumers, i)
		g.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-g.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var failingSince time.Time
	// uncommitted: the last commit failed. A partition the member keeps
	// over a rebalance keeps its position, so with no record left to read
	// nothing else would commit it: commit the positions again, as an
	// application that commits by hand must (Kafka's manual commits too).
	uncommitted := false
	for ctx.Err() == nil {
		recs, err := gc.Poll(ctx)
		g.mu.Lock()
		for _, r := range recs {
			if r.Topic != g.topic {
				g.mu.Unlock()
				g.fail("group member %d: polled a record of topic %q", i, r.Topic)
				return
			}
			m := g.processed[r.Partition]
			if m == nil {
				m = map[int64][]string{}
				g.processed[r.Partition] = m
			}
			m[r.Offset] = append(m[r.Offset], string(r.Value))
		}
		if err != nil && ctx.Err() == nil {
			g.nPollErrs++
		}
		g.mu.Unlock()
		// Poll errors (a fetch that failed through a dying node) are
		// retried by polling again; a member stuck failing is a failure.
		switch {
		case err == nil:
			failingSince = time.Time{}
		case failingSince.IsZero():
			failingSince = time.Now()
		case time.Since(failingSince) > 20*time.Second && ctx.Err() == nil:
			g.fail("group member %d: every poll failed for 20s: %v", i, err)
			return
		}
		if len(recs) == 0 && !uncommitted {
			continue
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		var cerr error
		if len(recs) > 0 && rng.IntN(2) == 0 {
			cerr = gc.CommitRecords(cctx, recs...)
		} else {
			cerr = gc.Commit(cctx)
		}
		ccancel()
		uncommitted = cerr != nil
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	_ = gc.Close(cctx) // commits in OnRevoked, leaves
}

// settled reports whether the group committed every partition's end.
func (g *groupHist) settled(ends []int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, e := range ends {
		if g.committed[int32(p)] < e {
			return false
		}
	}
	return true
}

// describe says where the group stands, for a failure: every member key
// in etcd with its lease's time to live, the generation, each running
// member's own view, and the partitions not committed to their end.
func (g *groupHist) describe(ends []int64) string {
	var b strings.Builder
	cli, err := clientv3.New(clientv3.Config{Endpoints: g.etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Sprintf("connect to etcd: %v", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, groupPrefixKey(g.group)+"members/", clientv3.WithPrefix())
	if err != nil {
		return fmt.Sprintf("read members: %v", err)
	}
	for _, kv := range resp.Kvs {
		ttl := "?"
		if lr, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
			ttl = fmt.Sprintf("%ds of %ds", lr.TTL, lr.GrantedTTL)
		}
		fmt.Fprintf(&b, "member key %s (rev %d, lease %x, %s left): %s\n", kv.Key, kv.ModRevision, kv.Lease, ttl, kv.Value)
	}
	if meta, err := cli.Get(ctx, groupPrefixKey(g.group)+"meta"); err == nil && len(meta.Kvs) > 0 {
		fmt.Fprintf(&b, "meta (rev %d): %s\n", meta.Kvs[0].ModRevision, meta.Kvs[0].Value)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, gc := range g.consumers {
		id, gen := gc.Generation()
		fmt.Fprintf(&b, "client %d: member %s generation %d assigned %v\n", i, id, gen, gc.Assignment())
	}
	for p, e := range ends {
		if c := g.committed[int32(p)]; c < e {
			fmt.Fprintf(&b, "partition %d committed %d of %d\n", p, c, e)
		}
	}
	return b.String()
}

// close stops the members (they commit and leave) and the watch.
func (g *groupHist) close() {
	close(g.stop)
	g.wg.Wait()
	g.watchStop()
	<-g.watchDone
}

// commitRecorder is the members' HTTP client: it records each
// CommitOffsets request as opGroupCommit operations, one per partition.
type commitRecorder struct {
	inner  connect.HTTPClient
	g      *groupHist
	client int
}

func (r *commitRecorder) Do(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/CommitOffsets") {
		return r.inner.Do(req)
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	var msg varvev1.CommitOffsetsRequest
	if enc := req.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		r.g.fail("commit recorder: request compressed with %s", enc)
	} else if err := proto.Unmarshal(body, &msg); err != nil {
		r.g.fail("commit recorder: decode CommitOffsetsRequest (%s): %v", req.Header.Get("Content-Type"), err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	call := r.g.h.now()
	res, err := r.inner.Do(req)
	ret := r.g.h.now()
	ok, reason := false, "unknown"
	if err == nil {
		if res.StatusCode == http.StatusOK {
			ok, reason = true, ""
		} else {
			b, rerr := io.ReadAll(res.Body)
			res.Body.Close()
			res.Body = io.NopCloser(bytes.NewReader(b))
			if rerr == nil {
				reason = connectErrorReason(b)
			}
		}
	}
	r.g.mu.Lock()
	switch {
	case ok:
		r.g.nOK++
	case reason == "unknown" || reason == "unavailable" || reason == "deadline_exceeded":
		r.g.nUnknown++
	default:
		r.g.nRefused++
	}
	r.g.reasons[reason]++
	r.g.lastGen[msg.GetMemberId()] = msg.GetGeneration()
	if ok {
		lc := r.g.lastCommit[msg.GetMemberId()]
		if lc == nil {
			lc = map[int32]int64{}
			r.g.lastCommit[msg.GetMemberId()] = lc
		}
		for _, o := range msg.GetOffsets() {
			lc[o.GetPartition()] = o.GetOffset()
		}
	}
	r.g.mu.Unlock()
	for _, o := range msg.GetOffsets() {
		r.g.h.add(histOp{kind: opGroupCommit, client: r.client, partition: o.GetPartition(), call: call, ret: ret,
			ok: ok, offset: o.GetOffset(), group: msg.GetGroup(), member: msg.GetMemberId(), generation: msg.GetGeneration(), reason: reason})
	}
	return res, err
}

// connectErrorReason returns the ErrorInfo reason of a Connect error body,
// else its code.
func connectErrorReason(body []byte) string {
	var e struct {
		Code    string `json:"code"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "unknown"
	}
	for _, d := range e.Details {
		if d.Type != "google.rpc.ErrorInfo" {
			continue
		}
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		var ei errdetails.ErrorInfo
		if err == nil && proto.Unmarshal(b, &ei) == nil && ei.GetReason() != "" {
			return ei.GetReason()
		}
	}
	if e.Code == "" {
		return "unknown"
	}
	return e.Code
}

// groupReport is what check found.
type groupReport struct {
	bad                                 []string
	processed, duplicates, offsetWrites int
	generations, membersJoined, removed int
}

// check replays the group's etcd history and compares the members' work
// with the final log:
//
//   - every accepted commit (an offsets/ write) was made by a member whose
//     key existed at that revision (no zombie), in the group's current
//     generation, on a partition assigned to it or revoked from it in that
//     generation, and never moved the partition's offset back;
//   - no commit the members saw accepted was sent after the watch had seen
//     the member's key deleted;
//   - every record of the log was processed by some member at least once,
//     and every processed record is the log's record at its offset.
func (g *groupHist) check(ops []histOp, log [][]logRecord) groupReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	var rep groupReport
	badf := func(format string, args ...any) { rep.bad = append(rep.bad, fmt.Sprintf(format, args...)) }
	if g.watchErr != nil {
		badf("watch of the group's keys: %v", g.watchErr)
	}
	prefix := groupPrefixKey(g.group)
	live := map[string]bool{}
	var meta groups.Meta
	offsets := map[string]int64{}
	for _, ev := range g.events {
		rest := strings.TrimPrefix(ev.key, prefix)
		switch {
		case rest == "meta":
			if ev.del {
				badf("rev %d: group meta deleted", ev.rev)
				continue
			}
			var m groups.Meta
			if err := json.Unmarshal(ev.val, &m); err != nil {
				badf("rev %d: decode meta: %v", ev.rev, err)
				continue
			}
			if m.Generation <= meta.Generation {
				badf("rev %d: generation %d after %d", ev.rev, m.Generation, meta.Generation)
			}
			meta = m
			rep.generations++
		case strings.HasPrefix(rest, "members/"):
			id := strings.TrimPrefix(rest, "members/")
			if ev.del {
				delete(live, id)
				rep.removed++
			} else if !live[id] {
				live[id] = true
				rep.membersJoined++
			}
		case strings.HasPrefix(rest, "offsets/"+g.topic+"/"):
			if ev.del {
				badf("rev %d: committed offset %s deleted", ev.rev, rest)
				continue
			}
			var o groups.CommittedOffset
			if err := json.Unmarshal(ev.val, &o); err != nil {
				badf("rev %d: decode %s: %v", ev.rev, rest, err)
				continue
			}
			var p int32
			fmt.Sscan(strings.TrimPrefix(rest, "offsets/"+g.topic+"/"), &p)
			rep.offsetWrites++
			if !live[o.Member] {
				badf("rev %d: zombie commit: member %s (removed) committed %d on partition %d", ev.rev, o.Member, o.Offset, p)
			}
			if o.Generation != meta.Generation {
				badf("rev %d: member %s committed %d on partition %d in generation %d, the group is in %d", ev.rev, o.Member, o.Offset, p, o.Generation, meta.Generation)
			}
			if !slices.Contains(meta.Assignment[o.Member][g.topic], p) && !slices.Contains(meta.Revoked[o.Member][g.topic], p) {
				badf("rev %d: member %s committed partition %d, neither assigned to it nor revoked from it in generation %d", ev.rev, o.Member, p, meta.Generation)
			}
			if prev, ok := offsets[rest]; ok && o.Offset < prev {
				badf("rev %d: partition %d committed offset went back from %d to %d (member %s)", ev.rev, p, prev, o.Offset, o.Member)
			}
			offsets[rest] = o.Offset
		}
	}
	for _, op := range ops {
		if op.kind != opGroupCommit || !op.ok {
			continue
		}
		if at, gone := g.removedAt[op.member]; gone && at < op.call {
			badf("zombie commit accepted: member %s (key deleted by %v) committed %d on partition %d at %v..%v",
				op.member, time.Duration(at), op.offset, op.partition, time.Duration(op.call), time.Duration(op.ret))
		}
	}
	for p, recs := range log {
		seen := g.processed[int32(p)]
		for _, r := range recs {
			vs := seen[r.offset]
			if len(vs) == 0 {
				badf("record %s at %d/%d was never processed by the group", r.value, p, r.offset)
				continue
			}
			rep.processed++
			rep.duplicates += len(vs) - 1
		}
		for off, vs := range seen {
			for _, v := range vs {
				if off >= int64(len(recs)) || recs[off].value != v {
					badf("the group processed %s at %d/%d, which the log does not hold there", v, p, off)
				}
			}
		}
	}
	if len(rep.bad) > 20 {
		rep.bad = append(rep.bad[:20], fmt.Sprintf("... and %d more", len(rep.bad)-20))
	}
	return rep
}

// summary is the group part of the history log line.
func (g *groupHist) summary(rep groupReport) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	reasons := make([]string, 0, len(g.reasons))
	for r, n := range g.reasons {
		if r != "" {
			reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
		}
	}
	slices.Sort(reasons)
	return fmt.Sprintf("group commits=%d (ok=%d refused=%d unknown=%d; %s) offset-writes=%d generations=%d members joined=%d removed=%d zombie-probes=%d (refused %d) processed=%d duplicates=%d poll-errors=%d",
		g.nOK+g.nRefused+g.nUnknown, g.nOK, g.nRefused, g.nUnknown, strings.Join(reasons, " "),
		rep.offsetWrites, rep.generations, rep.membersJoined, rep.removed, g.nProbes, g.nProbesRefused,
		rep.processed, rep.duplicates, g.nPollErrs)
}
