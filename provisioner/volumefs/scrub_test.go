package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/fsys"
)

// scrubEnv is what a Scrub fixture may point at: the root directory, the directory holding
// it, an unrelated directory outside both, and the volume "ns/v" itself (absolute). The
// sibling volume is "ns/w".
type scrubEnv struct {
	r                       fsys.Dir
	dir, outer, elsewh, vol string
}

// scrubOpts: a mode with setgid and an owner that Scrub must both keep.
func scrubOpts(path, pv string) CreateOptions {
	return CreateOptions{Path: path, Mode: 0o2770, UID: 1234, GID: 5678, Owner: owner(pv)}
}

func recycled(pv, claimUID string) Marker {
	m := owner(pv)
	m.Recycled = claimUID
	return m
}

// dirState is what Scrub must not change about the volume directory.
type dirState struct {
	mode     fs.FileMode
	uid, gid uint32
	ino      uint64
}

func stateOf(t *testing.T, path string) dirState {
	t.Helper()
	st := statT(t, path)
	return dirState{modeBits(t, path), st.Uid, st.Gid, st.Ino}
}

func linkCount(t *testing.T, path string) uint64 {
	t.Helper()
	return uint64(statT(t, path).Nlink)
}

func TestScrub(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fill  func(t *testing.T, e scrubEnv) // populate the volume like a tenant
		check func(t *testing.T, e scrubEnv) // extra checks of what must survive
	}{{
		name: "empty",
		fill: func(t *testing.T, e scrubEnv) {},
	}, {
		name: "files and nested directories",
		fill: func(t *testing.T, e scrubEnv) {
			writeFile(t, e.vol+"/a.txt", "a", 0o644)
			writeFile(t, e.vol+"/.hidden", "h", 0o600)
			writeFile(t, e.vol+"/dir/sub/f", "x", 0o644)
			writeFile(t, e.vol+"/dir/g", "x", 0o644)
			if err := os.Mkdir(e.vol+"/emptydir", 0o700); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "deep tree",
		fill: func(t *testing.T, e scrubEnv) {
			p := e.vol
			for i := range 100 {
				p = filepath.Join(p, fmt.Sprintf("d%d", i))
			}
			writeFile(t, p+"/f", "deep", 0o644)
		},
	}, {
		name: "fifos",
		fill: func(t *testing.T, e scrubEnv) {
			if err := syscall.Mkfifo(e.vol+"/fifo", 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(e.vol+"/ro-fifo", 0o000); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "read-only files and locked directories",
		fill: func(t *testing.T, e scrubEnv) {
			writeFile(t, e.vol+"/ro.txt", "x", 0o444)
			writeFile(t, e.vol+"/ro/f", "x", 0o444)
			writeFile(t, e.vol+"/ro/sub/f", "x", 0o444)
			writeFile(t, e.vol+"/locked/f", "x", 0o644)
			writeFile(t, e.vol+"/locked/sub/f", "x", 0o644)
			for p, m := range map[string]fs.FileMode{"ro/sub": 0o555, "ro": 0o555, "locked/sub": 0o000, "locked": 0o000} {
				if err := os.Chmod(filepath.Join(e.vol, p), m); err != nil {
					t.Fatal(err)
				}
			}
		},
	}, {
		name: "symlinks to slash and outside the root",
		fill: func(t *testing.T, e scrubEnv) {
			symlink(t, "/", e.vol+"/slash")
			symlink(t, e.elsewh, e.vol+"/elsewhere")
			symlink(t, e.elsewh+"/keep", e.vol+"/keepfile")
			symlink(t, e.outer, e.vol+"/outer")
			writeFile(t, e.vol+"/sub/f", "x", 0o644)
			symlink(t, e.elsewh, e.vol+"/sub/elsewhere")
		},
	}, {
		name: "symlinks to the parent",
		fill: func(t *testing.T, e scrubEnv) {
			symlink(t, "..", e.vol+"/parent")
			symlink(t, "../..", e.vol+"/root")
			symlink(t, "../../..", e.vol+"/up") // the volume is <outer>/root/ns/v
			symlink(t, "../.v.dirpv", e.vol+"/own-marker")
			symlink(t, ".", e.vol+"/self")
		},
	}, {
		name: "symlinks to a sibling volume",
		fill: func(t *testing.T, e scrubEnv) {
			symlink(t, "../w", e.vol+"/rel")
			symlink(t, filepath.Join(e.dir, "ns/w"), e.vol+"/abs")
			symlink(t, "../w/data", e.vol+"/file")
			symlink(t, "../.w.dirpv", e.vol+"/marker")
			// Symlinked subdirectories below real ones.
			writeFile(t, e.vol+"/x/y/f", "x", 0o644)
			symlink(t, "../../../w", e.vol+"/x/y/sib")
			symlink(t, filepath.Join(e.dir, "ns/w"), e.vol+"/x/sib-abs")
		},
	}, {
		name: "symlink loops and dangling symlinks",
		fill: func(t *testing.T, e scrubEnv) {
			symlink(t, "loop", e.vol+"/loop")
			symlink(t, "a", e.vol+"/b")
			symlink(t, "b", e.vol+"/a")
			symlink(t, "/nonexistent/x", e.vol+"/dangling")
		},
	}, {
		name: "hard links to files outside the volume",
		fill: func(t *testing.T, e scrubEnv) {
			if err := os.Link(e.elsewh+"/keep", e.vol+"/hard"); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(filepath.Join(e.dir, "ns/w/data"), e.vol+"/hard-sibling"); err != nil {
				t.Fatal(err)
			}
			if n := linkCount(t, e.elsewh+"/keep"); n != 2 {
				t.Fatalf("link count of the outside file = %d, want 2", n)
			}
		},
		check: func(t *testing.T, e scrubEnv) {
			for _, p := range []string{e.elsewh + "/keep", filepath.Join(e.dir, "ns/w/data")} {
				if n := linkCount(t, p); n != 1 {
					t.Errorf("link count of %s = %d, want 1", p, n)
				}
			}
		},
	}, {
		name: "files named like markers",
		fill: func(t *testing.T, e scrubEnv) {
			writeFile(t, e.vol+"/.x.dirpv", `{"pv":"pv-w"}`, 0o600)
			writeFile(t, e.vol+"/x/data", "x", 0o600)
			writeFile(t, e.vol+"/.v.dirpv", `{"pv":"pv"}`, 0o600)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, outer := testRoot(t)
			e := scrubEnv{r: r, dir: dir, outer: outer, elsewh: t.TempDir(), vol: filepath.Join(dir, "ns/v")}
			writeFile(t, e.elsewh+"/keep", "elsewhere", 0o644)
			writeFile(t, outer+"/keep", "outer", 0o644)
			mustCreate(t, r, "ns/w", "pv-w")
			writeFile(t, dir+"/ns/w/data", "sibling", 0o644)
			if err := Create(r, scrubOpts("ns/v", "pv")); err != nil {
				t.Fatal(err)
			}
			before := stateOf(t, e.vol)
			if before.mode != 0o770|fs.ModeSetgid || before.uid != 1234 || before.gid != 5678 {
				t.Fatalf("fixture: volume directory is %+v", before)
			}
			tc.fill(t, e)
			if len(names(t, e.vol)) == 0 && tc.name != "empty" {
				t.Fatal("fixture left the volume empty")
			}

			scrubbed, err := Scrub(r, "ns/v", own("pv"), "uid-pv")
			if err != nil || !scrubbed {
				t.Fatalf("Scrub = %v, %v; want true, nil", scrubbed, err)
			}
			assertNames(t, e.vol)
			if got := stateOf(t, e.vol); got != before {
				t.Errorf("volume directory changed from %+v to %+v", before, got)
			}
			if m := markerOnDisk(t, dir+"/ns/.v.dirpv"); m != recycled("pv", "uid-pv") {
				t.Errorf("marker = %+v", m)
			}
			assertNames(t, dir+"/ns", "v", ".v.dirpv", "w", ".w.dirpv")
			assertNames(t, dir, "ns")
			assertNames(t, dir+"/ns/w", "data")
			assertFile(t, dir+"/ns/w/data", "sibling")
			if m := markerOnDisk(t, dir+"/ns/.w.dirpv"); m != owner("pv-w") {
				t.Errorf("sibling marker = %+v", m)
			}
			assertNames(t, outer, "root", "keep")
			assertFile(t, outer+"/keep", "outer")
			assertNames(t, e.elsewh, "keep")
			assertFile(t, e.elsewh+"/keep", "elsewhere")
			if _, err := os.Stat("/etc/passwd"); err != nil {
				t.Errorf("/etc/passwd: %v", err)
			}
			if tc.check != nil {
				tc.check(t, e)
			}
			assertNoTempFiles(t, outer)

			// The same claim again: nothing to do.
			if scrubbed, err := Scrub(r, "ns/v", own("pv"), "uid-pv"); err != nil || scrubbed {
				t.Errorf("second Scrub = %v, %v; want false, nil", scrubbed, err)
			}
		})
	}
}

// TestScrubOncePerClaim: a repeated Scrub for the claim already scrubbed succeeds on a clean
// volume, and must neither erase nor pass over what the next claim wrote since; a Scrub for
// that next claim does erase it.
func TestScrubOncePerClaim(t *testing.T) {
	r, dir, _ := testRoot(t)
	if err := Create(r, scrubOpts("v", "pv")); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, dir+"/v")
	writeFile(t, dir+"/v/old-tenant", "old", 0o644)
	if scrubbed, err := Scrub(r, "v", own("pv"), "uid-1"); err != nil || !scrubbed {
		t.Fatalf("Scrub(uid-1) = %v, %v", scrubbed, err)
	}
	assertNames(t, dir+"/v")
	// A retry (a crash between scrub and unbind) finds it clean.
	if scrubbed, err := Scrub(r, "v", own("pv"), "uid-1"); err != nil || scrubbed {
		t.Fatalf("repeated Scrub(uid-1) = %v, %v; want false, nil", scrubbed, err)
	}

	// The next tenant writes; a late or duplicated scrub for the old claim comes in.
	writeFile(t, dir+"/v/new-tenant/data", "new", 0o644)
	for range 2 {
		scrubbed, err := Scrub(r, "v", own("pv"), "uid-1")
		if !errors.Is(err, ErrWrittenSince) || scrubbed || !strings.Contains(err.Error(), `"new-tenant"`) {
			t.Fatalf("late Scrub(uid-1) = %v, %v; want false, ErrWrittenSince naming new-tenant", scrubbed, err)
		}
	}
	assertFile(t, dir+"/v/new-tenant/data", "new")
	if m, err := ReadMarker(r, "v"); err != nil || m == nil || *m != recycled("pv", "uid-1") {
		t.Errorf("ReadMarker = %+v, %v", m, err)
	}

	// That tenant's claim is released in turn.
	if scrubbed, err := Scrub(r, "v", own("pv"), "uid-2"); err != nil || !scrubbed {
		t.Fatalf("Scrub(uid-2) = %v, %v", scrubbed, err)
	}
	assertNames(t, dir+"/v")
	if m := markerOnDisk(t, dir+"/.v.dirpv"); m != recycled("pv", "uid-2") {
		t.Errorf("marker = %+v", m)
	}
	if got := stateOf(t, dir+"/v"); got != before {
		t.Errorf("volume directory changed from %+v to %+v", before, got)
	}
	assertNames(t, dir, "v", ".v.dirpv")
}

// TestScrubBusyEntry: an entry that cannot be removed (a mount point) fails the scrub,
// names the entry, and leaves the marker as it was so that a retry scrubs again.
func TestScrubBusyEntry(t *testing.T) {
	r, dir, _ := testRoot(t)
	if err := Create(r, scrubOpts("v", "pv")); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, dir+"/v")
	writeFile(t, dir+"/v/a", "a", 0o644)
	mnt := dir + "/v/mnt"
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("cannot mount: %v", err)
		}
		t.Fatal(err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount: %v", err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	writeFile(t, mnt+"/in-mount", "x", 0o644)

	scrubbed, err := Scrub(r, "v", own("pv"), "uid-1")
	if err == nil || scrubbed {
		t.Fatalf("Scrub with a mount point inside = %v, %v; want an error", scrubbed, err)
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), `mnt`) || !errors.Is(err, errMountPoint) {
		t.Errorf("error does not name the mount point: %v", err)
	}
	// The other filesystem is not entered, let alone emptied.
	assertFile(t, mnt+"/in-mount", "x")
	if m := markerOnDisk(t, dir+"/.v.dirpv"); m != owner("pv") {
		t.Errorf("marker after a failed scrub = %+v, want it unchanged", m)
	}
	assertExists(t, mnt)
	if got := stateOf(t, dir+"/v"); got != before {
		t.Errorf("volume directory changed from %+v to %+v", before, got)
	}
	assertNoTempFiles(t, dir)

	// Once the mount is gone, the retry scrubs again.
	unmount()
	writeFile(t, dir+"/v/b", "b", 0o644)
	if scrubbed, err := Scrub(r, "v", own("pv"), "uid-1"); err != nil || !scrubbed {
		t.Fatalf("retry = %v, %v; want true, nil", scrubbed, err)
	}
	assertNames(t, dir+"/v")
	if m := markerOnDisk(t, dir+"/.v.dirpv"); m != recycled("pv", "uid-1") {
		t.Errorf("marker = %+v", m)
	}
}

