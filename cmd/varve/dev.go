package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/varve-io/varve/node"
)

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run every role in one process on an embedded etcd and a local directory",
		Long: `Run a complete Varve on this machine: ingest and fetch roles, an embedded
etcd and the filesystem object store, all under --data-dir. Data survives a
restart. The API listens on --listen; the embedded etcd on the next two ports.

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
			d, err := node.StartDev(cmd.Context(), node.DevConfig{DataDir: dataDir, Listen: cfg.Listen, Node: cfg, Logger: log})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "varve dev: API on %s, data in %s (Ctrl-C to stop)\n", d.Addr(), dataDir)
			return runUntilSignal(cmd.Context(), d.Wait, d.Close, cfg.ShutdownTimeout)
		},
	}
	cmd.Flags().String("data-dir", "varve-data", "directory for etcd data and segment objects (env VARVE_DATA_DIR)")
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
