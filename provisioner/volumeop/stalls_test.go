package volumeop

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"dirpv.io/dirpv/provisioner/volumefs"
)

// TestStalls: an operation blocked past its deadline (a hung NFS server) makes the next ones under
// the same name fail at once, shows in Err and Count, and clears when it finally returns; other
// names are not affected.
func TestStalls(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	s := &Stalls{now: func() time.Time { return now }}
	op := Op{Kind: Delete, Path: "ns-data", Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "uid-1"}}

	release := make(chan struct{})
	started := make(chan struct{})
	ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, errors.New("no answer from NFS export srv:/data"))
	defer cancel()
	_, err := s.run(ctx, "srv:/data", "/mnt/data", op, func() (Result, error) {
		close(started)
		<-release
		return Result{}, nil
	})
	<-started
	if err == nil || !strings.Contains(err.Error(), "no answer from NFS export srv:/data") {
		t.Fatalf("blocked operation: %v", err)
	}
	if s.Count() != 1 {
		t.Errorf("Count = %d, want 1", s.Count())
	}

	now = now.Add(3 * time.Minute)
	want := "srv:/data: delete ns-data has been blocked for 3m0s past its deadline"
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Err = %v, want it to contain %q", err, want)
	}
	called := false
	_, err = s.run(context.Background(), "srv:/data", "/mnt/data", op, func() (Result, error) { called = true; return Result{}, nil })
	if err == nil || !strings.Contains(err.Error(), want+"; not starting another operation there") || called {
		t.Errorf("next operation: called %v, err %v", called, err)
	}

	// Another export is served as usual, through the real filesystem.
	dir := t.TempDir()
	create := Op{Kind: Create, Path: "ns-other", Mode: 0o750, UID: -1, GID: -1, Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "uid-1"}}
	if _, err := s.RunLocal(context.Background(), "srv:/other", dir, create); err != nil {
		t.Fatalf("operation on another export: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ns-other")); err != nil {
		t.Error(err)
	}

	close(release)
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return s.Err() == nil, nil
	}); err != nil {
		t.Fatalf("stall not cleared after the operation returned: %v", s.Err())
	}
	if s.Count() != 0 {
		t.Errorf("Count = %d after release", s.Count())
	}
	if _, err := s.run(context.Background(), "srv:/data", "/mnt/data", op, func() (Result, error) { return Result{}, nil }); err != nil {
		t.Errorf("operation after recovery: %v", err)
	}
}