func TestScrubRefuses(t *testing.T) {
	cases := append(noVolume(), notOurs()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.setup(t, r, dir)
			scrubbed, err := Scrub(r, tc.path, own("pv"), "uid-1")
			t.Logf("error: %v", err)
			if scrubbed || err == nil {
				t.Fatalf("Scrub = %v, %v; want false and an error", scrubbed, err)
			}
			if tc.wantErr != errAny && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == errAny && (errors.Is(err, ErrNotOwner) || errors.Is(err, ErrMissing)) {
				t.Errorf("err = %v, want neither ErrNotOwner nor ErrMissing", err)
			}
			if strings.Contains(err.Error(), "pv-other") {
				t.Errorf("error names another PV: %v", err)
			}
			tc.check(t, dir)
			assertNoTempFiles(t, dir)
		})
	}
}

// TestScrubNeedsOwner: without a PV name or claim UID Scrub touches nothing.
func TestScrubNeedsOwner(t *testing.T) {
	for _, tc := range []struct{ pv, claim string }{{"", "uid-1"}, {"pv", ""}} {
		r, dir, _ := testRoot(t)
		mustCreate(t, r, "v", "pv")
		writeFile(t, dir+"/v/data", "x", 0o644)
		if scrubbed, err := Scrub(r, "v", own(tc.pv), tc.claim); err == nil || scrubbed || errors.Is(err, ErrNotOwner) {
			t.Errorf("Scrub(pv %q, claim %q) = %v, %v; want an error of its own", tc.pv, tc.claim, scrubbed, err)
		}
		assertFile(t, dir+"/v/data", "x")
	}
}

