package kafka

import (
	"context"
	"testing"
	"time"
)

// TestBudget: takes wait for gives, and a wait ends with its context.
func TestBudget(t *testing.T) {
	b := newBudget(10)
	if !b.take(context.Background(), 8) {
		t.Fatal("take 8 of 10")
	}
	got := make(chan bool, 1)
	go func() { got <- b.take(context.Background(), 5) }()
	select {
	case <-got:
		t.Fatal("took 5 with 2 left")
	case <-time.After(50 * time.Millisecond):
	}
	b.give(8)
	if !<-got {
		t.Fatal("take 5 after the give")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { got <- b.take(ctx, 6) }()
	cancel()
	if <-got {
		t.Fatal("take 6 with 5 left returned true after its context ended")
	}
	if b.left != 5 {
		t.Fatalf("left %d, want 5", b.left)
	}
}
