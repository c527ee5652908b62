package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{name: "invalid options are refused before any connection", args: []string{"--helper-image=x"}, wantErr: "--namespace: is required"},
		{name: "unknown flag", args: []string{"--frobnicate"}, wantErr: "flag provided but not defined"},
		{name: "stray argument", args: []string{"--namespace=d", "--helper-image=i", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, nil, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("out %q err %v", out.String(), err)
			}
		})
	}
}

// TestHelperCommand runs `dirpv helper` as a helper pod would and reads its termination message.
func TestHelperCommand(t *testing.T) {
	root, term := t.TempDir(), filepath.Join(t.TempDir(), "termination-log")
	helper := func(args ...string) (string, error) {
		err := run(context.Background(), append([]string{"helper", "--root=" + root, "--termination-log=" + term}, args...), nil, os.Stdout)
		b, _ := os.ReadFile(term)
		return string(b), err
	}
	msg, err := helper("create", "--path=ns-a", "--pv=pvc-1", "--claim-uid=1", "--mode=0750", "--uid=-1", "--gid=-1")
	if err != nil || msg != "[{}]" {
		t.Fatalf("create: %q %v", msg, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "ns-a")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("directory: %v %v", fi, err)
	}
	if m, err := volumefs.ReadMarker(mustRoot(t, root), "ns-a"); err != nil || m == nil || m.PV != "pvc-1" || m.ClaimUID != "1" {
		t.Fatalf("marker %+v %v", m, err)
	}
	// A batch (its operations run at once): each gets its own outcome, in order, and one
	// failure stops no other.
	batch := func(args ...string) []volumeop.Outcome {
		t.Helper()
		msg, err := helper(args...)
		if err != nil {
			t.Fatalf("batch: %v", err)
		}
		outs, err := volumeop.DecodeOutcomes(msg, strings.Count(strings.Join(args, " "), " -- ")+1)
		if err != nil {
			t.Fatalf("batch outcomes %q: %v", msg, err)
		}
		return outs
	}
	outs := batch(
		"delete", "--path=ns-a", "--pv=pvc-2", "--",
		"create", "--path=../escape", "--pv=pvc-3", "--",
		"create", "--path=ns-b", "--pv=pvc-4", "--claim-uid=4")
	if !strings.Contains(outs[0].Error, "not owned") || !strings.Contains(outs[1].Error, "escapes its root") || outs[2] != (volumeop.Outcome{}) {
		t.Fatalf("batch outcomes %+v", outs)
	}
	outs = batch("archive", "--path=ns-a", "--pv=pvc-1", "--now=2026-11-22T08:00:00Z", "--", "delete", "--path=ns-b", "--pv=pvc-4")
	if outs[0] != (volumeop.Outcome{Result: volumeop.Result{Archive: "archived-ns-a-20261122T080000Z"}}) || outs[1] != (volumeop.Outcome{}) {
		t.Fatalf("batch outcomes %+v", outs)
	}
	if _, err := os.Stat(filepath.Join(root, "ns-b")); !os.IsNotExist(err) {
		t.Fatalf("ns-b not deleted: %v", err)
	}
	if _, err := helper("shred", "--path=x", "--pv=p"); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Fatalf("unknown op: %v", err)
	}
	if _, err := helper("create", "--path=x", "--pv=p", "--", "--"); err == nil || !strings.Contains(err.Error(), "operation 2: missing operation") {
		t.Fatalf("empty group: %v", err)
	}
}

// TestHelperAgent: an agent's main process (--serve) runs no operation and waits until stopped;
// its batches come through --stream, which runs each request on stdin under its root.
func TestHelperAgent(t *testing.T) {
	root := t.TempDir()
	var out bytes.Buffer
	create := volumeop.Op{Kind: volumeop.Create, Path: "v", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o700, UID: -1, GID: -1}
	req, _ := json.Marshal(volumeop.Request{ID: 7, Args: volumeop.BatchArgs([]volumeop.Op{create})})
	err := run(context.Background(), []string{"helper", "--root=" + root, "--stream"}, bytes.NewReader(append(req, '\n')), &out)
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); err != nil || len(lines) != 2 || lines[0] != `{"id":0}` || lines[1] != `{"id":7,"outcomes":[{}]}` {
		t.Fatalf("--stream: %q, %v", out.String(), err)
	}
	if fi, err := os.Stat(filepath.Join(root, "v")); err != nil || !fi.IsDir() {
		t.Errorf("--stream did not make the volume: %v", err)
	}
	for _, mode := range []string{"--serve", "--stream"} {
		err = run(context.Background(), []string{"helper", mode, "create", "--path=x", "--pv=p"}, nil, &out)
		if err == nil || !strings.Contains(err.Error(), "take no operations") {
			t.Fatalf("%s with an operation: %v", mode, err)
		}
	}
	serveRoot := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"helper", "--root=" + serveRoot, "--serve"}, nil, &out) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("--serve stopped: %v", err)
	}
	if entries, _ := os.ReadDir(serveRoot); len(entries) != 0 {
		t.Errorf("--serve made %d entries in its root", len(entries))
	}
}

func mustRoot(t *testing.T, dir string) fsys.Dir {
	t.Helper()
	r, err := fsys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