func TestScrubInvalidPaths(t *testing.T) {
	r, dir, _ := testRoot(t)
	mustCreate(t, r, "v", "pv")
	writeFile(t, dir+"/v/data", "x", 0o644)
	for _, p := range []string{"", ".", "..", "/v", "/", "../v", "v/..", "a/../v", "v/", "./v", "a//v", ".v", "a/.v", ".v.dirpv"} {
		if scrubbed, err := Scrub(r, p, own("pv"), "uid-1"); !errors.Is(err, ErrInvalidPath) || scrubbed {
			t.Errorf("Scrub(%q) = %v, %v; want ErrInvalidPath", p, scrubbed, err)
		}
	}
	assertFile(t, dir+"/v/data", "x")
	assertNames(t, dir, "v", ".v.dirpv")
}

// TestScrubThenOtherOps: Create, Delete, Archive and ReadMarker work on a marker Scrub rewrote.
func TestScrubThenOtherOps(t *testing.T) {
	r, dir, _ := testRoot(t)
	for _, p := range []string{"a", "b"} {
		if err := Create(r, scrubOpts(p, "pv-"+p)); err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir+"/"+p+"/data", "x", 0o644)
		if scrubbed, err := Scrub(r, p, own("pv-"+p), "uid-1"); err != nil || !scrubbed {
			t.Fatalf("Scrub(%s) = %v, %v", p, scrubbed, err)
		}
	}
	if m, err := ReadMarker(r, "a"); err != nil || m == nil || *m != recycled("pv-a", "uid-1") {
		t.Errorf("ReadMarker = %+v, %v", m, err)
	}
	// Create: a retry by the owner re-applies the attributes; another PV is refused.
	if err := os.Chmod(dir+"/a", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Create(r, scrubOpts("a", "pv-a")); err != nil {
		t.Errorf("Create retry on a scrubbed volume: %v", err)
	}
	if got := modeBits(t, dir+"/a"); got != 0o770|fs.ModeSetgid {
		t.Errorf("mode after Create retry = %v", got)
	}
	if err := Create(r, scrubOpts("a", "pv-x")); !errors.Is(err, ErrNotOwner) {
		t.Errorf("Create by another PV: %v, want ErrNotOwner", err)
	}
	if err := Delete(r, "a", own("pv-x")); !errors.Is(err, ErrNotOwner) {
		t.Errorf("Delete by another PV: %v, want ErrNotOwner", err)
	}
	if m := markerOnDisk(t, dir+"/.a.dirpv"); m != recycled("pv-a", "uid-1") {
		t.Errorf("marker = %+v", m)
	}
	// Archive carries the rewritten marker along.
	arch, err := Archive(r, "a", own("pv-a"), archiveNow)
	if err != nil {
		t.Fatal(err)
	}
	assertGone(t, dir+"/a")
	assertGone(t, dir+"/.a.dirpv")
	want := recycled("pv-a", "uid-1")
	want.Released = "archived from a at " + archiveNow.UTC().Format(time.RFC3339)
	if m := markerOnDisk(t, filepath.Join(dir, MarkerName(arch))); m != want {
		t.Errorf("archive marker = %+v, want %+v", m, want)
	}
	if m, err := ReadMarker(r, arch); err != nil || m == nil || m.Recycled != "uid-1" {
		t.Errorf("ReadMarker(archive) = %+v, %v", m, err)
	}
	// The archive is the operator's now: neither scrubbed nor deleted through its old PV.
	if scrubbed, err := Scrub(r, arch, own("pv-a"), "uid-2"); !errors.Is(err, ErrReleased) || scrubbed {
		t.Errorf("Scrub(archive) = %v, %v; want ErrReleased", scrubbed, err)
	}
	if err := Delete(r, arch, own("pv-a")); !errors.Is(err, ErrReleased) {
		t.Errorf("Delete(archive) = %v; want ErrReleased", err)
	}
	os.RemoveAll(filepath.Join(dir, arch))
	os.Remove(filepath.Join(dir, MarkerName(arch)))
	// Delete of a scrubbed volume.
	if err := Delete(r, "b", own("pv-b")); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if scrubbed, err := Scrub(r, "b", own("pv-b"), "uid-2"); !errors.Is(err, ErrMissing) || scrubbed {
		t.Errorf("Scrub after Delete = %v, %v; want ErrMissing", scrubbed, err)
	}
	assertNames(t, dir)
	// And the name can be used again.
	mustCreate(t, r, "b", "pv-c")
	if m := markerOnDisk(t, dir+"/.b.dirpv"); m != owner("pv-c") {
		t.Errorf("new marker = %+v", m)
	}
}

