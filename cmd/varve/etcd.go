package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/metadata/embedded"
)

// newEtcdCmd runs a single-member etcd, the same embedded server `varve
// dev` runs, as its own process. It is hidden: `varve bench` uses it so the
// etcd's CPU and memory are measured apart from the clients', and it is
// handy for trying `varve serve` nodes locally. Production runs a real etcd
// cluster.
func newEtcdCmd() *cobra.Command {
	var dir, client, peer string
	cmd := &cobra.Command{
		Use:    "etcd",
		Short:  "Run a single-member etcd for local experiments (not for production)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			e, err := embedded.StartContext(cmd.Context(), embedded.Config{Dir: dir, ClientURL: client, PeerURL: peer})
			if err != nil {
				return err
			}
			defer e.Close()
			fmt.Fprintln(cmd.OutOrStdout(), "etcd ready", e.Endpoints()[0])
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "", "etcd data directory")
	cmd.Flags().StringVar(&client, "listen-client", "http://127.0.0.1:2379", "client URL")
	cmd.Flags().StringVar(&peer, "listen-peer", "http://127.0.0.1:2380", "peer URL")
	return cmd
}
