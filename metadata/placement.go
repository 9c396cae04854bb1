package metadata

import (
	"context"
	"fmt"
	"strconv"

	"github.com/varve-io/varve/metadata/internal/keys"
)

// writersName is the key under keys.PlacementPrefix holding the number of
// ingest nodes that take the producers.
const writersName = "writers"

// SetWriters records how many ingest nodes should take the producers
// (docs/metadata.md, "Producer placement"): the sequencer's leader writes
// it when the cluster's produce rate calls for more or fewer. 0 clears it:
// every node keeps the producers that reach it.
func (c *Client) SetWriters(ctx context.Context, n int) error {
	var err error
	if n <= 0 {
		_, err = c.cli.Delete(ctx, keys.PlacementPrefix()+writersName)
	} else {
		_, err = c.cli.Put(ctx, keys.PlacementPrefix()+writersName, strconv.Itoa(n))
	}
	if err != nil {
		return fmt.Errorf("set writers to %d: %w", n, err)
	}
	return nil
}

// Writers returns the number of writers SetWriters recorded, 0 when none
// is.
func (c *Client) Writers(ctx context.Context) (int, error) {
	resp, err := c.cli.Get(ctx, keys.PlacementPrefix()+writersName)
	if err != nil {
		return 0, fmt.Errorf("read writers: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	n, err := strconv.Atoi(string(resp.Kvs[0].Value))
	if err != nil || n < 0 {
		return 0, nil
	}
	return n, nil
}

// WatchWriters calls fn with the number of writers SetWriters recorded (0
// when none is), now and after every change, until stop is called. It
// keeps watching through etcd outages as WatchNodes does.
func (c *Client) WatchWriters(ctx context.Context, fn func(int)) (stop func(), err error) {
	stop, err = c.watchPrefix(ctx, keys.PlacementPrefix(), func(m map[string]string) {
		n, err := strconv.Atoi(m[writersName])
		if err != nil || n < 0 {
			n = 0
		}
		fn(n)
	})
	if err != nil {
		return nil, fmt.Errorf("watch writers: %w", err)
	}
	return stop, nil
}
