package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/internal/obs"
)

// addVersion gives root `varve version` and `varve --version`, both
// printing the module version, VCS revision and Go version (the same as
// varve_build_info on /metrics).
func addVersion(root *cobra.Command) {
	b := obs.BuildInfo()
	root.Version = b.Version
	root.SetVersionTemplate(b.String() + "\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), b.String())
			return err
		},
	})
}
