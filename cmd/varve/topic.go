package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/sdk/admin"
)

func newTopicCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Create, list, describe, alter and delete topics",
		Args:  cobra.NoArgs,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newTopicCreateCmd(), newTopicListCmd(), newTopicDescribeCmd(), newTopicAlterCmd(), newTopicDeleteCmd())
	return cmd
}

func newTopicCreateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create NAME --partitions N [--retention-ms X] [--retention-bytes Y] [--cleanup-policy delete|compact] [--max-record-bytes Z] [--schema FILE|JSON]",
		Short: "Create a topic",
		Long: `Create a topic. Settings not given take the cluster defaults:
--retention-ms -1 keeps records forever, --retention-bytes -1 keeps any
number of bytes.

--schema describes JSON record values as typed columns for scans: a JSON
list of fields, given inline or as the name of a file holding it:
  [{"name": "user", "type": "utf8"}, {"name": "amount", "type": "float64", "nullable": false},
   {"name": "at", "type": "timestamp[ms]", "json": "timestamp"}]
Types: bool, int8…int64, uint8…uint64, float32, float64, utf8, binary,
timestamp[s|ms|us|ns], date32, list<T>, struct<name: T, ...>.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			f := cmd.Flags()
			partitions, _ := f.GetInt32("partitions")
			if partitions < 1 {
				return fmt.Errorf("--partitions must be at least 1, not %d", partitions)
			}
			cfg := &admin.TopicConfig{}
			cfg.Retention = msFlag(f.GetInt64("retention-ms"))
			cfg.RetentionBytes, _ = f.GetInt64("retention-bytes")
			cfg.MaxRecordBytes, _ = f.GetInt32("max-record-bytes")
			cfg.DeleteRetention = msFlag(f.GetInt64("delete-retention-ms"))
			cfg.MinCompactionLag = msFlag(f.GetInt64("min-compaction-lag-ms"))
			switch policy, _ := f.GetString("cleanup-policy"); policy {
			case "", "delete", "compact":
				cfg.CleanupPolicy = admin.CleanupPolicy(policy)
			default:
				return fmt.Errorf("--cleanup-policy must be delete or compact, not %q", policy)
			}
			if sch, _ := f.GetString("schema"); sch != "" {
				ts, err := readSchemaFlag(sch)
				if err != nil {
					return err
				}
				cfg.Schema = ts
			}
			t, err := newAdmin(cmd).CreateTopic(cmd.Context(), name, partitions, cfg)
			if err != nil {
				return clientError(cmd, name, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created topic %s with %s\n", t.Name, plural(int(t.Partitions), "partition"))
			return nil
		},
	}
	f := cmd.Flags()
	f.Int32("partitions", 1, "number of partitions")
	f.Int64("retention-ms", 0, "keep records this many milliseconds (-1 forever; 0 the cluster default)")
	f.Int64("retention-bytes", 0, "keep at most this many bytes per partition (-1 or 0: no limit)")
	f.String("cleanup-policy", "", "delete or compact (default delete)")
	f.Int64("delete-retention-ms", 0, "compacted topics: keep tombstones this many milliseconds (0: one day)")
	f.Int64("min-compaction-lag-ms", 0, "compacted topics: never compact records younger than this many milliseconds")
	f.Int32("max-record-bytes", 0, "largest record accepted, key + value + headers (0: the cluster default)")
	f.String("schema", "", "value schema for typed scans: a JSON field list, or a file holding one")
	return cmd
}

// readSchemaFlag reads --schema: inline JSON (it starts with '[' or '{')
// or the name of a file holding it. JSON syntax errors say where they are.
func readSchemaFlag(v string) (*admin.Schema, error) {
	text := strings.TrimSpace(v)
	where := "--schema"
	if !strings.HasPrefix(text, "[") && !strings.HasPrefix(text, "{") {
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("--schema is neither a JSON field list nor a readable file: %w", err)
		}
		text, where = string(b), "--schema file "+v
	}
	if err := checkJSON(text); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &admin.Schema{Format: admin.SchemaJSON, Fields: text}, nil
}

// checkJSON reports a JSON syntax error with its line and column.
func checkJSON(text string) error {
	var v any
	err := json.Unmarshal([]byte(text), &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return err
	}
	// The error is in the last byte read (Offset counts those read).
	off := min(int(se.Offset), len(text))
	line := 1 + strings.Count(text[:max(off-1, 0)], "\n")
	col := max(utf8.RuneCountInString(text[strings.LastIndex(text[:max(off-1, 0)], "\n")+1:off]), 1)
	return fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, se)
}

func newTopicAlterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alter NAME [--schema FILE|JSON | --clear-schema] [--retention-ms X] [--retention-bytes Y] [--max-record-bytes Z] [--partitions N] [--cleanup-policy delete|compact] [--delete-retention-ms X] [--min-compaction-lag-ms Y]",
		Short: "Change a topic's settings in place",
		Long: `Change a topic's settings; the topic keeps its records and id. Only the
