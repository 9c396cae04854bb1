package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

func newProduceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "produce TOPIC [--partition P] [--key K] [--format text|json]",
		Short: "Produce one record per line of standard input",
		Long: `Produce one record per line of standard input: the value is the line
without its newline (an empty line is an empty value). Lines may be as long
as the topic's max-record-bytes.

Records are batched and retried like any SDK producer's, each for at most
--delivery-timeout. The command exits 0 only when every record is
acknowledged, that is stored and committed. At the first record that fails
it stops reading, prints how many records were acknowledged and why the
rest were not, and exits 1 (within the delivery timeout of the records
sent). --addr may list several nodes (a,b,c): a node that does not answer
is replaced by the next.

--format text prints "N records acknowledged" to standard error.
--format json prints one line per acknowledged record, in input order:
  {"partition":P,"offset":O}`,
		Args: cobra.ExactArgs(1),
		RunE: runProduce,
	}
	addClientFlags(cmd)
	cmd.Flags().Int32("partition", sdk.AnyPartition, "partition to produce to (-1: chosen by murmur2 of the key as in Kafka, or sticky without --key)")
	cmd.Flags().String("key", "", "key of every record (default: no key)")
	cmd.Flags().Duration("delivery-timeout", sdk.DefaultDeliveryTimeout, "give up on a record not acknowledged within this time")
	addFormatFlag(cmd, "output: text (a summary on stderr) or json (one line per record on stdout)")
	return cmd
}

// produceRun tracks the records of one `varve produce` and prints their
// results in input order.
type produceRun struct {
	mu       sync.Mutex
	json     bool
	out      *bufio.Writer
	base     int // input index of results[0]
	results  []produceResult
	acked    int
	failed   int
	firstErr error
	stop     func() // called at the first failure
}

type produceResult struct {
	done      bool
	err       error
	partition int32
	offset    int64
}

// add reserves the result slot of the next input record and returns its index.
func (r *produceRun) add() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, produceResult{})
	return r.base + len(r.results) - 1
}

// done records the outcome of record i and prints every leading result
// that is complete.
func (r *produceRun) done(i int, rec sdk.Record, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[i-r.base] = produceResult{done: true, err: err, partition: rec.Partition, offset: rec.Offset}
	if err != nil {
		r.failed++
		if r.firstErr == nil {
			r.firstErr = err
			r.stop()
		}
	} else {
		r.acked++
	}
	n := 0
	for n < len(r.results) && r.results[n].done {
		if res := r.results[n]; res.err == nil && r.json {
			fmt.Fprintf(r.out, "{\"partition\":%d,\"offset\":%d}\n", res.partition, res.offset)
		}
		n++
	}
	r.results = r.results[n:]
	r.base += n
	if len(r.results) == 0 {
		r.results = nil
		_ = r.out.Flush() // caught up: show the results now
	}
}

func runProduce(cmd *cobra.Command, args []string) error {
	topic := args[0]
	format, err := outputFormat(cmd)
	if err != nil {
		return err
	}
	partition, _ := cmd.Flags().GetInt32("partition")
	if partition < -1 {
		return fmt.Errorf("--partition must be a partition (0 or more) or -1 (chosen by key), got %d", partition)
	}
	var key []byte
	if cmd.Flags().Changed("key") {
		k, _ := cmd.Flags().GetString("key")
		key = []byte(k)
	}
	ctx := cmd.Context()
	client := newClient(cmd)
	defer client.Close()
	// Fail fast on an unknown topic, and learn its record size limit.
	d, err := admin.NewFromClient(client).DescribeTopic(ctx, topic)
	if err != nil {
		return clientError(cmd, topic, err)
	}
	maxRecord := int(d.Topic.Config.MaxRecordBytes)

	timeout, _ := cmd.Flags().GetDuration("delivery-timeout")
	if timeout <= 0 {
		return fmt.Errorf("--delivery-timeout must be positive, got %s", timeout)
	}
	// readCtx ends at the first failed record: reading stops there.
	readCtx, stop := context.WithCancel(ctx)
	defer stop()
	run := &produceRun{json: format == "json", out: bufio.NewWriter(cmd.OutOrStdout()), stop: stop}
	p := client.NewProducer(sdk.ProducerOptions{DeliveryTimeout: timeout})
	readErr := make(chan error, 1)
	go func() {
		in := bufio.NewReaderSize(cmd.InOrStdin(), 64<<10)
		for line := 1; ; line++ {
			b, err := in.ReadBytes('\n')
			if len(b) > 0 || err == nil {
				value := bytes.TrimSuffix(b, []byte{'\n'})
				if maxRecord > 0 && len(key)+len(value) > maxRecord {
					readErr <- fmt.Errorf("line %d: record of %d bytes exceeds the max-record-bytes %d of topic %q", line, len(key)+len(value), maxRecord, topic)
					return
				}
				i := run.add()
				rec := sdk.Record{Topic: topic, Key: key, Value: value}
				if partition >= 0 {
					rec.Partition, rec.ExplicitPartition = partition, true
				}
				p.Produce(readCtx, rec, func(rec sdk.Record, err error) {
					run.done(i, rec, err)
				})
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				} else {
					err = fmt.Errorf("read standard input: %w", err)
				}
				readErr <- err
				return
			}
			if readCtx.Err() != nil {
				readErr <- readCtx.Err()
				return
			}
		}
	}()
	var inErr error
	select {
	case inErr = <-readErr:
	case <-readCtx.Done():
	}
	if ctx.Err() != nil {
		inErr = errors.New("interrupted")
	}
	closeCtx := ctx
	if readCtx.Err() != nil && ctx.Err() == nil {
		// A record failed: give up on the rest at once.
		closeCtx = readCtx
	} else if ctx.Err() != nil {
		// Interrupted: give what was read a moment, then give up.
		var cancel context.CancelFunc
		closeCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
	}
	closeErr := p.Close(closeCtx)

	run.mu.Lock()
	defer run.mu.Unlock()
	if err := run.out.Flush(); err != nil && inErr == nil {
		inErr = fmt.Errorf("write standard output: %w", err)
	}
	total := run.acked + run.failed
	if format == "text" || run.firstErr != nil {
		noun := "records"
		if run.acked == 1 {
			noun = "record"
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "%d %s acknowledged\n", run.acked, noun)
	}
	switch {
	case run.firstErr != nil:
		why := clientError(cmd, topic, run.firstErr)
		if errors.Is(run.firstErr, sdk.ErrDeliveryTimeout) {
			why = fmt.Errorf("not acknowledged within the delivery timeout (%s), last error: %w", timeout, why)
		}
		return fmt.Errorf("%d of %d records read not acknowledged (stopped reading at the first failure): %w", run.failed, total, why)
	case inErr != nil:
		return inErr
	case closeErr != nil:
		return clientError(cmd, topic, closeErr)
	}
	return nil
}
