package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
)

// deleteEnv holds what a Delete fixture may point at: a sibling volume "w", the directory
// holding the root, and an unrelated directory outside the root.
type deleteEnv struct {
	r                  fsys.Dir
	dir, outer, elsewh string
}

func TestDelete(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fill  func(t *testing.T, e deleteEnv, vol string) // populate the volume like a tenant
		check func(t *testing.T, e deleteEnv)             // what must survive
	}{{
		name: "empty",
		fill: func(t *testing.T, e deleteEnv, vol string) {},
	}, {
		name: "deep tree",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			p := vol
			for i := range 50 {
				p = filepath.Join(p, fmt.Sprintf("d%d", i))
				writeFile(t, filepath.Join(p, "f"), "x", 0o644)
			}
		},
	}, {
		name: "read-only and locked directories",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			writeFile(t, vol+"/ro.txt", "x", 0o444)
			writeFile(t, vol+"/ro/f", "x", 0o444)
			writeFile(t, vol+"/ro/sub/f", "x", 0o444)
			writeFile(t, vol+"/locked/f", "x", 0o644)
			writeFile(t, vol+"/locked/sub/f", "x", 0o644)
			os.Chmod(vol+"/ro/sub", 0o555)
			os.Chmod(vol+"/ro", 0o555)
			os.Chmod(vol+"/locked/sub", 0o000)
			os.Chmod(vol+"/locked", 0o000)
			os.Chmod(vol, 0o555)
		},
	}, {
		name: "symlinks to a sibling volume",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			symlink(t, "../w", vol+"/rel")
			symlink(t, filepath.Join(e.dir, "w"), vol+"/abs")
			symlink(t, "../w/data", vol+"/file")
			symlink(t, "../.w.dirpv", vol+"/marker")
		},
	}, {
		name: "symlinks to the root's parent",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			symlink(t, "../../..", vol+"/up") // vol is <outer>/root/ns/v
			symlink(t, e.outer, vol+"/abs")
			symlink(t, "../..", vol+"/root")
			symlink(t, "..", vol+"/parent")
			symlink(t, ".", vol+"/self")
		},
	}, {
		name: "symlink to slash",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			symlink(t, "/", vol+"/slash")
			symlink(t, e.elsewh, vol+"/elsewhere")
			symlink(t, e.elsewh+"/keep", vol+"/keepfile")
		},
	}, {
		name: "symlink loop and dangling symlink",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			symlink(t, "loop", vol+"/loop")
			symlink(t, "a", vol+"/b")
			symlink(t, "b", vol+"/a")
			symlink(t, "/nonexistent/x", vol+"/dangling")
		},
	}, {
		name: "hard link to a file outside the volume",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			if err := os.Link(e.elsewh+"/keep", vol+"/hard"); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(filepath.Join(e.dir, "w/data"), vol+"/hard-sibling"); err != nil {
				t.Fatal(err)
			}
			os.Chmod(vol+"/hard", 0o000) // chmod on a hard link changes the shared inode
		},
		check: func(t *testing.T, e deleteEnv) {
			os.Chmod(e.elsewh+"/keep", 0o644)
		},
	}, {
		name: "fifo and socket-like specials",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			if err := syscall.Mkfifo(vol+"/fifo", 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(vol+"/ro-fifo", 0o000); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "files named like markers",
		fill: func(t *testing.T, e deleteEnv, vol string) {
			writeFile(t, vol+"/.x.dirpv", `{"pv":"pv-w"}`, 0o600)
			writeFile(t, vol+"/x/data", "x", 0o600)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, outer := testRoot(t)
			e := deleteEnv{r: r, dir: dir, outer: outer, elsewh: t.TempDir()}
			writeFile(t, e.elsewh+"/keep", "elsewhere", 0o644)
			writeFile(t, outer+"/keep", "outer", 0o644)
			mustCreate(t, r, "w", "pv-w")
			writeFile(t, dir+"/w/data", "sibling", 0o644)
			mustCreate(t, r, "ns/v", "pv")
			vol := filepath.Join(dir, "ns/v")
			tc.fill(t, e, vol)

			if err := Delete(r, "ns/v", own("pv")); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			assertGone(t, vol)
			assertGone(t, filepath.Join(dir, "ns/.v.dirpv"))
			assertNames(t, filepath.Join(dir, "ns"))
			if tc.check != nil {
				tc.check(t, e)
			}
			assertNames(t, dir, "ns", "w", ".w.dirpv")
			assertFile(t, dir+"/w/data", "sibling")
			if m := markerOnDisk(t, dir+"/.w.dirpv"); m.PV != "pv-w" {
				t.Errorf("sibling marker = %+v", m)
			}
			assertNames(t, outer, "root", "keep")
			assertFile(t, outer+"/keep", "outer")
			assertFile(t, e.elsewh+"/keep", "elsewhere")
			if _, err := os.Stat("/etc"); err != nil {
				t.Errorf("/etc: %v", err)
			}

			// Deleting again is a no-op.
			if err := Delete(r, "ns/v", own("pv")); err != nil {
				t.Errorf("second Delete: %v", err)
			}
		})
	}
}

