package main

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
)

func newCompactionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compaction",
		Short: "Pause, resume or inspect compaction, cluster-wide",
		Long: `Compaction (nodes with the compact role) merges the small level-0 segment
blocks ingest writes into large per-partition objects, and keeps only the
newest record per key of compacted topics. See docs/compaction.md.`,
	}
	addClientFlags(cmd)
	admin := func(cmd *cobra.Command) varvev1connect.AdminServiceClient {
		addr, _ := cmd.Flags().GetString("addr")
		return varvev1connect.NewAdminServiceClient(http.DefaultClient, addr)
	}
	pause := &cobra.Command{
		Use:   "pause",
		Short: "Stop compaction on every node (a running job stops before its index swap)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := admin(cmd).PauseCompaction(cmd.Context(), connect.NewRequest(&varvev1.PauseCompactionRequest{})); err != nil {
				return clientError(cmd, "", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "compaction paused")
			return nil
		},
	}
	resume := &cobra.Command{
		Use:   "resume",
		Short: "Resume compaction on every node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := admin(cmd).ResumeCompaction(cmd.Context(), connect.NewRequest(&varvev1.ResumeCompactionRequest{})); err != nil {
				return clientError(cmd, "", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "compaction resumed")
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status [--topic T] [--format text|json]",
		Short: "Whether compaction is paused, and the backlog: level-0 index entries and bytes per partition",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			topic, _ := cmd.Flags().GetString("topic")
			resp, err := admin(cmd).CompactionStatus(cmd.Context(), connect.NewRequest(&varvev1.CompactionStatusRequest{Topic: topic}))
			if err != nil {
				return clientError(cmd, topic, err)
			}
			s := resp.Msg
			if format == "json" {
				return printProtoJSON(cmd, s)
			}
			state := "running"
			if s.GetPaused() {
				state = "paused"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "compaction: %s\nbacklog: %d level-0 entries, %d bytes (of %d index entries)\n\n", state, s.GetBacklogEntries(), s.GetBacklogBytes(), s.GetIndexEntries())
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(w, "TOPIC\tPARTITION\tINDEX ENTRIES\tBACKLOG ENTRIES\tBACKLOG BYTES\t")
			for _, p := range s.GetPartitions() {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t\n", p.GetTopic(), p.GetPartition(), p.GetIndexEntries(), p.GetBacklogEntries(), p.GetBacklogBytes())
			}
			return w.Flush()
		},
	}
	status.Flags().String("topic", "", "only this topic")
	addFormatFlag(status, "output format: text or json")
	cmd.AddCommand(pause, resume, status)
	return cmd
}
