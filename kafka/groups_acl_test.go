package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// TestGroupACLs: the group APIs check the principal's ACLs as the
// GroupService does: joining and committing need consume on the group
// (and on its topics), reading offsets describe on it, deleting delete;
// a refusal is GROUP_AUTHORIZATION_FAILED and changes nothing.
func TestGroupACLs(t *testing.T) {
	d, a := tokenDev(t, nil)
	createTopic(t, d, "gt", 2)
	_, tok := grant(t, a, "alice", "topic:gt produce", "topic:gt consume", "group:mine consume")
	mech := plain.Auth{User: "alice", Pass: tok}.AsMechanism()
	produceEventually(t, func() *kgo.Client { return saslClient(t, d, mech) }, "gt", "x")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Not alice's group: the join is refused.
	other := saslClient(t, d, mech, kgo.ConsumerGroup("theirs"), kgo.ConsumeTopics("gt"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fs := other.PollFetches(ctx)
	if err := fs.Err0(); !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("joining a group alice may not consume: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}
	other.Close()

	// Her group: joins, consumes, commits.
	mine := saslClient(t, d, mech, kgo.ConsumerGroup("mine"), kgo.ConsumeTopics("gt"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	for got := 0; got < 1; {
		fs := mine.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume as a member of her group: %v", err)
		}
		got += fs.NumRecords()
	}
	if err := mine.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit in her group: %v", err)
	}
	mine.Close()

	// Consume on a group implies describe (its offsets); delete is not
	// implied, and another group's offsets are refused.
	adm := kadm.NewClient(saslClient(t, d, mech))
	if offs, err := adm.FetchOffsets(ctx, "mine"); err != nil || offs.Error() != nil {
		t.Fatalf("offsets of her group: %v %v", err, offs.Error())
	}
	if _, err := adm.FetchOffsets(ctx, "theirs"); !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("offsets of another group: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}
	del, err := adm.DeleteGroups(ctx, "mine")
	if err == nil {
		err = del.Error()
	}
	if !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("deleting her group without delete on it: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}
	if offs, err := adm.FetchOffsets(ctx, "mine"); err != nil || len(offs) == 0 {
		t.Fatalf("her group's offsets after the refused delete: %v %v", offs, err)
	}
}
