package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/sdk"
)

func newConsumeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consume TOPIC [--partition P] [--from earliest|latest|OFFSET|RFC3339-time] [--offset-reset latest|earliest|none] [--count N] [--follow] [--format text|json]",
		Short: "Print the records of a topic",
		Long: `Print the records of a topic (every partition, or --partition P).

--from chooses where to start in each partition: earliest (the default),
latest, an offset, or a time in RFC 3339 (2026-01-02T15:04:05Z: the first
record at or after it).

--offset-reset says what happens when a partition's position is out of
range (an offset past the end of the log, or before its start once
retention removed records), as Kafka's auto.offset.reset: latest (the
default) moves to the end, earliest to the log start, both with a line on
standard error; none stops with an error (exit status 1).

With --group, consume reads the partitions the group assigns, from the
group's committed offsets; --from earliest or latest says where partitions
the group never committed start (default earliest), and also how an
out-of-range committed offset is reset.

Without --follow, consume stops once it has read up to the end of each
partition as it was when the command started. With --follow it waits for new
records until interrupted. --count N stops after N records.

--format text prints each record's value on a line of its own (a null value
as an empty line). --format json prints one object per line:
  {"topic":"t","partition":0,"offset":42,"timestamp":"2026-01-02T15:04:05.123Z",
   "key":"k","value":"v"}
key and value are null when null. A key, value or header value that is not
valid UTF-8 is base64 (standard, padded), marked by "key_encoding",
"value_encoding" or the header's "value_encoding" set to "base64". Headers,
when a record has any, are "headers":[{"key":"h","value":"x"}].`,
		Args: cobra.ExactArgs(1),
		RunE: runConsume,
	}
	addClientFlags(cmd)
	f := cmd.Flags()
	f.Int32("partition", -1, "partition to read (-1: every partition)")
	f.String("from", "earliest", "where to start: earliest, latest, an offset or an RFC 3339 time")
	f.Int64("count", 0, "stop after this many records (0: no limit)")
	f.Bool("follow", false, "wait for new records until interrupted")
	addFormatFlag(cmd, "output: text (values, one per line) or json (one object per line)")
	f.String("group", "", "read as a member of this consumer group: the partitions it assigns, from its committed offsets, committing as records are printed, until interrupted")
	f.String("offset-reset", "latest", "when a position is out of range: latest, earliest or none (an error)")
	f.String("client-id", "", "with --group: a label for this member, shown by 'varve group describe'")
	return cmd
}

func runConsume(cmd *cobra.Command, args []string) error {
	topic := args[0]
	format, err := outputFormat(cmd)
	if err != nil {
		return err
	}
	f := cmd.Flags()
	partition, _ := f.GetInt32("partition")
	from, _ := f.GetString("from")
	count, _ := f.GetInt64("count")
	follow, _ := f.GetBool("follow")
	if count < 0 {
		return fmt.Errorf("--count must not be negative, got %d", count)
	}
	reset, err := sdk.ParseOffsetReset(mustString(f, "offset-reset"))
	if err != nil {
		return fmt.Errorf("--offset-reset: %w", err)
	}
	if group, _ := f.GetString("group"); group != "" {
		if partition >= 0 || follow || f.Changed("offset-reset") {
			return errors.New("--group chooses the partitions and reads until interrupted: drop --partition, --follow and --offset-reset (--from earliest|latest sets where partitions the group never committed start)")
		}
		if from != "earliest" && from != "latest" {
			return fmt.Errorf("--from %q with --group: the group's committed offsets say where to start; --from may be earliest or latest (for partitions it never committed)", from)
		}
		return consumeGroup(cmd, topic, group, format, count)
	}
	ctx := cmd.Context()
	client := newClient(cmd)
	defer client.Close()

	// The partitions to read and where each ended when we started.
	var only []int32
	if partition >= 0 {
		only = []int32{partition}
	}
	end, err := client.ListOffsets(ctx, topic, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{}, only...)
	if err != nil {
		return clientError(cmd, topic, err)
	}
	var partitions []int32
	for p := range end {
		partitions = append(partitions, p)
	}
	slices.Sort(partitions)

	// A position out of range is reset per --offset-reset, and said so.
	stderr := cmd.ErrOrStderr()
	c := client.NewConsumer(topic, sdk.ConsumerOptions{
		OffsetReset: reset,
		OnOffsetReset: func(ev sdk.OffsetResetEvent) {
			fmt.Fprintf(stderr, "consume: %s/%d: offset %d is outside the log [%d, %d); reset to %s offset %d (--offset-reset %s)\n",
				ev.Topic, ev.Partition, ev.From, ev.LogStart, ev.LogEnd, ev.Policy, ev.To, ev.Policy)
		},
	})
	defer c.Close()
	c.Assign(partitions...)
	switch from {
	case "earliest":
		err = c.SeekToStart(ctx)
	case "latest":
		for _, p := range partitions {
			c.Seek(p, end[p])
		}
	default:
		if off, perr := strconv.ParseInt(from, 10, 64); perr == nil {
			if off < 0 {
				return fmt.Errorf("--from offset must not be negative, got %d", off)
			}
			for _, p := range partitions {
				c.Seek(p, off)
			}
		} else if t, terr := time.Parse(time.RFC3339Nano, from); terr == nil {
			err = c.SeekToTime(ctx, t)
		} else {
			return fmt.Errorf("--from must be earliest, latest, an offset or an RFC 3339 time, not %q", from)
		}
	}
	if err != nil {
		return clientError(cmd, topic, err)
	}

	out := newRecordWriter(cmd, format)
	defer out.buf.Flush()
	var printed int64
	active := partitions
	// Partitions sought past their end are fetched once all the same, so
	// the offset reset policy applies (and says so) instead of nothing.
	beyond := map[int32]int64{}
	for _, p := range partitions {
		if pos := c.Position(p); pos > end[p] {
			beyond[p] = pos
		}
	}
	for {
		if !follow {
			// Read each partition only up to where it ended at the start.
			active = slices.DeleteFunc(active, func(p int32) bool {
				pos := c.Position(p)
				if at, ok := beyond[p]; ok {
					if pos == at {
						return false // not fetched yet
					}
					delete(beyond, p)
				}
				return pos >= 0 && pos >= end[p]
			})
			if len(active) == 0 {
				return nil
			}
			c.Assign(active...)
		}
		recs, err := c.Poll(ctx)
		for _, r := range recs {
			if !follow && r.Offset >= end[r.Partition] {
				continue
			}
			if werr := out.write(r); werr != nil {
				return werr
			}
			printed++
			if count > 0 && printed >= count {
				return out.buf.Flush()
			}
		}
		if ferr := out.flush(); ferr != nil {
			return ferr
		}
		if ctx.Err() != nil {
			if follow {
				return nil // interrupted: the normal end of --follow
			}
			return errors.New("interrupted")
		}
		if err != nil {
			var oor *sdk.OffsetOutOfRangeError
			if errors.As(err, &oor) {
				return fmt.Errorf("%w (--offset-reset none); read from within the log or use --offset-reset earliest or latest", oor)
			}
			return clientError(cmd, topic, err)
		}
	}
}

