package access_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/access"
)

// TestStoreKeySCRAM: a key's SCRAM verifiers are stored with it, read
// back and delivered by the watch; a key stored without them has none.
func TestStoreKeySCRAM(t *testing.T) {
	ctx := context.Background()
	m, err := metadata.Connect(ctx, metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := access.New(m)
	got := make(chan *access.Snapshot, 16)
	stop, err := s.Watch(ctx, func(snap *access.Snapshot) { got <- snap })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	<-got

	k, err := authz.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	v := access.SCRAM{Salt: []byte("salt-salt-salt-salt"), Iterations: 4096, StoredKey: bytes.Repeat([]byte{1}, 32), ServerKey: bytes.Repeat([]byte{2}, 32)}
	if _, err := s.CreateKeySCRAM(ctx, "alice", k, map[string]access.SCRAM{"SCRAM-SHA-256": v}); err != nil {
		t.Fatal(err)
	}
	old, err := authz.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, "bob", old); err != nil {
		t.Fatal(err)
	}
	same := func(k access.Key) bool {
		w := k.SCRAM["SCRAM-SHA-256"]
		return len(k.SCRAM) == 1 && bytes.Equal(w.Salt, v.Salt) && w.Iterations == v.Iterations &&
			bytes.Equal(w.StoredKey, v.StoredKey) && bytes.Equal(w.ServerKey, v.ServerKey)
	}
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !same(snap.Keys[k.ID]) || snap.Keys[old.ID].SCRAM != nil {
		t.Fatalf("loaded %+v and %+v", snap.Keys[k.ID], snap.Keys[old.ID])
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case snap := <-got:
			if same(snap.Keys[k.ID]) && snap.Keys[old.ID].ID == old.ID {
				return
			}
		case <-deadline:
			t.Fatal("the watch did not deliver the key with its SCRAM verifier")
		}
	}
}
