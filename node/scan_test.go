package node_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// TestScanOverConnectAndGRPC: the same ScanService handler over Connect and
// gRPC yields the same Arrow stream; a corrupt block ends the stream with
// DATA_LOSS naming the object, after the batches before it.
func TestScanOverConnectAndGRPC(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "s", 1)
	for round := range 3 {
		var recs []*varvev1.ProduceRecord
		for i := range 100 {
			recs = append(recs, &varvev1.ProduceRecord{Partition: proto.Int32(0), Record: &varvev1.Record{Value: fmt.Appendf(nil, "r%d-%d", round, i)}})
		}
		if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "s", Records: recs})); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	for _, c := range n.rec.Calls() {
		if c.Op == tier.OpPut {
			keys = append(keys, c.Key)
		}
	}
	if len(keys) != 3 {
		t.Fatalf("%d objects, want 3", len(keys))
	}
	scan := func(c varvev1connect.ScanServiceClient) ([]byte, error) {
		stream, err := c.Scan(ctx, connect.NewRequest(&varvev1.ScanRequest{Topic: "s", MaxBatchRecords: 30}))
		if err != nil {
			return nil, err
		}
		defer stream.Close()
		var b bytes.Buffer
		for stream.Receive() {
			b.Write(stream.Msg().GetArrowIpc())
		}
		return b.Bytes(), stream.Err()
	}
	viaConnect, err := scan(varvev1connect.NewScanServiceClient(http.DefaultClient, n.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	viaGRPC, err := scan(varvev1connect.NewScanServiceClient(h2c, n.Addr(), connect.WithGRPC()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaConnect, viaGRPC) {
		t.Fatalf("Connect and gRPC streams differ (%d and %d bytes)", len(viaConnect), len(viaGRPC))
	}
	rd, err := ipc.NewReader(bytes.NewReader(viaConnect))
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for rd.Next() {
		rows += int(rd.RecordBatch().NumRows())
	}
	rd.Release()
	if rows != 300 {
		t.Fatalf("%d rows, want 300", rows)
	}

	// Corrupt the second object and read through a fetch node whose cache
	// does not hold it.
	path := filepath.Join(n.dir, "objects", filepath.FromSlash(keys[1]))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 60; i++ {
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fs, _ := tier.NewFS(filepath.Join(n.dir, "objects"))
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Roles = []string{node.RoleFetch}
	cfg.EtcdEndpoints = n.Meta().Endpoints()
	cfg.Store = "fs:" + filepath.Join(n.dir, "objects")
	reader, err := node.New(ctx, cfg, node.Options{Store: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Shutdown(ctx)
	partial, err := scan(varvev1connect.NewScanServiceClient(http.DefaultClient, reader.Addr()))
	if connect.CodeOf(err) != connect.CodeDataLoss || !strings.Contains(err.Error(), "object "+keys[1]) || !strings.Contains(err.Error(), "s/0 offsets 100-199") {
		t.Fatalf("got %v, want data_loss naming %s, offsets 100-199", err, keys[1])
	}
	// The first object's records came before the error, as valid IPC.
	rd, err = ipc.NewReader(bytes.NewReader(partial))
	if err != nil {
		t.Fatal(err)
	}
	rows = 0
	for rd.Next() {
		rows += int(rd.RecordBatch().NumRows())
	}
	rd.Release()
	if rows != 100 {
		t.Fatalf("%d rows before the corrupt block, want 100", rows)
	}
}
