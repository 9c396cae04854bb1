// Command varve is Varve's single binary: `varve dev` and `varve serve` run
// nodes; the other commands are clients of a running cluster.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "varve:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "varve",
		Short:         "Varve: event streaming on object storage",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newDevCmd(),
		newServeCmd(),
		newTopicCmd(),
		newCompactionCmd(),
		newGroupCmd(),
		newProduceCmd(),
		newConsumeCmd(),
		newScanCmd(),
		newBenchCmd(),
		newEtcdCmd(),
		newAPIKeyCmd(),
		newACLCmd(),
	)
	addVersion(root)
	return root
}
