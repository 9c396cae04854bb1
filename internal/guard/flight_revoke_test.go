package guard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// TestRevocationEndsFlightDoGet: a DoGet opened with a key ends with
// UNAUTHENTICATED once the key is revoked, and another with
// PERMISSION_DENIED once its ACL is removed, instead of streaming the rest
// of the scan. The client reads one message, then waits (its small
// flow-control window holds the server back) until the change is in force.
func TestRevocationEndsFlightDoGet(t *testing.T) {
	n, a := securedNode(t, nil, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := a.CreateTopic(ctx, "t", 1, nil); err != nil {
		t.Fatal(err)
	}
	// 4 MiB in many batches: far more than the client's window.
	value := []byte(`{"pad":"` + strings.Repeat("x", 1000) + `"}`)
	for b := 0; b < 8; b++ {
		recs := make([]sdk.Record, 512)
		for i := range recs {
			recs[i] = sdk.Record{Topic: "t", Key: []byte(fmt.Sprint(b*512 + i)), Value: value}
		}
		if _, err := a.Client().Produce(ctx, "t", recs); err != nil {
			t.Fatal(err)
		}
	}
	revoked := principal(t, a, n.Addr(), "revoked", "topic:t consume")
	unacl := principal(t, a, n.Addr(), "unacl", "topic:t consume")
	// A fixed 64 KiB window (no BDP growth): the server cannot send the
	// whole scan ahead of the client's reads.
	fc, err := flight.NewClientWithMiddleware(n.FlightAddr(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	with := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	info, err := fc.GetFlightInfo(with(revoked), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.GetEndpoint()) != 1 {
		t.Fatalf("%d endpoints, want 1", len(info.GetEndpoint()))
	}
	tk := info.GetEndpoint()[0].GetTicket()
	open := func(tok string) flight.FlightService_DoGetClient {
		st, err := fc.DoGet(with(tok), tk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatalf("first message: %v", err)
		}
		return st
	}
	s1, s2 := open(revoked), open(unacl)

	keys, err := a.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Principal == "revoked" {
			if _, err := a.RevokeAPIKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	acls, err := a.ListACLs(ctx, "unacl")
	if err != nil || len(acls) != 1 {
		t.Fatalf("acls of unacl: %v, %v", acls, err)
	}
	if _, err := a.RemoveACL(ctx, acls[0].ID); err != nil {
		t.Fatal(err)
	}
	// Both changes are in force on the node before the streams read on.
	asRevoked := admin.New(n.Addr(), sdk.WithToken(revoked))
	defer asRevoked.Close()
	if !testenv.Eventually(5*time.Second, func() bool {
		_, e1 := asRevoked.WhoAmI(ctx)
		_, e2 := fc.GetSchema(with(unacl), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"t"}})
		return e1 != nil && status.Code(e2) == codes.PermissionDenied
	}) {
		t.Fatal("the revocation and the ACL removal did not reach the node within 5 s")
	}
	for _, tc := range []struct {
		name string
		s    flight.FlightService_DoGetClient
		want codes.Code
	}{{"revoked key", s1, codes.Unauthenticated}, {"removed ACL", s2, codes.PermissionDenied}} {
		msgs := 0
		var err error
		for {
			if _, err = tc.s.Recv(); err != nil {
				break
			}
			msgs++
		}
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s: the DoGet streamed the rest of the scan (%d more messages) after the change", tc.name, msgs)
		}
		if status.Code(err) != tc.want {
			t.Fatalf("%s: DoGet ended with %v, want %v", tc.name, err, tc.want)
		}
		t.Logf("%s: DoGet ended after %d more messages: %v", tc.name, msgs, err)
	}
}
