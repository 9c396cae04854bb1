package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
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
	pause := &cobra.Command{
		Use:   "pause",
		Short: "Stop compaction on every node (a running job stops before its index swap)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := newAdmin(cmd).PauseCompaction(cmd.Context()); err != nil {
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
			if err := newAdmin(cmd).ResumeCompaction(cmd.Context()); err != nil {
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
			s, err := newAdmin(cmd).CompactionStatus(cmd.Context(), topic)
			if err != nil {
				return clientError(cmd, topic, err)
			}
			if format == "json" {
				return printProtoJSON(cmd, compactionStatusProto(s))
			}
			state := "running"
			if s.Paused {
				state = "paused"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "compaction: %s\nbacklog: %d level-0 entries, %d bytes (of %d index entries)\n\n", state, s.BacklogEntries, s.BacklogBytes, s.IndexEntries)
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(w, "TOPIC\tPARTITION\tINDEX ENTRIES\tBACKLOG ENTRIES\tBACKLOG BYTES\t")
			for _, p := range s.Partitions {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t\n", p.Topic, p.Partition, p.IndexEntries, p.BacklogEntries, p.BacklogBytes)
			}
			return w.Flush()
		},
	}
	status.Flags().String("topic", "", "only this topic")
	addFormatFlag(status, "output format: text or json")
	cmd.AddCommand(pause, resume, status)
	return cmd
}