// consumeFromLatest reports whether --from latest was given (with --group:
// where partitions the group never committed start).
func consumeFromLatest(cmd *cobra.Command) bool {
	from, _ := cmd.Flags().GetString("from")
	return from == "latest"
}

func mustString(f *pflag.FlagSet, name string) string {
	v, _ := f.GetString(name)
	return v
}

// recordWriter prints records as consume does: with --format text each
// value on a line of its own, with json one object per line.
type recordWriter struct {
	buf  *bufio.Writer
	enc  *json.Encoder
	json bool
}

func newRecordWriter(cmd *cobra.Command, format string) *recordWriter {
	buf := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return &recordWriter{buf: buf, enc: enc, json: format == "json"}
}

func (w *recordWriter) write(r sdk.Record) error {
	if w.json {
		return w.enc.Encode(toJSONRecord(r))
	}
	w.buf.Write(r.Value)
	w.buf.WriteByte('\n')
	return nil
}

// flush writes out what is buffered, at the end of each batch.
func (w *recordWriter) flush() error {
	if err := w.buf.Flush(); err != nil {
		return fmt.Errorf("write standard output: %w", err)
	}
	return nil
}

type jsonRecord struct {
	Topic         string       `json:"topic"`
	Partition     int32        `json:"partition"`
	Offset        int64        `json:"offset"`
	Timestamp     string       `json:"timestamp"`
	Key           *string      `json:"key"`
	KeyEncoding   string       `json:"key_encoding,omitempty"`
	Value         *string      `json:"value"`
	ValueEncoding string       `json:"value_encoding,omitempty"`
	Headers       []jsonHeader `json:"headers,omitempty"`
}

type jsonHeader struct {
	Key           string  `json:"key"`
	Value         *string `json:"value"`
	ValueEncoding string  `json:"value_encoding,omitempty"`
}

func toJSONRecord(r sdk.Record) jsonRecord {
	j := jsonRecord{
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		Timestamp: r.Timestamp.UTC().Format(time.RFC3339Nano),
	}
	j.Key, j.KeyEncoding = jsonBytes(r.Key)
	j.Value, j.ValueEncoding = jsonBytes(r.Value)
	for _, h := range r.Headers {
		jh := jsonHeader{Key: h.Key}
		jh.Value, jh.ValueEncoding = jsonBytes(h.Value)
		j.Headers = append(j.Headers, jh)
	}
	return j
}

// jsonBytes shows b as a string: nil for null, base64 (with encoding
// "base64") when it is not valid UTF-8.
func jsonBytes(b []byte) (*string, string) {
	if b == nil {
		return nil, ""
	}
	if utf8.Valid(b) {
		s := string(b)
		return &s, ""
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s, "base64"
}
