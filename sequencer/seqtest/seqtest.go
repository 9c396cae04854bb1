package seqtest

import (
	"context"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
)

// Start runs a sequencer with cfg on meta's etcd until the test ends,
// waits until it leads, and returns it with a client that commits through
// it in process.
func Start(t testing.TB, meta *metadata.Client, cfg sequencer.Config) (*sequencer.Sequencer, *sequencer.Client) {
	t.Helper()
	s, err := sequencer.New(meta, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	if !testenv.Eventually(30*time.Second, s.Leading) {
		t.Fatal("the sequencer never led")
	}
	return s, sequencer.NewClient(meta, func(context.Context, string) (sequencer.Service, error) { return s, nil })
}
