package volumefs

import (
	"os"
	"path/filepath"
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
)

// deadTemp leaves pv's temporary file for the marker of path as a writer killed mid-write does.
func deadTemp(t *testing.T, dir, path, pv, content string) string {
	t.Helper()
	tmp := filepath.Join(dir, tempName(MarkerName(path), pv))
	writeFile(t, tmp, content, 0o600)
	return tmp
}

// TestDeadWritersTemps: a temporary marker file a killed writer left behind is removed by the
// next operation of its PV, whatever that is.
func TestDeadWritersTemps(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r fsys.Dir, dir string)
	}{{
		name: "Create after a killed Create",
		run: func(t *testing.T, r fsys.Dir, dir string) {
			deadTemp(t, dir, "ns/v", "pv", `{"pv":"pv"}`)
			mustCreate(t, r, "ns/v", "pv")
			assertNames(t, dir+"/ns", "v", ".v.dirpv")
		},
	}, {
		name: "Create after a writer killed before writing",
		run: func(t *testing.T, r fsys.Dir, dir string) {
			deadTemp(t, dir, "ns/v", "pv", "")
			mustCreate(t, r, "ns/v", "pv")
			assertNames(t, dir+"/ns", "v", ".v.dirpv")
		},
	}, {
		name: "Delete after a killed Scrub",
		run: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "ns/v", "pv")
			deadTemp(t, dir, "ns/v", "pv", `{"pv":"pv","recycled":"u1"}`)
			if err := Delete(r, "ns/v", own("pv")); err != nil {
				t.Fatal(err)
			}
			assertNames(t, dir+"/ns")
		},
	}, {
		name: "Delete of a volume never made",
		run: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "ns/w", "pv-w")
			deadTemp(t, dir, "ns/v", "pv", `{"pv":"pv"}`)
			if err := Delete(r, "ns/v", own("pv")); err != nil {
				t.Fatal(err)
			}
			assertNames(t, dir+"/ns", "w", ".w.dirpv")
		},
	}, {
		name: "Scrub after a killed Scrub",
		run: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "ns/v", "pv")
			deadTemp(t, dir, "ns/v", "pv", `{"pv":"pv","recycled":"u1"}`)
			if scrubbed, err := Scrub(r, "ns/v", own("pv"), "u2"); err != nil || !scrubbed {
				t.Fatalf("Scrub = %v, %v", scrubbed, err)
			}
			assertNames(t, dir+"/ns", "v", ".v.dirpv")
		},
	}, {
		name: "another PV's writer is not ours to judge",
		run: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "ns/v", "pv")
			other := deadTemp(t, dir, "ns/v", "pv-other", `{"pv":"pv-other"}`)
			if err := Delete(r, "ns/v", own("pv")); err != nil {
				t.Fatal(err)
			}
			assertExists(t, other)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.run(t, r, dir)
		})
	}
}

// TestLiveWritersTemp: a temporary file whose writer is alive (it holds the lock) is waited
// for, never removed.
func TestLiveWritersTemp(t *testing.T) {
	r, dir, _ := testRoot(t)
	tmp := deadTemp(t, dir, "v", "pv", `{"pv":"pv"}`)
	live, err := r.OpenFile(filepath.Base(tmp), true)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := live.Lock(); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	setHook(t, &raceHook, func(point, _ string) {
		if point == "temp-wait" {
			close(waiting)
		}
	})
	done := make(chan error, 1)
	go func() { done <- Create(r, opts("v", "pv")) }()
	<-waiting
	// Create now waits for our lock; the file is still there. Finish as a writer does: the
	// name goes first, then the lock.
	assertExists(t, tmp)
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	live.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	assertNames(t, dir, "v", ".v.dirpv")
}
