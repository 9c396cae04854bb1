package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestJSONRefusesUnknownFields: a misspelled field in a Connect JSON
// request is INVALID_ARGUMENT naming it, and nothing is produced; the same
// request spelled right is accepted.
func TestJSONRefusesUnknownFields(t *testing.T) {
	n := startNode(t, nil)
	createTopic(t, n.c, "json", 3)
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := http.Post(n.Addr()+"/varve.v1.ProduceService/Produce", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, body := range []string{
		`{"topic":"json","records":[{"partiton":2,"record":{"value":"aGk="}}]}`,
		`{"topic":"json","records":[{"partition":2,"record":{"value":"aGk=","partiton":1}}]}`,
		`{"topik":"json","records":[{"partition":2,"record":{"value":"aGk="}}]}`,
	} {
		code, resp := post(body)
		if code != http.StatusBadRequest || !strings.Contains(resp, `"invalid_argument"`) || !strings.Contains(resp, "unknown field") {
			t.Fatalf("%s: got %d %s, want 400 invalid_argument naming the unknown field", body, code, resp)
		}
	}
	// The refused requests stored nothing: the first record lands at offset 0.
	code, resp := post(`{"topic":"json","records":[{"partition":2,"record":{"value":"aGk="}}]}`)
	if code != http.StatusOK || !strings.Contains(resp, `"partition":2`) || strings.Contains(resp, `"offset"`) {
		t.Fatalf("valid request: got %d %s, want 200 with partition 2 at offset 0", code, resp)
	}
}
