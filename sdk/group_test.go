package sdk_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// seen records which offsets of which partitions were processed.
type seen struct {
	mu  sync.Mutex
	got map[sdk.TopicPartition]map[int64]int
}

func (s *seen) add(recs []sdk.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[sdk.TopicPartition]map[int64]int{}
	}
	for _, r := range recs {
		tp := sdk.TopicPartition{Topic: r.Topic, Partition: r.Partition}
		if s.got[tp] == nil {
			s.got[tp] = map[int64]int{}
		}
		s.got[tp][r.Offset]++
	}
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.got {
		n += len(m)
	}
	return n
}

func produceN(t *testing.T, c *sdk.Client, topic string, partitions int32, n int) {
	t.Helper()
	var recs []sdk.Record
	for i := range n {
		recs = append(recs, sdk.Record{Partition: int32(i) % partitions, ExplicitPartition: true, Value: []byte(strconv.Itoa(i))})
	}
	if _, err := c.Produce(testCtx(t), topic, recs); err != nil {
		t.Fatal(err)
	}
}

// runMember polls gc until ctx ends, recording what it processed.
func runMember(ctx context.Context, gc *sdk.GroupConsumer, s *seen, errs chan<- error) {
	for ctx.Err() == nil {
		recs, err := gc.Poll(ctx)
		s.add(recs)
		if err != nil && ctx.Err() == nil {
			errs <- err
			return
		}
	}
}