settings given change. A schema applies to every record scanned afterwards,
old or new. Partitions can only grow (keyed records then map to other
partitions than before). A new cleanup policy applies from the next
compaction and retention pass: compact keeps the latest record of each key
(records without a key are kept), delete removes records by retention.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			f := cmd.Flags()
			var req admin.TopicUpdate
			if f.Changed("retention-ms") {
				v := msFlag(f.GetInt64("retention-ms"))
				req.Retention = &v
			}
			if f.Changed("retention-bytes") {
				v, _ := f.GetInt64("retention-bytes")
				req.RetentionBytes = &v
			}
			if f.Changed("max-record-bytes") {
				v, _ := f.GetInt32("max-record-bytes")
				req.MaxRecordBytes = &v
			}
			if f.Changed("partitions") {
				v, _ := f.GetInt32("partitions")
				req.Partitions = &v
			}
			if f.Changed("schema") {
				v, _ := f.GetString("schema")
				ts, err := readSchemaFlag(v)
				if err != nil {
					return err
				}
				req.Schema = ts
			}
			req.ClearSchema, _ = f.GetBool("clear-schema")
			if err := alterCompaction(f, &req); err != nil {
				return err
			}
			t, err := newAdmin(cmd).UpdateTopic(cmd.Context(), name, req)
			if err != nil {
				return clientError(cmd, name, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "altered topic %s\n", t.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64("retention-ms", 0, "keep records this many milliseconds (-1 forever)")
	f.Int64("retention-bytes", 0, "keep at most this many bytes per partition (-1: no limit)")
	f.Int32("max-record-bytes", 0, "largest record accepted, key + value + headers")
	f.Int32("partitions", 0, "grow to this many partitions")
	f.String("schema", "", "set or replace the value schema: a JSON field list, or a file holding one")
	f.Bool("clear-schema", false, "remove the value schema")
	f.String("cleanup-policy", "", "delete or compact")
	f.Int64("delete-retention-ms", 0, "compacted topics: keep tombstones this many milliseconds")
	f.Int64("min-compaction-lag-ms", 0, "compacted topics: never compact records younger than this many milliseconds")
	return cmd
}

// alterCompaction reads topic alter's cleanup policy and compaction flags.
func alterCompaction(f *pflag.FlagSet, req *admin.TopicUpdate) error {
	if f.Changed("cleanup-policy") {
		v, _ := f.GetString("cleanup-policy")
		if v != "delete" && v != "compact" {
			return fmt.Errorf("--cleanup-policy must be delete or compact, not %q", v)
		}
		p := admin.CleanupPolicy(v)
		req.CleanupPolicy = &p
	}
	if f.Changed("delete-retention-ms") {
		v := msFlag(f.GetInt64("delete-retention-ms"))
		req.DeleteRetention = &v
	}
	if f.Changed("min-compaction-lag-ms") {
		v := msFlag(f.GetInt64("min-compaction-lag-ms"))
		req.MinCompactionLag = &v
	}
	return nil
}

func newTopicListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [--format text|json]",
		Short: "List topics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			topics, err := newAdmin(cmd).ListTopics(cmd.Context())
			if err != nil {
				return clientError(cmd, "", err)
			}
			if format == "json" {
				return printProtoJSON(cmd, topicsProto(topics))
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tPARTITIONS")
			for _, t := range topics {
				fmt.Fprintf(w, "%s\t%d\n", t.Name, t.Partitions)
			}
			return w.Flush()
		},
	}
	addFormatFlag(cmd, "output format: text (a table) or json (ListTopicsResponse)")
	return cmd
}

func newTopicDescribeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe NAME [--format text|json]",
		Short: "Show a topic's configuration and partitions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			d, err := newAdmin(cmd).DescribeTopic(cmd.Context(), args[0])
			if err != nil {
				return clientError(cmd, args[0], err)
			}
			if format == "json" {
				return printProtoJSON(cmd, describeTopicProto(d))
			}
			t, c := d.Topic, d.Topic.Config
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "topic:\t%s\n", t.Name)
			fmt.Fprintf(w, "id:\t%s\n", t.ID)
			fmt.Fprintf(w, "created:\t%s\n", t.Created.UTC().Format(time.RFC3339))
			fmt.Fprintf(w, "partitions:\t%d\n", t.Partitions)
			fmt.Fprintf(w, "retention-ms:\t%s\n", limit(msOf(c.Retention), "forever"))
			fmt.Fprintf(w, "retention-bytes:\t%s\n", limit(c.RetentionBytes, "unlimited"))
			fmt.Fprintf(w, "cleanup-policy:\t%s\n", policyName(c.CleanupPolicy))
			if c.CleanupPolicy == admin.CleanupCompact {
				fmt.Fprintf(w, "delete-retention-ms:\t%d\n", msOf(c.DeleteRetention))
				fmt.Fprintf(w, "min-compaction-lag-ms:\t%d\n", msOf(c.MinCompactionLag))
			}
			fmt.Fprintf(w, "max-record-bytes:\t%s\n", limit(int64(c.MaxRecordBytes), "unlimited"))
			if sch := c.Schema; sch != nil {
				fmt.Fprintf(w, "schema:\t%s\n", sch.Fields)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout())
			w = tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(w, "PARTITION\tLOG START\tNEXT OFFSET\tBYTES\tSEGMENTS\t")
			for _, p := range d.Partitions {
				fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t\n", p.Partition, p.LogStartOffset, p.NextOffset, p.Bytes, p.Segments)
			}
			return w.Flush()
		},
	}
	addFormatFlag(cmd, "output format: text or json (DescribeTopicResponse)")
	return cmd
}

func newTopicDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a topic and its records",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := newAdmin(cmd).DeleteTopic(cmd.Context(), args[0]); err != nil {
				return clientError(cmd, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted topic %s\n", args[0])
			return nil
		},
	}
}

// plural writes "1 partition", "3 partitions".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// limit shows a setting where a negative value means no limit.
func limit(v int64, none string) string {
	if v < 0 {
		return none
	}
	return strconv.FormatInt(v, 10)
}

func policyName(p admin.CleanupPolicy) string {
	if p == "" {
		return string(admin.CleanupDelete)
	}
	return string(p)
}