// TestScrubConcurrent races Scrub against the other operations on the same volume, with the
// in-process lock and with only the marker lock (as between two processes).
func TestScrubConcurrent(t *testing.T) {
	const rounds = 50
	// filled returns a fresh root holding the volume path of PV "pv", with data and a symlink.
	filled := func(t *testing.T, path string) (r fsys.Dir, dir, outer string) {
		r, dir, outer = testRoot(t)
		if err := Create(r, scrubOpts(path, "pv")); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, path, "data/f"), "x", 0o644)
		symlink(t, "..", filepath.Join(dir, path, "up"))
		return r, dir, outer
	}
	for _, serial := range []bool{true, false} {
		t.Run(fmt.Sprintf("inprocesslock=%v", serial), func(t *testing.T) {
			setHook(t, &serializeInProcess, serial)

			t.Run("Delete", func(t *testing.T) {
				var scrubbedFirst, deletedFirst int
				for i := range rounds {
					r, dir, outer := filled(t, "ns/v")
					var scrubbed bool
					var serr, derr error
					var wg sync.WaitGroup
					wg.Go(func() { scrubbed, serr = Scrub(r, "ns/v", own("pv"), "uid-1") })
					wg.Go(func() { derr = Delete(r, "ns/v", own("pv")) })
					wg.Wait()
					if derr != nil {
						t.Errorf("round %d: Delete: %v", i, derr)
					}
					switch {
					case serr == nil && scrubbed:
						scrubbedFirst++
					case errors.Is(serr, ErrMissing) && !scrubbed:
						deletedFirst++
					default:
						t.Errorf("round %d: Scrub = %v, %v; want true, nil or ErrMissing", i, scrubbed, serr)
					}
					assertNames(t, dir+"/ns")
					assertNoTempFiles(t, outer)
				}
				t.Logf("scrub first: %d, delete first: %d", scrubbedFirst, deletedFirst)
			})

			t.Run("Archive", func(t *testing.T) {
				for i := range rounds {
					r, dir, _ := filled(t, "v")
					var scrubbed bool
					var arch string
					var serr, aerr error
					var wg sync.WaitGroup
					wg.Go(func() { scrubbed, serr = Scrub(r, "v", own("pv"), "uid-1") })
					wg.Go(func() { arch, aerr = Archive(r, "v", own("pv"), archiveNow) })
					wg.Wait()
					if aerr != nil {
						t.Fatalf("round %d: Archive: %v", i, aerr)
					}
					assertNames(t, dir, arch, "."+arch+".dirpv")
					m := markerOnDisk(t, filepath.Join(dir, MarkerName(arch)))
					if !strings.HasPrefix(m.Released, "archived from v at ") {
						t.Errorf("round %d: archive marker = %+v, want it released", i, m)
					}
					m.Released = ""
					switch {
					case serr == nil && scrubbed:
						// Scrubbed, then archived: the archive is empty and says so.
						assertNames(t, dir+"/"+arch)
						if m != recycled("pv", "uid-1") {
							t.Errorf("round %d: archive marker = %+v", i, m)
						}
					case errors.Is(serr, ErrMissing) && !scrubbed:
						assertNames(t, dir+"/"+arch, "data", "up")
						if m != owner("pv") {
							t.Errorf("round %d: archive marker = %+v", i, m)
						}
					default:
						t.Errorf("round %d: Scrub = %v, %v; want true, nil or ErrMissing", i, scrubbed, serr)
					}
				}
			})

			t.Run("Scrub of the same claim", func(t *testing.T) {
				for i := range rounds / 5 {
					r, dir, _ := filled(t, "v")
					var n atomic.Int32
					var wg sync.WaitGroup
					for range 8 {
						wg.Go(func() {
							scrubbed, err := Scrub(r, "v", own("pv"), "uid-1")
							if err != nil {
								t.Errorf("round %d: Scrub: %v", i, err)
							}
							if scrubbed {
								n.Add(1)
							}
						})
					}
					wg.Wait()
					if n.Load() != 1 {
						t.Errorf("round %d: %d Scrubs of the same claim scrubbed, want 1", i, n.Load())
					}
					assertNames(t, dir+"/v")
					if m := markerOnDisk(t, dir+"/.v.dirpv"); m != recycled("pv", "uid-1") {
						t.Errorf("round %d: marker = %+v", i, m)
					}
				}
			})

			t.Run("Create retry", func(t *testing.T) {
				for i := range rounds {
					r, dir, _ := filled(t, "v")
					var scrubbed bool
					var serr, cerr error
					var wg sync.WaitGroup
					wg.Go(func() { scrubbed, serr = Scrub(r, "v", own("pv"), "uid-1") })
					wg.Go(func() { cerr = Create(r, scrubOpts("v", "pv")) })
					wg.Wait()
					if serr != nil || !scrubbed || cerr != nil {
						t.Errorf("round %d: Scrub = %v, %v; Create: %v", i, scrubbed, serr, cerr)
					}
					assertNames(t, dir, "v", ".v.dirpv")
					assertNames(t, dir+"/v")
					if got := modeBits(t, dir+"/v"); got != 0o770|fs.ModeSetgid {
						t.Errorf("round %d: mode = %v", i, got)
					}
					if m := markerOnDisk(t, dir+"/.v.dirpv"); m != recycled("pv", "uid-1") {
						t.Errorf("round %d: marker = %+v", i, m)
					}
				}
			})
		})
	}
}

