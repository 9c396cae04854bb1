package admin_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// An admin client creates a compacted topic, changes it in place, and
// reads a group's lag; a data client (sdk) produces and consumes.
func Example() {
	ctx := context.Background()
	adm := admin.New("http://127.0.0.1:7700", sdk.WithGRPC()) // the same Options as sdk.New
	defer adm.Close()
	_, err := adm.CreateTopic(ctx, "users", 6, &admin.TopicConfig{
		CleanupPolicy: admin.CleanupCompact,
		Retention:     admin.Forever,
	})
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeAlreadyExists {
		err = nil
	}
	if err != nil {
		log.Fatal(err)
	}
	week := 7 * 24 * time.Hour
	if _, err := adm.UpdateTopic(ctx, "users", admin.TopicUpdate{Retention: &week}); err != nil {
		log.Fatal(err)
	}
	d, err := adm.DescribeGroup(ctx, "mailer")
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range d.Partitions {
		fmt.Println(p.Topic, p.Partition, "lag", p.Lag)
	}
}
