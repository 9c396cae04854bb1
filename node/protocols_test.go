package node_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/sdk"
)

// TestSameHandlerEveryProtocol produces and fetches through Connect (binary
// and JSON), gRPC and gRPC-Web against one node, over h2c.
func TestSameHandlerEveryProtocol(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "p", 1)
	hc := sdk.NewHTTPClient()
	protocols := map[string][]connect.ClientOption{
		"connect":      nil,
		"connect-json": {connect.WithProtoJSON()},
		"grpc":         {connect.WithGRPC()},
		"grpc-web":     {connect.WithGRPCWeb()},
	}
	want := int64(0)
	for name, opts := range protocols {
		t.Run(name, func(t *testing.T) {
			pc := varvev1connect.NewProduceServiceClient(hc, n.Addr(), opts...)
			fc := varvev1connect.NewFetchServiceClient(hc, n.Addr(), opts...)
			resp, err := pc.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "p", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte(name)}}}}))
			if err != nil {
				t.Fatal(err)
			}
			off := resp.Msg.Results[0].Offset
			if off != want {
				t.Fatalf("offset %d, want %d", off, want)
			}
			want++
			f, err := fc.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "p", Partition: 0, Offset: off}))
			if err != nil || len(f.Msg.Records) != 1 || string(f.Msg.Records[0].Value) != name {
				t.Fatalf("fetch: %v %v", f, err)
			}
			// Errors keep their code on every protocol.
			_, err = fc.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "missing"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("unknown topic over %s: %v", name, err)
			}
		})
	}
}
