package seqlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/varve-io/varve/metadata/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Term is one won election: this node is the sequencer until Done is
// closed. Its number is the election key's create revision, which only
// grows; every write of the term is fenced by a compare on that key.
type Term struct {
	log      *Log
	session  *concurrency.Session
	election *concurrency.Election
	key      string
	rev      int64
}

// Campaign blocks until this node leads the sequencer election or ctx
// ends. id (the node's internal API address, say) is what Leader returns
// to ingest nodes. The term lasts while the session's lease of ttl is
// kept alive: a dead leader's term ends within ttl, or at once when the
// same candidate (same id) campaigns again (reclaim).
func (l *Log) Campaign(ctx context.Context, id string, ttl time.Duration) (*Term, error) {
	s, err := concurrency.NewSession(l.cli, concurrency.WithTTL(max(int(ttl/time.Second), 1)))
	if err != nil {
		return nil, fmt.Errorf("sequencer campaign: start session: %w", err)
	}
	l.reclaim(ctx, id, s.Lease())
	e := concurrency.NewElection(s, keys.ElectionPrefix(ElectionName))
	if err := e.Campaign(ctx, id); err != nil {
		s.Close()
		return nil, fmt.Errorf("sequencer campaign as %s: %w", id, err)
	}
	return &Term{log: l, session: s, election: e, key: e.Key(), rev: e.Rev()}, nil
}

// Number is the term's number (its election key's create revision).
func (t *Term) Number() int64 { return t.rev }

// Done is closed when the term's lease is lost.
func (t *Term) Done() <-chan struct{} { return t.session.Done() }

// Resign ends the term: its key is deleted, so its later writes fail and
// another candidate takes over at once.
func (t *Term) Resign(ctx context.Context) error {
	rerr := t.election.Resign(ctx)
	cerr := t.session.Close()
	return errors.Join(rerr, cerr)
}

// Leader returns the id the current sequencer campaigned with, or
// ErrNoLeader.
func (l *Log) Leader(ctx context.Context) (string, error) {
	resp, err := l.cli.Get(ctx, keys.ElectionPrefix(ElectionName)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("read sequencer leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNoLeader
	}
	return string(resp.Kvs[0].Value), nil
}
