package main

import (
	"bytes"
	"context"
	"runtime"
	"testing"
)

// TestVersion: --version prints the version and commit the build set, the Go version and the
// platform. (The arm variant, /v7, is checked on the cross-built binary by make image-test.)
func TestVersion(t *testing.T) {
	if runtime.GOARCH == "arm" {
		t.Skip("the platform of an arm build has a variant, checked by make image-test")
	}
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "0123abc"
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	want := "dirpv v1.2.3 (commit 0123abc, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if got := out.String(); got != want {
		t.Fatalf("--version printed %q, want %q", got, want)
	}
}
