package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are set by every build of dirpv (Makefile, hack/images.sh, Dockerfile)
// with -ldflags "-X main.version=... -X main.commit=...": explicitly, since a build may run with
// GOFLAGS=-buildvcs=false or without .git (a Docker build).
var (
	version = "dev"
	commit  = "unknown"
)

// versionLine is what `dirpv --version` prints: the version, commit, Go version and platform.
func versionLine() string {
	return fmt.Sprintf("dirpv %s (commit %s, %s, %s)", version, commit, runtime.Version(), platform())
}

// platform is the binary's OCI platform, OS/ARCH[/VARIANT]: the variant of arm is its GOARM,
// which the runtime keeps only in the build information.
func platform() string {
	p := runtime.GOOS + "/" + runtime.GOARCH
	if runtime.GOARCH != "arm" {
		return p
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				// GOARM may name a float ABI too: "7,softfloat".
				return p + "/v" + strings.SplitN(s.Value, ",", 2)[0]
			}
		}
	}
	return p
}
