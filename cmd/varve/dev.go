package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/varve-io/varve/node"
)

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run every role in one process on an embedded etcd and a local directory",
		Long: `Run a complete Varve on this machine: every role (ingest, fetch,
sequence, and compact: compaction, retention and garbage collection; commits
go through the sequencer unless --commit-path direct), an embedded etcd and
the filesystem object store, all under --data-dir. Data survives a restart.
The API listens on --listen; the embedded etcd on the next two ports (client
on port+1, peer on port+2); Kafka clients connect to --kafka-listen, by
default 127.0.0.1:9092 with the default --listen, else the --listen host
on port+3 (off: none).

One process per data directory: it holds a lock on DATA_DIR/varve.lock (with
its pid inside), and a second 'varve dev' on the same directory exits at once.
Each start-up step gives up after --start-timeout, or at Ctrl-C / SIGTERM.

The embedded etcd preallocates its WAL in 64 MB segments (the current one and
the next), about 130 MB on a fresh directory. When the disk fills, produce is
refused with RESOURCE_EXHAUSTED ("no space left on device writing segment
...") while reads go on; writes are refused already when less than
--min-free-bytes would remain, which keeps room for etcd (it stops the process
when it cannot write). Writes resume by themselves once space is freed.

Node settings (--flush-bytes, --linger, ...) work as for 'varve serve'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dataDir, _ := cmd.Flags().GetString("data-dir")
			if env := os.Getenv("VARVE_DATA_DIR"); env != "" && !cmd.Flags().Changed("data-dir") {
				dataDir = env
			}
			// The node settings; etcd endpoints and store are dev's own.
			cfg, err := loadNodeConfig(cmd.Flags())
			if err != nil {
				return err
			}
			log, err := newLogger(cfg)
			if err != nil {
				return err
			}
			startTimeout, _ := cmd.Flags().GetDuration("start-timeout")
			minFree, _ := cmd.Flags().GetInt64("min-free-bytes")
			if minFree == 0 {
				minFree = -1 // the flag's 0 means none; DevConfig's means the default
			}
			d, err := node.StartDev(cmd.Context(), node.DevConfig{
				DataDir: dataDir, Listen: cfg.Listen, Node: cfg, Logger: log,
				StartTimeout: startTimeout, MinFreeBytes: minFree,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "varve dev: API on %s, data in %s (Ctrl-C to stop)\n", d.Addr(), dataDir)
			devSecurityNote(cmd, cfg)
			return runUntilSignal(cmd.Context(), d.Wait, d.Close, cfg.ShutdownTimeout)
		},
	}
	cmd.Flags().String("data-dir", "varve-data", "directory for etcd data and segment objects (env VARVE_DATA_DIR)")
	cmd.Flags().Duration("start-timeout", 60*time.Second, "give up starting (embedded etcd, node) after this long")
	cmd.Flags().Int64("min-free-bytes", node.DefaultDevMinFreeBytes, "refuse writes (RESOURCE_EXHAUSTED) that would leave less free space than this on the data directory's file system, so the embedded etcd always has room; 0: no reserve")
	addNodeFlags(cmd.Flags())
	devPProf(cmd.Flags())
	for _, f := range []string{"roles", "etcd-endpoints", "store", "bucket", "s3-endpoint", "s3-region", "s3-path-style"} {
		_ = cmd.Flags().MarkHidden(f)
	}
	return cmd
}

// devPProf turns /debug/pprof on by default for `varve dev` (a setting,
// flag, variable or file key still turns it off).
func devPProf(fs *pflag.FlagSet) {
	f := fs.Lookup("pprof")
	_ = f.Value.Set("true")
	f.DefValue = "true"
	f.Usage = "serve /debug/pprof on the API address"
}