// TestGroupConsumer: two members share a topic, the second joining late;
// every record is processed, assignment callbacks run, commits survive the
// members, and the group can then be reset and deleted.
func TestGroupConsumer(t *testing.T) {
	c := newClient(t)
	topic, group := uniq("grp"), uniq("group")
	createTopic(t, c, topic, 4)
	produceN(t, c, topic, 4, 200)

	var mu sync.Mutex
	events := map[string][]string{}
	opts := func(name string) sdk.GroupOptions {
		return sdk.GroupOptions{
			Topics: []string{topic}, AutoCommitInterval: 50 * time.Millisecond, ClientID: name, MaxWait: 100 * time.Millisecond,
			OnAssigned: func(_ context.Context, _ *sdk.GroupConsumer, tps []sdk.TopicPartition) {
				mu.Lock()
				events[name] = append(events[name], fmt.Sprint("+", len(tps)))
				mu.Unlock()
			},
			OnRevoked: func(_ context.Context, _ *sdk.GroupConsumer, tps []sdk.TopicPartition) {
				mu.Lock()
				events[name] = append(events[name], fmt.Sprint("-", len(tps)))
				mu.Unlock()
			},
		}
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var s seen
	errs := make(chan error, 2)
	a := c.NewGroupConsumer(group, opts("a"))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); runMember(ctx, a, &s, errs) }()
	if !testenv.Eventually(30*time.Second, func() bool { return s.count() > 0 }) {
		t.Fatal("first member read nothing")
	}
	b := c.NewGroupConsumer(group, opts("b"))
	wg.Add(1)
	go func() { defer wg.Done(); runMember(ctx, b, &s, errs) }()
	produceN(t, c, topic, 4, 200)
	// Both have applied the generation with two members: a member may
	// adopt a newer generation for its commits before its next Poll
	// applies the assignment, so equal generations alone do not say a has
	// revoked its two partitions yet.
	applied := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events["a"]) >= 2 && len(events["b"]) >= 1
	}
	if !testenv.EventuallyEvery(30*time.Second, 10*time.Millisecond, func() bool {
		_, ga := a.Generation()
		_, gb := b.Generation()
		return s.count() == 400 && ga == gb && ga > 0 && applied()
	}) {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("processed %d of 400 records; callbacks %v", s.count(), events)
	}
	// Both are members of one generation, with two partitions each.
	d, err := admin.NewFromClient(c).DescribeGroup(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Members) != 2 {
		t.Fatalf("describe: %v", d)
	}
	for _, m := range d.Members {
		if n := len(m.Assignment); n != 2 {
			t.Fatalf("member %s has %d partitions", m.MemberID, n)
		}
	}
	cancel()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	cctx := testCtx(t)
	if err := a.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(cctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(events["a"]) < 2 || events["a"][0] != "+4" || events["a"][1] != "-2" || events["b"][0] != "+2" {
		t.Errorf("callbacks: %v", events)
	}
	mu.Unlock()
	// Everything is committed: the group has no lag.
	d, err = admin.NewFromClient(c).DescribeGroup(cctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if d.Summary.State != "empty" {
		t.Fatalf("after close: %v", d.Summary)
	}
	for _, p := range d.Partitions {
		if p.CommittedOffset != 100 || p.Lag != 0 {
			t.Fatalf("partition %d: %v", p.Partition, p)
		}
	}

	// A new member resumes from the commits: nothing to read.
	again := c.NewGroupConsumer(group, sdk.GroupOptions{Topics: []string{topic}, MaxWait: 50 * time.Millisecond})
	recs, err := again.Poll(cctx)
	if err != nil || len(recs) != 0 {
		t.Fatalf("resumed member read %d records: %v", len(recs), err)
	}
	if _, err := admin.NewFromClient(c).ResetGroupOffsets(cctx, group, topic, admin.ResetToEarliest()); sdk.GroupReason(err) != "GROUP_ACTIVE" {
		t.Fatalf("reset of an active group: %v", err)
	}
	if err := again.Close(cctx); err != nil {
		t.Fatal(err)
	}
	offs, err := admin.NewFromClient(c).ResetGroupOffsets(cctx, group, topic, admin.ResetToOffset(90), 1)
	if err != nil || len(offs) != 1 || offs[0].Offset != 90 || offs[0].Partition != 1 {
		t.Fatalf("reset: %v %v", offs, err)
	}
	replay := c.NewGroupConsumer(group, sdk.GroupOptions{Topics: []string{topic}, MaxWait: 50 * time.Millisecond, AutoCommitInterval: -1})
	var got []sdk.Record
	for len(got) < 10 {
		recs, err := replay.Poll(cctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	if got[0].Partition != 1 || got[0].Offset != 90 || len(got) != 10 {
		t.Fatalf("after reset read %d records from %d/%d", len(got), got[0].Partition, got[0].Offset)
	}
	if err := replay.CommitRecords(cctx, got...); err != nil {
		t.Fatal(err)
	}
	if err := replay.Close(cctx); err != nil {
		t.Fatal(err)
	}
	committed, err := admin.NewFromClient(c).CommittedOffsets(cctx, group)
	if err != nil || committed[sdk.TopicPartition{Topic: topic, Partition: 1}] != 100 {
		t.Fatalf("committed: %v %v", committed, err)
	}
	if err := admin.NewFromClient(c).DeleteGroup(cctx, group); err != nil {
		t.Fatal(err)
	}
	wantCode(t, admin.NewFromClient(c).DeleteGroup(cctx, group), connect.CodeNotFound)
}

func TestGroupConsumerBadInput(t *testing.T) {
	c := newClient(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		opts sdk.GroupOptions
		code connect.Code
	}{
		{"no topics", sdk.GroupOptions{}, connect.CodeInvalidArgument},
		{"unknown topic", sdk.GroupOptions{Topics: []string{uniq("missing")}}, connect.CodeNotFound},
		{"bad strategy", sdk.GroupOptions{Topics: []string{"x"}, Strategy: "roundrobin"}, connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gc := c.NewGroupConsumer(uniq("bad"), tc.opts)
			defer gc.Close(ctx)
			_, err := gc.Poll(ctx)
			wantCode(t, err, tc.code)
		})
	}
}

func TestDeadLetter(t *testing.T) {
	c := newClient(t)
	ctx := testCtx(t)
	in, dlq := uniq("in"), uniq("dlq")
	createTopic(t, c, in, 1)
	createTopic(t, c, dlq, 1)
	if _, err := c.Produce(ctx, in, []sdk.Record{
		{Value: []byte("ok")}, {Key: []byte("k"), Value: []byte("bad"), Headers: []sdk.Header{{Key: "h", Value: []byte("v")}}}, {Value: []byte("ok")},
	}); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	handle := c.DeadLetter(sdk.DeadLetterOptions{Topic: dlq, MaxAttempts: 3, Backoff: time.Millisecond}, func(_ context.Context, r sdk.Record) error {
		if string(r.Value) == "bad" {
			attempts++
			return errors.New("cannot parse")
		}
		return nil
	})
	for _, r := range readAll(t, c, in, 0) {
		if err := handle(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if attempts != 3 {
		t.Fatalf("%d attempts, want 3", attempts)
	}
	dead := readAll(t, c, dlq, 0)
	if len(dead) != 1 || string(dead[0].Value) != "bad" || string(dead[0].Key) != "k" {
		t.Fatalf("dead letters: %v", dead)
	}
	h := map[string]string{}
	for _, x := range dead[0].Headers {
		h[x.Key] = string(x.Value)
	}
	want := map[string]string{"h": "v", sdk.HeaderDLQReason: "cannot parse", sdk.HeaderDLQTopic: in,
		sdk.HeaderDLQPartition: "0", sdk.HeaderDLQOffset: "1", sdk.HeaderDLQAttempts: "3"}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q (all: %v)", k, h[k], v, h)
		}
	}
	// A DLQ that cannot take the record: the error says so and the
	// consumer must not commit past it.
	bad := c.DeadLetter(sdk.DeadLetterOptions{Topic: uniq("nodlq"), MaxAttempts: 1}, func(context.Context, sdk.Record) error { return errors.New("no") })
	wantCode(t, bad(ctx, dead[0]), connect.CodeNotFound)
}

// pollGroupUntil polls gc until s holds want records, failing the test on a
// poll error or after 30 s.
func pollGroupUntil(t *testing.T, ctx context.Context, gc *sdk.GroupConsumer, s *seen, want int) {
	t.Helper()
	if !testenv.EventuallyEvery(30*time.Second, time.Millisecond, func() bool {
		recs, err := gc.Poll(ctx)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		s.add(recs)
		return s.count() == want
	}) {
		t.Fatalf("processed %d of %d records", s.count(), want)
	}
}

// cutStreams is an HTTP client whose JoinGroup response bodies can be cut
// mid-stream, as when the node holding the stream is killed: the body read
// fails with a connection error (connect reports the stream as Internal
// "protocol error: incomplete envelope", not Unavailable), while the
// server side of the stream stays open, as a dead node's would: nobody
// ends the member's session for it.
type cutStreams struct {
	next   connect.HTTPClient
	mu     sync.Mutex
	bodies []*cutBody
	held   []io.Closer // server sides of cut streams, closed at cleanup
	// cutFirst is how many of the next streams are cut right after their
	// first message; msgs counts the messages the client has read.
	cutFirst int
	msgs     atomic.Int64
}

type cutBody struct {
	inner io.ReadCloser
	pr    *io.PipeReader
	pw    *io.PipeWriter
}

func (b *cutBody) Read(p []byte) (int, error) { return b.pr.Read(p) }
func (b *cutBody) Close() error               { b.pr.Close(); return nil }

func (c *cutStreams) Do(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/JoinGroup") {
		return c.next.Do(req)
	}
	// Cancelling the stream must not reach the server either: a dead
	// node's streams end with nobody there to notice.
	res, err := c.next.Do(req.WithContext(context.WithoutCancel(req.Context())))
	if err != nil {
		return res, err
	}
	pr, pw := io.Pipe()
	b := &cutBody{inner: res.Body, pr: pr, pw: pw}
	c.mu.Lock()
	max := -1
	if c.cutFirst > 0 {
		c.cutFirst--
		max = 1
		c.held = append(c.held, b.inner)
	} else {
		c.bodies = append(c.bodies, b)
	}
	c.mu.Unlock()
	go func() {
		// Message by message (a Connect envelope: flags, 4-byte length,
		// body); the pipe's writes return once the client has read them.
		var hdr [5]byte
		for n := 0; n != max; n++ {
			if _, err := io.ReadFull(b.inner, hdr[:]); err != nil {
				pw.CloseWithError(err)
				return
			}
			msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
			if _, err := io.ReadFull(b.inner, msg); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(append(hdr[:], msg...)); err != nil {
				return
			}
			c.msgs.Add(1)
		}
		pw.CloseWithError(errors.New("read tcp: connection reset by peer (injected after the first message)"))
	}()
	res.Body = b
	return res, nil
}

// cut breaks every JoinGroup stream open now, on the client side only.
func (c *cutStreams) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bodies {
		b.pw.CloseWithError(errors.New("read tcp: connection reset by peer (injected)"))
		c.held = append(c.held, b.inner)
	}
	c.bodies = nil
}

