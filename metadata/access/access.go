package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/conn"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// Errors callers branch on.
var (
	ErrKeyNotFound = errors.New("api key not found")
	ErrACLNotFound = errors.New("acl not found")
)

// Key is a stored API key.
type Key struct {
	ID        string `json:"id"`
	Principal string `json:"principal"`
	Salt      string `json:"salt"`
	Hash      string `json:"hash"`
	CreatedMs int64  `json:"created_ms"`
	// SCRAM holds the key's SCRAM verifiers by mechanism (SCRAM-SHA-256,
	// SCRAM-SHA-512), for SASL/SCRAM on the Kafka listener; nil for keys
	// made before Varve stored them (those authenticate with PLAIN only).
	SCRAM map[string]SCRAM `json:"scram,omitempty"`
}

// SCRAM is what a server keeps to verify a SCRAM client and prove itself
// to it (RFC 5802): never the password, from which the keys derive as
// SaltedPassword = PBKDF2(password, Salt, Iterations), StoredKey =
// H(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword,
// "Server Key").
type SCRAM struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

// Snapshot is the access state at one etcd revision.
type Snapshot struct {
	Keys     map[string]Key
	ACLs     []authz.ACL
	Revision int64
}

// Store reads and changes the API keys and ACLs of a metadata client's etcd.
type Store struct {
	cli *clientv3.Client
	log *slog.Logger
}

// New returns the access store in meta's etcd; meta outlives it.
func New(meta *metadata.Client) *Store {
	cn := conn.Of(meta)
	return &Store{cli: cn.KV, log: cn.Log}
}

// CreateKey stores a new key for principal from k (authz.NewKey).
func (s *Store) CreateKey(ctx context.Context, principal string, k authz.Key) (Key, error) {
	return s.CreateKeySCRAM(ctx, principal, k, nil)
}

// CreateKeySCRAM stores a new key for principal from k with its SCRAM
// verifiers by mechanism (nil: none).
func (s *Store) CreateKeySCRAM(ctx context.Context, principal string, k authz.Key, scram map[string]SCRAM) (Key, error) {
	if principal == "" {
		return Key{}, errors.New("api key: principal is empty")
	}
	stored := Key{ID: k.ID, Principal: principal, Salt: k.Salt, Hash: k.Hash, CreatedMs: time.Now().UnixMilli(), SCRAM: scram}
	b, _ := json.Marshal(stored)
	key := keys.APIKey(k.ID)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return Key{}, fmt.Errorf("create api key for %s: %w", principal, err)
	}
	if !resp.Succeeded {
		return Key{}, fmt.Errorf("create api key %s: id already used", k.ID)
	}
	return stored, nil
}

