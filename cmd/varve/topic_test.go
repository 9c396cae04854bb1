package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/node"
)

// TestTopicCommandMessages: the topic commands' output and errors as a
// person reads them (issue 12 item 8).
func TestTopicCommandMessages(t *testing.T) {
	ctx := context.Background()
	d, err := node.StartDev(ctx, node.DevConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Node: node.Config{Linger: 10 * time.Millisecond}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		d.Close(cctx)
	})
	addr := d.Addr()
	badFile := filepath.Join(t.TempDir(), "schema.json")
	if err := os.WriteFile(badFile, []byte("[\n  {\"name\": \"a\", \"type\": \"utf8\"},\n  {\"name\": b}\n]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args     []string
		out      string // stdout, exactly
		err      string // in the error, "" none
		notInErr string
	}{
		{args: []string{"topic", "create", "one", "--partitions", "1"}, out: "created topic one with 1 partition\n"},
		{args: []string{"topic", "create", "three", "--partitions", "3"}, out: "created topic three with 3 partitions\n"},
		{args: []string{"topic", "create", "s1", "--schema", "{not json"}, err: "--schema: invalid JSON at line 1, column 2: invalid character 'n'", notInErr: "no such file"},
		{args: []string{"topic", "create", "s2", "--schema", `[{"name": "a", "type": "utf8"}`}, err: "--schema: invalid JSON at line 1, column 30: unexpected end of JSON input"},
		{args: []string{"topic", "create", "s3", "--schema", badFile}, err: "--schema file " + badFile + ": invalid JSON at line 3, column 12: invalid character 'b'"},
		{args: []string{"topic", "create", "s4", "--schema", "nofile.json"}, err: "--schema is neither a JSON field list nor a readable file: open nofile.json"},
		{args: []string{"topic", "alter", "one", "--schema", "{not json"}, err: "invalid JSON at line 1, column 2"},
		{args: []string{"topic", "create", "café"}, err: `topic name "café" has character 'é'`, notInErr: "Ã"},
	}
	for _, tc := range cases {
		out, _, err := runCLI(t, append(tc.args, "--addr", addr)...)
		switch {
		case tc.err == "" && err != nil:
			t.Fatalf("%v: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Fatalf("%v: got error %v, want %q", tc.args, err, tc.err)
		case tc.notInErr != "" && strings.Contains(err.Error(), tc.notInErr):
			t.Fatalf("%v: error %v has %q", tc.args, err, tc.notInErr)
		case tc.err == "" && out != tc.out:
			t.Fatalf("%v: got %q, want %q", tc.args, out, tc.out)
		}
	}
}