// TestScrubWaiterSeesNewMarker: another process's Scrub waits for the lock of the marker
// that our Scrub is replacing; once it gets that (old) lock it must start over on the new
// marker, see the claim recorded there and leave the volume alone, not scrub again with
// what the old marker said.
func TestScrubWaiterSeesNewMarker(t *testing.T) {
	setHook(t, &serializeInProcess, false) // as between two processes
	r, dir, _ := testRoot(t)
	if err := Create(r, scrubOpts("v", "pv")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/v/data", "x", 0o644)
	type result struct {
		scrubbed bool
		err      error
	}
	other := make(chan result, 1)
	var once sync.Once
	setHook(t, &raceHook, func(point, p string) {
		if point != "marker-rename" {
			return
		}
		once.Do(func() {
			go func() {
				scrubbed, err := Scrub(r, "v", own("pv"), "uid-1")
				other <- result{scrubbed, err}
			}()
			select {
			case res := <-other:
				t.Errorf("second Scrub did not wait for the marker lock: %+v", res)
			case <-time.After(200 * time.Millisecond):
			}
		})
	})
	if scrubbed, err := Scrub(r, "v", own("pv"), "uid-1"); err != nil || !scrubbed {
		t.Fatalf("Scrub = %v, %v", scrubbed, err)
	}
	select {
	case res := <-other:
		if res.err != nil || res.scrubbed {
			t.Errorf("waiting Scrub = %v, %v; want false, nil", res.scrubbed, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting Scrub still blocked")
	}
	if m := markerOnDisk(t, dir+"/.v.dirpv"); m != recycled("pv", "uid-1") {
		t.Errorf("marker = %+v", m)
	}
}

// TestScrubReadersSeeWholeMarkers: ReadMarker during marker rewrites always gets a whole
// marker, the old one or the new one.
func TestScrubReadersSeeWholeMarkers(t *testing.T) {
	r, dir, _ := testRoot(t)
	mustCreate(t, r, "v", "pv")
	stop := make(chan struct{})
	var reads atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, err := ReadMarker(r, "v")
				if err != nil || m == nil || m.PV != "pv" {
					t.Errorf("ReadMarker during rewrites = %+v, %v", m, err)
					return
				}
				reads.Add(1)
			}
		})
	}
	for i := range 300 {
		if scrubbed, err := Scrub(r, "v", own("pv"), fmt.Sprintf("uid-%d", i)); err != nil || !scrubbed {
			t.Fatalf("Scrub %d = %v, %v", i, scrubbed, err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reads", reads.Load())
	if m := markerOnDisk(t, dir+"/.v.dirpv"); m.Recycled != "uid-299" {
		t.Errorf("marker = %+v", m)
	}
	assertNoTempFiles(t, dir)
}

// runNonRootScrub must run as the non-root owner of dir: the permission fallback is needed
// for the tree, and for the volume directory itself (0o500, 0o000), whose mode Scrub must
// then restore.
func runNonRootScrub(t *testing.T, dir string) {
	r, err := fsys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, volMode := range []fs.FileMode{0o500, 0o000, 0o700} {
		path := fmt.Sprintf("v%d", i)
		if err := Create(r, opts(path, "pv")); err != nil {
			t.Fatal(err)
		}
		vol := filepath.Join(dir, path)
		lockedTree(t, vol) // leaves vol at 0o500
		if err := os.Chmod(vol, volMode); err != nil {
			t.Fatal(err)
		}
		// Without the fallback this cannot be removed, else the test proves nothing.
		if err := os.Remove(vol + "/ro/f"); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("plain remove in the fixture: err = %v, want a permission error", err)
		}
		before := stateOf(t, vol)
		if scrubbed, err := Scrub(r, path, own("pv"), "uid-1"); err != nil || !scrubbed {
			t.Fatalf("Scrub of a %v volume as uid %d = %v, %v", volMode, os.Geteuid(), scrubbed, err)
		}
		if got := stateOf(t, vol); got != before {
			t.Errorf("volume directory changed from %+v to %+v", before, got)
		}
		if err := os.Chmod(vol, 0o700); err != nil {
			t.Fatal(err)
		}
		assertNames(t, vol)
		if m := markerOnDisk(t, filepath.Join(dir, MarkerName(path))); m != recycled("pv", "uid-1") {
			t.Errorf("marker = %+v", m)
		}
	}
}

// TestScrubNonRootChild is the subprocess half of TestScrubNonRoot.
func TestScrubNonRootChild(t *testing.T) { nonRootChild(t, runNonRootScrub) }

// TestScrubNonRoot checks the permission fallback of Scrub as an unprivileged owner.
func TestScrubNonRoot(t *testing.T) { asNonRoot(t, "TestScrubNonRootChild", runNonRootScrub) }