// ListKeys returns every key, sorted by principal then id.
func (s *Store) ListKeys(ctx context.Context) ([]Key, error) {
	snap, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(snap.Keys))
	for _, k := range snap.Keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Key) int {
		if c := strings.Compare(a.Principal, b.Principal); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// RevokeKey deletes key id and returns it.
func (s *Store) RevokeKey(ctx context.Context, id string) (Key, error) {
	resp, err := s.cli.Delete(ctx, keys.APIKey(id), clientv3.WithPrevKV())
	if err != nil {
		return Key{}, fmt.Errorf("revoke api key %s: %w", id, err)
	}
	if len(resp.PrevKvs) == 0 {
		return Key{}, fmt.Errorf("%w: %s", ErrKeyNotFound, id)
	}
	var k Key
	_ = json.Unmarshal(resp.PrevKvs[0].Value, &k)
	return k, nil
}

// AddACL validates and stores a (its ID set); adding an existing ACL
// again changes nothing.
func (s *Store) AddACL(ctx context.Context, a authz.ACL) (authz.ACL, error) {
	if err := a.Validate(); err != nil {
		return authz.ACL{}, err
	}
	b, _ := json.Marshal(a)
	if _, err := s.cli.Put(ctx, keys.ACL(a.ID), string(b)); err != nil {
		return authz.ACL{}, fmt.Errorf("add acl %s: %w", a, err)
	}
	return a, nil
}

// ListACLs returns every ACL.
func (s *Store) ListACLs(ctx context.Context) ([]authz.ACL, error) {
	snap, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	return snap.ACLs, nil
}

// RemoveACL deletes the ACL with this id and returns it.
func (s *Store) RemoveACL(ctx context.Context, id string) (authz.ACL, error) {
	resp, err := s.cli.Delete(ctx, keys.ACL(id), clientv3.WithPrevKV())
	if err != nil {
		return authz.ACL{}, fmt.Errorf("remove acl %s: %w", id, err)
	}
	if len(resp.PrevKvs) == 0 {
		return authz.ACL{}, fmt.Errorf("%w: %s", ErrACLNotFound, id)
	}
	var a authz.ACL
	_ = json.Unmarshal(resp.PrevKvs[0].Value, &a)
	return a, nil
}

// Load reads the whole access state.
func (s *Store) Load(ctx context.Context) (*Snapshot, error) {
	resp, err := s.cli.Get(ctx, keys.AccessPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read api keys and acls: %w", err)
	}
	snap := &Snapshot{Keys: map[string]Key{}, Revision: resp.Header.Revision}
	acls := map[string]authz.ACL{}
	for _, kv := range resp.Kvs {
		s.apply(snap.Keys, acls, kv, false)
	}
	snap.ACLs = sortedACLs(acls)
	return snap, nil
}

func sortedACLs(m map[string]authz.ACL) []authz.ACL {
	out := make([]authz.ACL, 0, len(m))
	for _, a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b authz.ACL) int {
		if c := strings.Compare(a.Principal, b.Principal); c != 0 {
			return c
		}
		if c := strings.Compare(a.Pattern(), b.Pattern()); c != 0 {
			return c
		}
		return strings.Compare(string(a.Operation)+string(a.Effect), string(b.Operation)+string(b.Effect))
	})
	return out
}

func (s *Store) apply(ks map[string]Key, acls map[string]authz.ACL, kv *mvccpb.KeyValue, deleted bool) {
	k := string(kv.Key)
	switch {
	case strings.HasPrefix(k, keys.APIKeysPrefix()):
		id := strings.TrimPrefix(k, keys.APIKeysPrefix())
		if deleted {
			delete(ks, id)
			return
		}
		var v Key
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			s.log.Error("unreadable api key in etcd: ignored", "key", k, "err", err)
			return
		}
		ks[id] = v
	case strings.HasPrefix(k, keys.ACLsPrefix()):
		id := strings.TrimPrefix(k, keys.ACLsPrefix())
		if deleted {
			delete(acls, id)
			return
		}
		var v authz.ACL
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			s.log.Error("unreadable acl in etcd: ignored", "key", k, "err", err)
			return
		}
		acls[id] = v
	}
}

// Watch calls fn with the access state now and after every change, until
// stop is called. fn gets a fresh Snapshot each time (never changed
// afterwards). A lost watch (compaction, etcd restart) reads everything
// again.
func (s *Store) Watch(ctx context.Context, fn func(*Snapshot)) (stop func(), err error) {
	snap, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	fn(snap)
	wctx, cancel := context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerOf(ctx)))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ks := snap.Keys
		acls := map[string]authz.ACL{}
		for _, a := range snap.ACLs {
			acls[a.ID] = a
		}
		rev := snap.Revision
		for wctx.Err() == nil {
			wch := s.cli.Watch(clientv3.WithRequireLeader(wctx), keys.AccessPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for wr := range wch {
				if err := wr.Err(); err != nil {
					break
				}
				nk := make(map[string]Key, len(ks))
				for id, k := range ks {
					nk[id] = k
				}
				for _, ev := range wr.Events {
					s.apply(nk, acls, ev.Kv, ev.Type == mvccpb.DELETE)
				}
				ks, rev = nk, wr.Header.Revision
				fn(&Snapshot{Keys: ks, ACLs: sortedACLs(acls), Revision: rev})
			}
			if wctx.Err() != nil {
				return
			}
			// The watch ended (compacted, leader lost): read it all again.
			select {
			case <-wctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			if fresh, err := s.Load(wctx); err == nil {
				ks, rev = fresh.Keys, fresh.Revision
				acls = map[string]authz.ACL{}
				for _, a := range fresh.ACLs {
					acls[a.ID] = a
				}
				fn(fresh)
			} else {
				s.log.Warn("reading api keys and acls again failed; retrying", "err", err)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }, nil
}