func TestDeleteRefusesOrSkips(t *testing.T) {
	cases := append([]refusal{{
		name:  "never existed",
		setup: func(t *testing.T, r fsys.Dir, dir string) {},
		path:  "v",
		check: func(t *testing.T, dir string) { assertNames(t, dir) },
	}, {
		name:  "parent missing",
		setup: func(t *testing.T, r fsys.Dir, dir string) {},
		path:  "no/such/v",
		check: func(t *testing.T, dir string) { assertNames(t, dir) },
	}, {
		name:  "parent is a file",
		setup: func(t *testing.T, r fsys.Dir, dir string) { writeFile(t, dir+"/f", "x", 0o644) },
		path:  "f/v",
		check: func(t *testing.T, dir string) { assertFile(t, dir+"/f", "x") },
	}, {
		name:  "only our marker left",
		setup: func(t *testing.T, r fsys.Dir, dir string) { writeFile(t, dir+"/.v.dirpv", `{"pv":"pv"}`, 0o600) },
		path:  "v",
		check: func(t *testing.T, dir string) { assertNames(t, dir) },
	}, {
		name:    "only another PV's marker left",
		setup:   func(t *testing.T, r fsys.Dir, dir string) { writeFile(t, dir+"/.v.dirpv", `{"pv":"pv-other"}`, 0o600) },
		path:    "v",
		wantErr: ErrNotOwner,
		check:   func(t *testing.T, dir string) { assertNames(t, dir, ".v.dirpv") },
	}}, notOurs()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.setup(t, r, dir)
			err := Delete(r, tc.path, own("pv"))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Errorf("Delete: %v", err)
			case tc.wantErr == errAny && err == nil:
				t.Error("Delete succeeded")
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Errorf("Delete: err = %v, want %v", err, tc.wantErr)
			}
			t.Logf("error: %v", err)
			tc.check(t, dir)
		})
	}
}

var errAny = errors.New("any error")

// lockedTree fills dir with what a non-root owner cannot simply remove.
func lockedTree(t *testing.T, dir string) {
	writeFile(t, dir+"/ro/f", "x", 0o444)
	writeFile(t, dir+"/ro/deep/f", "x", 0o444)
	writeFile(t, dir+"/locked/f", "x", 0o644)
	writeFile(t, dir+"/locked/sub/f", "x", 0o644)
	symlink(t, "../ro", dir+"/locked/link")
	for _, c := range []struct {
		p string
		m fs.FileMode
	}{{"ro/deep", 0o555}, {"ro", 0o555}, {"locked/sub", 0o000}, {"locked", 0o000}, {"", 0o500}} {
		if err := os.Chmod(filepath.Join(dir, c.p), c.m); err != nil {
			t.Fatal(err)
		}
	}
}

// runNonRootDelete must run as the non-root owner of dir.
func runNonRootDelete(t *testing.T, dir string) {
	r, err := fsys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Without the fallback this fixture cannot be removed: otherwise the test proves nothing.
	if err := os.Mkdir(dir+"/probe", 0o755); err != nil {
		t.Fatal(err)
	}
	lockedTree(t, dir+"/probe")
	if err := os.RemoveAll(dir + "/probe"); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("plain RemoveAll of the fixture: err = %v, want a permission error", err)
	}
	if err := removeVolume(volume{path: "probe", dir: r, base: "probe"}); err != nil {
		t.Fatal(err)
	}
	assertGone(t, dir+"/probe")

	if err := Create(r, opts("ns/v", "pv")); err != nil {
		t.Fatal(err)
	}
	lockedTree(t, dir+"/ns/v")
	if err := Delete(r, "ns/v", own("pv")); err != nil {
		t.Fatalf("Delete as uid %d: %v", os.Geteuid(), err)
	}
	assertNames(t, dir+"/ns")
}

// TestDeleteNonRootChild is the subprocess half of TestDeleteNonRoot.
func TestDeleteNonRootChild(t *testing.T) { nonRootChild(t, runNonRootDelete) }

// TestDeleteNonRoot checks the permission fallback of Delete as an unprivileged owner.
func TestDeleteNonRoot(t *testing.T) { asNonRoot(t, "TestDeleteNonRootChild", runNonRootDelete) }
