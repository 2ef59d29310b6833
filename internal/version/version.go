// Package version carries the build's version, stamped at link time with
//
//	-ldflags "-X github.com/affix-rotator/affix-rotator/internal/version.Version=v1.2.3"
//
// or, for `go install …@v1.2.3`, taken from the module version Go records
// in the binary.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version; "dev" for unstamped builds of a work tree.
var Version = "dev"

func init() {
	if Version != "dev" {
		return // stamped with -X
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		Version = bi.Main.Version
	}
}

// GoVersion is the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
