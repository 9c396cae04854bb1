package obs

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time by `make build`:
//
//	-ldflags "-X github.com/varve-io/varve/internal/obs.version=v1.2.3
//	          -X github.com/varve-io/varve/internal/obs.revision=<git commit>"
//
// The Makefile builds with -buildvcs=false, so Go's own VCS stamp is absent
// from its binaries; these two carry the same facts. Binaries built another
// way fall back to the module version and VCS stamp Go records (go install
// module@version records the version; a plain go build in a git checkout
// records the revision).
var (
	version  string
	revision string
)

// Build describes the running binary.
type Build struct {
	// Version is the module version (v1.2.3, a pseudo-version, or (devel)
	// for a build from a work tree without a tag).
	Version string
	// Revision is the VCS commit the binary was built from ("unknown" when
	// neither the linker nor Go recorded it); "-dirty" marks local changes.
	Revision string
	// GoVersion is the Go release that built it.
	GoVersion string
}

// BuildInfo returns the version, revision and Go version of the binary.
func BuildInfo() Build {
	b := Build{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			b.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			b.GoVersion = bi.GoVersion
		}
		var rev string
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			if modified {
				rev += "-dirty"
			}
			b.Revision = rev
		}
	}
	if version != "" {
		b.Version = version
	}
	if revision != "" {
		b.Revision = revision
	}
	return b
}

// String is the one line `varve version` prints.
func (b Build) String() string {
	return fmt.Sprintf("varve %s (revision %s, %s %s/%s)", b.Version, b.Revision, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}
