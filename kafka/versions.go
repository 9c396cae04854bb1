package kafka

import (
	"context"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handler answers one decoded request; a nil response sends nothing
// (acks=0 produce), an error closes the connection (errDrop says why).
type handler func(ctx context.Context, c *conn, req kmsg.Request) (kmsg.Response, error)

type api struct {
	key      int16
	min, max int16
	handle   handler
}

// apis are the APIs this listener serves, each registered by the file
// that implements it (register in its init). ApiVersions lists exactly
// these, so clients never try the others (transactions, ACL admin, KIP-848
// groups, share groups).
var apis = map[int16]api{}

// register adds an API; versions beyond what kmsg knows are a bug.
func register(key, min, max int16, h handler) {
	if _, dup := apis[key]; dup {
		panic(fmt.Sprintf("kafka: API %d registered twice", key))
	}
	if req := kmsg.RequestForKey(key); req == nil || max > req.MaxVersion() {
		panic(fmt.Sprintf("kafka: API %d v%d is beyond kmsg", key, max))
	}
	apis[key] = api{key: key, min: min, max: max, handle: h}
}

var errUnsupportedVersion = kerr.UnsupportedVersion.Code

func init() { register(18, 0, 3, handleAPIVersions) }

// advertised lists the served APIs, sorted by key.
func advertised() []kmsg.ApiVersionsResponseApiKey {
	out := make([]kmsg.ApiVersionsResponseApiKey, 0, len(apis))
	for _, a := range apis {
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MinVersion, k.MaxVersion = a.key, a.min, a.max
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ApiKey < out[j].ApiKey })
	return out
}

func handleAPIVersions(_ context.Context, _ *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.ApiVersionsRequest)
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	resp.ApiKeys = advertised()
	return resp, nil
}