func (c *cutStreams) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.held {
		b.Close()
	}
	for _, b := range c.bodies {
		b.inner.Close()
	}
}

// TestGroupConsumerSurvivesBrokenStream: when the member's JoinGroup stream
// breaks (its node died), the consumer joins again as a new member and
// goes on reading from the committed offsets; Poll never fails for good.
func TestGroupConsumerSurvivesBrokenStream(t *testing.T) {
	cs := &cutStreams{next: sdk.NewHTTPClient()}
	t.Cleanup(cs.close)
	c := newClient(t, sdk.WithHTTPClient(cs))
	topic, group := uniq("cut"), uniq("group")
	createTopic(t, c, topic, 2)
	produceN(t, c, topic, 2, 50)
	var reported atomic.Int64
	gc := c.NewGroupConsumer(group, sdk.GroupOptions{
		Topics: []string{topic}, AutoCommitInterval: 20 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		SessionTimeout: 60 * time.Second, // the stale ids must be left, not expire
		OnError:        func(error) { reported.Add(1) },
	})
	ctx := testCtx(t)
	defer gc.Close(ctx)
	var s seen
	poll := func(want int) { t.Helper(); pollGroupUntil(t, ctx, gc, &s, want) }
	poll(50)
	first, gen := gc.Generation()
	for range 3 {
		cs.cut()
		produceN(t, c, topic, 2, 25)
		poll(s.count() + 25)
	}
	if !testenv.EventuallyEvery(30*time.Second, time.Millisecond, func() bool {
		if _, err := gc.Poll(ctx); err != nil {
			t.Fatalf("poll: %v", err)
		}
		m, g := gc.Generation()
		return m != "" && m != first && g > gen
	}) {
		t.Fatalf("still member %s in generation %d after the streams broke", first, gen)
	}
	if reported.Load() == 0 {
		t.Fatal("the broken sessions were not reported to OnError")
	}
	// The stale member ids left the group: it has one member, the current.
	var d admin.GroupDescription
	if !testenv.EventuallyEvery(10*time.Second, 5*time.Millisecond, func() bool {
		var err error
		if d, err = admin.NewFromClient(c).DescribeGroup(ctx, group); err != nil {
			t.Fatal(err)
		}
		m, _ := gc.Generation()
		return len(d.Members) == 1 && d.Members[0].MemberID == m
	}) {
		t.Fatalf("stale members still in the group (session timeout 60 s): %v", d.Members)
	}
}

