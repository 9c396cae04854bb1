package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/sdk/admin"
)

func newAPIKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apikey",
		Short: "Create, list and revoke API keys (auth token; needs admin on the cluster)",
		Args:  cobra.NoArgs,
	}
	addClientFlags(cmd)
	create := &cobra.Command{
		Use:   "create --principal NAME",
		Short: "Create an API key; its token is printed once (the cluster keeps only a salted hash)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, _ := cmd.Flags().GetString("principal")
			if p == "" {
				return fmt.Errorf("--principal is required")
			}
			a := newAdmin(cmd)
			defer a.Close()
			k, tok, err := a.CreateAPIKey(cmd.Context(), p)
			if err != nil {
				return clientError(cmd, "", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created API key %s for principal %s; the token below is shown once, store it now:\n", k.ID, k.Principal)
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	create.Flags().String("principal", "", "the principal the key authenticates as")
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (ids and principals, never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a := newAdmin(cmd)
			defer a.Close()
			ks, err := a.ListAPIKeys(cmd.Context())
			if err != nil {
				return clientError(cmd, "", err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPRINCIPAL\tCREATED")
			for _, k := range ks {
				fmt.Fprintf(w, "%s\t%s\t%s\n", k.ID, k.Principal, k.Created.UTC().Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key on every node (within seconds)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a := newAdmin(cmd)
			defer a.Close()
			k, err := a.RevokeAPIKey(cmd.Context(), args[0])
			if err != nil {
				return clientError(cmd, "", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked API key %s of principal %s\n", k.ID, k.Principal)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Add, list and remove ACLs (needs admin on the cluster)",
		Long: `ACLs allow or deny a principal an operation on a resource; a deny wins.
Resources: cluster, topic:NAME, topic:PREFIX*, topic:* (every topic), group:NAME,
group:PREFIX*. Operations: produce, consume, describe, alter, delete, admin.
Describe is implied by any other allowed operation on the same resource;
admin on the cluster allows everything (docs/security.md).`,
		Args: cobra.NoArgs,
	}
	addClientFlags(cmd)
	add := &cobra.Command{
		Use:   "add --principal NAME --resource RES --operation OP [--deny]",
		Short: "Add an ACL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			var acl admin.ACL
			acl.Principal, _ = f.GetString("principal")
			acl.Resource, _ = f.GetString("resource")
			acl.Operation, _ = f.GetString("operation")
			acl.Effect = "allow"
			if deny, _ := f.GetBool("deny"); deny {
				acl.Effect = "deny"
			}
			a := newAdmin(cmd)
			defer a.Close()
			got, err := a.AddACL(cmd.Context(), acl)
			if err != nil {
				return clientError(cmd, "", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added acl %s: %s %s %s on %s\n", got.ID, got.Effect, got.Principal, got.Operation, got.Resource)
			return nil
		},
	}
	add.Flags().String("principal", "", "principal, or * for every authenticated principal")
	add.Flags().String("resource", "", "cluster, topic:NAME, topic:PREFIX*, group:NAME or group:PREFIX*")
	add.Flags().String("operation", "", "produce, consume, describe, alter, delete or admin")
	add.Flags().Bool("deny", false, "deny instead of allow (a deny wins)")
	list := &cobra.Command{
		Use:   "list [--principal NAME]",
		Short: "List ACLs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, _ := cmd.Flags().GetString("principal")
			a := newAdmin(cmd)
			defer a.Close()
			acls, err := a.ListACLs(cmd.Context(), p)
			if err != nil {
				return clientError(cmd, "", err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPRINCIPAL\tRESOURCE\tOPERATION\tEFFECT")
			for _, x := range acls {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", x.ID, x.Principal, x.Resource, x.Operation, x.Effect)
			}
			return w.Flush()
		},
	}
	list.Flags().String("principal", "", "only this principal's ACLs")
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove an ACL",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a := newAdmin(cmd)
			defer a.Close()
			x, err := a.RemoveACL(cmd.Context(), args[0])
			if err != nil {
				return clientError(cmd, "", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed acl %s: %s %s %s on %s\n", x.ID, x.Effect, x.Principal, x.Operation, x.Resource)
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}
