// Command terraform-provider-varve is the Terraform provider for Varve's own
// resources (topics), served over plugin protocol 6.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/varve-io/varve/terraform/provider/internal/provider"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	debug := flag.Bool("debug", false, "run with support for debuggers like delve")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.terraform.io/varve-io/varve",
		Debug:   *debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
