package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/node"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a production node against an etcd cluster and a bucket",
		Long: `Run a Varve node. Several nodes may share one etcd cluster and one bucket;
any ingest node accepts writes for any partition.

Roles (--roles, default ingest,fetch,sequence): ingest takes writes, fetch
serves reads, sequence makes the node a candidate for the elected sequencer
that orders every commit (it runs with ingest: keep them together), compact
runs compaction, retention and garbage collection. --commit-path is sequencer
by default (ingest nodes commit through the elected sequencer; direct: each
ingest node writes etcd itself); every node of a cluster must use the same
one, and once a sequencer has led, direct commits are refused
(FAILED_PRECONDITION).

Every flag is also an environment variable (--flush-bytes: VARVE_FLUSH_BYTES)
and a key of the optional YAML file given with --config (flush_bytes).
Zero means the default; unknown keys and VARVE_* variables are errors.

Security (docs/security.md): --tls-cert-file/--tls-key-file serve TLS,
--auth token|mtls authenticates callers, VARVE_BOOTSTRAP_TOKEN (or
--bootstrap-token-file) gives the first admin key. On an address other than
loopback, auth none without TLS is refused unless --insecure. Where secrets
come as environment variables (ECS, Kubernetes), VARVE_TLS_CERT_PEM,
VARVE_TLS_KEY_PEM, VARVE_TLS_CLIENT_CA_PEM and VARVE_TLS_CA_PEM hold the PEM
text of the tls_*_file settings and VARVE_CLUSTER_SECRET the cluster secret
(not reloaded: a new value takes a restart).

Example:
  varve serve --roles ingest,fetch,sequence --etcd-endpoints http://etcd:2379 \
    --bucket s3://my-bucket/varve --s3-endpoint http://minio:9000 --s3-path-style`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadNodeConfig(cmd.Flags())
			if err != nil {
				return err
			}
			log, err := newLogger(cfg)
			if err != nil {
				return err
			}
			if err := serveSecurity(&cfg, log); err != nil {
				return err
			}
			n, err := node.New(cmd.Context(), cfg, node.Options{Logger: log})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "varve serving on %s (roles %v)\n", n.Addr(), cfg.Roles)
			return runUntilSignal(cmd.Context(), n.Wait, n.Shutdown, cfg.ShutdownTimeout)
		},
	}
	addNodeFlags(cmd.Flags())
	return cmd
}

// runUntilSignal waits for ctx (cancelled on SIGINT/SIGTERM) or a serving
// error, then drains within timeout.
func runUntilSignal(ctx context.Context, wait func(context.Context) error, shutdown func(context.Context) error, timeout time.Duration) error {
	werr := wait(ctx)
	dctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	serr := shutdown(dctx)
	if werr != nil {
		return werr
	}
	return serr
}
