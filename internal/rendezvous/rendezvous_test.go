package rendezvous

import (
	"fmt"
	"testing"
)

func TestPickIsStableAndSpreads(t *testing.T) {
	ids := []string{"n1", "n2", "n3", "n4"}
	counts := map[string]int{}
	for i := range 4000 {
		key := fmt.Sprintf("client-%d", i)
		w := Pick(key, ids)
		if again := Pick(key, []string{"n4", "n3", "n2", "n1"}); again != w {
			t.Fatalf("Pick(%q) depends on the order of ids: %q, then %q", key, w, again)
		}
		counts[w]++
	}
	for _, id := range ids {
		if counts[id] < 800 || counts[id] > 1200 {
			t.Errorf("%s has %d of 4000 clients, want about 1000: %v", id, counts[id], counts)
		}
	}
}

func TestPickMovesOnlyTheClientsOfAWriterThatCameOrWent(t *testing.T) {
	three, four := []string{"a", "b", "c"}, []string{"a", "b", "c", "d"}
	moved := 0
	for i := range 3000 {
		key := fmt.Sprintf("k%d", i)
		before, after := Pick(key, three), Pick(key, four)
		if before != after {
			if after != "d" {
				t.Fatalf("%s moved from %s to %s when d came, not to d", key, before, after)
			}
			moved++
		}
	}
	if moved < 500 || moved > 1000 {
		t.Errorf("%d of 3000 clients moved to the fourth writer, want about 750", moved)
	}
	if Pick("k", nil) != "" {
		t.Error("Pick with no writers named one")
	}
}
