//go:build tools

// Package tools pins buf, used by `make generate`. It lives in its own module
// because buf requires its own protobuf version; the protoc plugins are pinned
// in the Makefile so they match the main module's runtime.
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
)