// TestGroupConsumerLeavesUnusedMemberIDs: a session can break before Poll
// took its first generation (the member id was never used), or the next
// session's first generation can arrive before Poll noticed the break.
// Either way every member id but the current one leaves the group at once
// (the session timeout is a minute), and the current one stays.
func TestGroupConsumerLeavesUnusedMemberIDs(t *testing.T) {
	cs := &cutStreams{next: sdk.NewHTTPClient(), cutFirst: 3}
	t.Cleanup(cs.close)
	c := newClient(t, sdk.WithHTTPClient(cs))
	topic, group := uniq("unused"), uniq("group")
	createTopic(t, c, topic, 2)
	produceN(t, c, topic, 2, 20)
	gc := c.NewGroupConsumer(group, sdk.GroupOptions{
		Topics: []string{topic}, AutoCommitInterval: 20 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		SessionTimeout: 60 * time.Second, OnError: func(error) {},
	})
	ctx := testCtx(t)
	defer gc.Close(ctx)
	alone := func(step string) string {
		t.Helper()
		var d admin.GroupDescription
		var m string
		if !testenv.EventuallyEvery(10*time.Second, 5*time.Millisecond, func() bool {
			var err error
			if d, err = admin.NewFromClient(c).DescribeGroup(ctx, group); err != nil {
				t.Fatal(err)
			}
			m, _ = gc.Generation()
			return m != "" && len(d.Members) == 1 && d.Members[0].MemberID == m
		}) {
			t.Fatalf("%s: members %v, the consumer is %q (session timeout 60 s)", step, d.Members, m)
		}
		return m
	}
	// Start the session without applying anything: the first three
	// streams each bring one generation and break before Poll runs.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := gc.Poll(cancelled); err == nil {
		t.Fatal("poll with a cancelled context did not fail")
	}
	if !testenv.EventuallyEvery(30*time.Second, time.Millisecond, func() bool { return cs.msgs.Load() >= 4 }) {
		t.Fatalf("%d generations read, want 4 (3 cut streams and the live one)", cs.msgs.Load())
	}
	var s seen
	poll := func(want int) { t.Helper(); pollGroupUntil(t, ctx, gc, &s, want) }
	poll(20)
	first := alone("after 3 streams cut before their first generation was taken")
	// Now the live stream breaks and the next one's first generation
	// arrives before Poll sees either.
	seen := cs.msgs.Load()
	cs.cut()
	if !testenv.EventuallyEvery(30*time.Second, time.Millisecond, func() bool { return cs.msgs.Load() > seen }) {
		t.Fatal("no generation on a new stream after the cut")
	}
	time.Sleep(50 * time.Millisecond) // the client takes the message it read
	if _, err := gc.Poll(ctx); err != nil {
		t.Fatalf("poll: %v", err)
	}
	if m, gen := gc.Generation(); m == "" || m == first {
		t.Fatalf("after the new session's generation: member %q generation %d, want a new member (the old one was %s)", m, gen, first)
	}
	second := alone("after a break and a new generation before the next poll")
	// The new member stays: it was not taken for the stale one.
	time.Sleep(300 * time.Millisecond)
	for range 5 {
		if _, err := gc.Poll(ctx); err != nil {
			t.Fatalf("poll: %v", err)
		}
	}
	if m := alone("later"); m != second {
		t.Fatalf("the member changed from %s to %s without a break", second, m)
	}
	produceN(t, c, topic, 2, 10)
	poll(30)
}
