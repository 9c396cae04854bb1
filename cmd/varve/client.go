package main

import (
	"errors"
	"fmt"
	"os"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// defaultAddr is where client commands find a cluster unless told.
const defaultAddr = "http://127.0.0.1:7700"

// addClientFlags gives a client command --addr, defaulting to $VARVE_ADDR.
func addClientFlags(cmd *cobra.Command) {
	def := os.Getenv("VARVE_ADDR")
	if def == "" {
		def = defaultAddr
	}
	cmd.PersistentFlags().String("addr", def, "cluster API address, https:// for TLS, or several separated by commas (env VARVE_ADDR)")
	addSecurityFlags(cmd)
}

// newClient returns an SDK client of the cluster named by --addr.
func newClient(cmd *cobra.Command) *sdk.Client {
	addr, _ := cmd.Flags().GetString("addr")
	return sdk.New(addr, securityOptions(cmd)...)
}

// newAdmin returns an admin client of the cluster named by --addr.
func newAdmin(cmd *cobra.Command) *admin.Client {
	addr, _ := cmd.Flags().GetString("addr")
	return admin.New(addr, securityOptions(cmd)...)
}

// addFormatFlag declares --format text|json.
func addFormatFlag(cmd *cobra.Command, usage string) {
	cmd.Flags().String("format", "text", usage)
}

// outputFormat returns --format, checked.
func outputFormat(cmd *cobra.Command) (string, error) {
	f, _ := cmd.Flags().GetString("format")
	switch f {
	case "text", "json":
		return f, nil
	}
	return "", fmt.Errorf("--format must be text or json, not %q", f)
}

// clientError turns an SDK error into a message for people: the server's
// message and the Connect code, as in `topic "x" not found (not_found)`.
// topic, if not empty, names the topic the command is about.
func clientError(cmd *cobra.Command, topic string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code() {
	case connect.CodeNotFound:
		if topic != "" {
			return fmt.Errorf("topic %q not found (%s)", topic, ce.Code())
		}
	case connect.CodeAlreadyExists:
		if topic != "" {
			return fmt.Errorf("topic %q already exists (%s)", topic, ce.Code())
		}
	case connect.CodeUnauthenticated:
		return fmt.Errorf("%s (%s: give an API key with --token or VARVE_TOKEN, or a client certificate with --cert-file and --key-file)", ce.Message(), ce.Code())
	case connect.CodeUnavailable:
		if connect.IsWireError(ce) {
			// The node answered: it is up, something behind it (etcd,
			// the object store) is not.
			return fmt.Errorf("%s (%s: the node answered but cannot serve this now; retry later)", ce.Message(), ce.Code())
		}
		addr, _ := cmd.Flags().GetString("addr")
		return fmt.Errorf("%s (%s; is a node running at %s? set --addr or VARVE_ADDR)", ce.Message(), ce.Code(), addr)
	}
	return fmt.Errorf("%s (%s)", ce.Message(), ce.Code())
}

// printProtoJSON writes m as one line of JSON, unpopulated fields included.
func printProtoJSON(cmd *cobra.Command, m proto.Message) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = cmd.OutOrStdout().Write(b)
	return err
}
