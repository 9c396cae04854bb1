package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

func newGroupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "List, describe, reset and delete consumer groups",
		Args:  cobra.NoArgs,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newGroupListCmd(), newGroupDescribeCmd(), newGroupResetCmd(), newGroupDeleteCmd())
	return cmd
}

// groupError is clientError with the group named for NotFound.
func groupError(cmd *cobra.Command, group string, err error) error {
	if connect.CodeOf(err) == connect.CodeNotFound && sdk.GroupReason(err) == sdk.ReasonGroupNotFound {
		return fmt.Errorf("group %q not found (%s)", group, connect.CodeNotFound)
	}
	return clientError(cmd, "", err)
}

func newGroupListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List consumer groups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			gs, err := newAdmin(cmd).ListGroups(cmd.Context())
			if err != nil {
				return clientError(cmd, "", err)
			}
			if format == "json" {
				return printProtoJSON(cmd, groupsProto(gs))
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "GROUP\tSTATE\tMEMBERS\tGENERATION\tSTRATEGY")
			for _, g := range gs {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", g.Group, g.State, g.Members, g.Generation, g.Strategy)
			}
			return w.Flush()
		},
	}
	addFormatFlag(cmd, "output: text (a table) or json")
	return cmd
}

func newGroupDescribeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a group's members and, per partition, its owner, committed offset, end offset and lag",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			d, err := newAdmin(cmd).DescribeGroup(cmd.Context(), args[0])
			if err != nil {
				return groupError(cmd, args[0], err)
			}
			if format == "json" {
				return printProtoJSON(cmd, describeGroupProto(d))
			}
			s := d.Summary
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "group %s: %s, %d members, generation %d, strategy %s\n\n", s.Group, s.State, s.Members, s.Generation, s.Strategy)
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG\tMEMBER")
			for _, p := range d.Partitions {
				committed := "-"
				if p.CommittedOffset >= 0 {
					committed = strconv.FormatInt(p.CommittedOffset, 10)
				}
				member := p.MemberID
				if member == "" {
					member = "-"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%d\t%s\n", p.Topic, p.Partition, committed, p.EndOffset, p.Lag, member)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(d.Members) > 0 {
				fmt.Fprintln(out)
				w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "MEMBER\tCLIENT\tNODE\tJOINED\tPARTITIONS")
				for _, m := range d.Members {
					var parts []string
					for _, tp := range m.Assignment {
						parts = append(parts, fmt.Sprintf("%s/%d", tp.Topic, tp.Partition))
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.MemberID, m.ClientID, m.Node,
						m.Joined.UTC().Format(time.RFC3339), strings.Join(parts, ","))
				}
				return w.Flush()
			}
			return nil
		},
	}
	addFormatFlag(cmd, "output: text (tables) or json")
	return cmd
}

func newGroupResetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reset GROUP --topic T --to earliest|latest|OFFSET|RFC3339-time [--partition P]",
		Short: "Move a stopped group's committed offsets (backwards or forwards)",
		Long: `Move the committed offsets of a group on a topic: to the earliest or latest
offset, to an offset, or to the first record at or after an RFC 3339 time.
The group must have no members (stop its consumers first); a group that does
not exist yet is created with these offsets.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			topic, _ := f.GetString("topic")
			to, _ := f.GetString("to")
			partition, _ := f.GetInt32("partition")
			if topic == "" {
				return errors.New("--topic is required")
			}
			var partitions []int32
			if partition >= 0 {
				partitions = []int32{partition}
			}
			var target admin.ResetTarget
			switch to {
			case "earliest":
				target = admin.ResetToEarliest()
			case "latest":
				target = admin.ResetToLatest()
			default:
				if off, err := strconv.ParseInt(to, 10, 64); err == nil {
					if off < 0 {
						return fmt.Errorf("--to offset must not be negative, got %d", off)
					}
					target = admin.ResetToOffset(off)
				} else if t, err := time.Parse(time.RFC3339Nano, to); err == nil {
					target = admin.ResetToTime(t)
				} else {
					return fmt.Errorf("--to must be earliest, latest, an offset or an RFC 3339 time, not %q", to)
				}
			}
			offs, err := newAdmin(cmd).ResetGroupOffsets(cmd.Context(), args[0], topic, target, partitions...)
			if err != nil {
				if connect.CodeOf(err) == connect.CodeNotFound && sdk.GroupReason(err) == "" {
					return clientError(cmd, topic, err)
				}
				return groupError(cmd, args[0], err)
			}
			for _, o := range offs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%d -> %d\n", o.Topic, o.Partition, o.Offset)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("topic", "", "topic whose offsets to move")
	f.String("to", "", "earliest, latest, an offset, or an RFC 3339 time")
	f.Int32("partition", -1, "only this partition (-1: every partition)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func newGroupDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a group without members and its committed offsets",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := newAdmin(cmd).DeleteGroup(cmd.Context(), args[0]); err != nil {
				return groupError(cmd, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted group %s\n", args[0])
			return nil
		},
	}
}

// consumeGroup is `varve consume TOPIC --group G`: read the partitions the
// group assigns this process, print each record, and commit as it goes
// (after each batch is written out), until interrupted or --count records.
func consumeGroup(cmd *cobra.Command, topic, group, format string, count int64) error {
	ctx := cmd.Context()
	client := newClient(cmd)
	defer client.Close()
	clientID, _ := cmd.Flags().GetString("client-id")
	gc := client.NewGroupConsumer(group, sdk.GroupOptions{
		// Each printed batch is committed below, so a revoked partition is
		// handed over exactly where printing stopped.
		Topics: []string{topic}, AutoCommitInterval: -1, ClientID: clientID,
		FromLatest: consumeFromLatest(cmd),
	})
	out := newRecordWriter(cmd, format)
	defer out.buf.Flush()
	var printed int64
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = gc.Close(cctx)
	}()
	for {
		recs, err := gc.Poll(ctx)
		for i, r := range recs {
			if werr := out.write(r); werr != nil {
				return werr
			}
			printed++
			if count > 0 && printed >= count {
				recs = recs[:i+1]
				break
			}
		}
		if ferr := out.flush(); ferr != nil {
			return ferr
		}
		if len(recs) > 0 {
			// Printed, so committed: at least once.
			if cerr := gc.CommitRecords(ctx, recs...); cerr != nil && ctx.Err() == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "varve: commit: %v\n", cerr)
			}
		}
		if count > 0 && printed >= count {
			return nil
		}
		if ctx.Err() != nil {
			return nil // interrupted: the normal end of a group consumer
		}
		if err != nil {
			return groupError(cmd, group, err)
		}
	}
}
