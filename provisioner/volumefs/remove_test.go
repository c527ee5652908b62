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
	"testing"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/fsys"
)

// deepTree makes depth nested directories "d" below dir, with a file at every 1000th level
// and at the bottom, holding one descriptor at a time (the path is far longer than PATH_MAX).
func deepTree(t *testing.T, dir string, depth int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= depth; i++ {
		if i%1000 == 0 || i == depth {
			f, err := unix.Openat(fd, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(f)
		}
		if i == depth {
			break
		}
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
}

// fastRoot is testRoot on a tmpfs where there is one (/dev/shm): a journalled filesystem
// spends most of a deep tree's time in its journal.
func fastRoot(t *testing.T) (fsys.Dir, string) {
	t.Helper()
	base, err := os.MkdirTemp("/dev/shm", "volumefs-")
	if err != nil {
		r, dir, _ := testRoot(t)
		return r, dir
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	r, err := fsys.OpenLocal(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, base
}

// withOpenFileLimit lowers the soft limit on open files for the rest of the test.
func withOpenFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}

// TestDeepTree: a tenant's tree far deeper than the open-file limit is removed by Delete and
// Scrub, with a few descriptors and in time linear in its size.
func TestDeepTree(t *testing.T) {
	const depth = 50_000
	r, dir := fastRoot(t)
	mustCreate(t, r, "w", "pv-w")
	writeFile(t, dir+"/w/data", "sibling", 0o644)
	mustCreate(t, r, "v", "pv")
	deepTree(t, dir+"/v", depth)
	if err := Create(r, scrubOpts("s", "pv-s")); err != nil {
		t.Fatal(err)
	}
	deepTree(t, dir+"/s", depth)
	withOpenFileLimit(t, 1024)

	// Premise: a walk holding a descriptor per level cannot remove it under this limit.
	if err := os.RemoveAll(dir + "/v/d/d"); err == nil {
		t.Fatal("os.RemoveAll removed the deep tree: the limit does not bite, the test proves nothing")
	} else {
		t.Logf("os.RemoveAll: %v", err)
	}

	if err := Delete(r, "v", own("pv")); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if scrubbed, err := Scrub(r, "s", own("pv-s"), "uid-1"); err != nil || !scrubbed {
		t.Fatalf("Scrub = %v, %v", scrubbed, err)
	}
	assertNames(t, dir, "w", ".w.dirpv", "s", ".s.dirpv")
	assertNames(t, dir+"/s")
	assertFile(t, dir+"/w/data", "sibling")
}

// TestRemoveStaysInside: directories a tenant moves within its volume while it is removed
// cannot lead the walk out of it. Going back up from a directory the tenant moved closer to
// the top, a walk that counts levels would climb past the top into the root, where a sibling
// volume has entries named like the tenant's.
func TestRemoveStaysInside(t *testing.T) {
	for _, op := range []string{"delete", "scrub"} {
		t.Run(op, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			if err := Create(r, scrubOpts("b", "pv-b")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir+"/b/c/data", "sibling", 0o644)
			writeFile(t, dir+"/b/a/data", "sibling", 0o644)
			if err := Create(r, scrubOpts("v", "pv")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir+"/v/a/b/c/d/f", "x", 0o644)
			writeFile(t, dir+"/v/a/b/c/e", "x", 0o644)
			moved := 0
			setHook(t, &raceHook, func(point, name string) {
				if point == "remove-leave" && name == "d" && moved == 0 {
					moved++
					if err := os.Rename(dir+"/v/a/b/c", dir+"/v/c"); err != nil {
						t.Error(err)
					}
				}
			})
			var err error
			if op == "delete" {
				err = Delete(r, "v", own("pv"))
				assertGone(t, dir+"/v")
			} else {
				_, err = Scrub(r, "v", own("pv"), "uid-1")
				assertNames(t, dir+"/v")
			}
			if err != nil {
				t.Fatal(err)
			}
			if moved != 1 {
				t.Fatal("the tree was never moved: the test proves nothing")
			}
			assertFile(t, dir+"/b/c/data", "sibling")
			assertFile(t, dir+"/b/a/data", "sibling")
		})
	}
}

// TestRemoveLeavesMountsAlone: another filesystem mounted inside a volume is not entered.
func TestRemoveLeavesMountsAlone(t *testing.T) {
	r, dir, _ := testRoot(t)
	mustCreate(t, r, "v", "pv")
	mnt := dir + "/v/a/mnt"
	writeFile(t, mnt+"/.keep", "", 0o644)
	os.Remove(mnt + "/.keep")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	writeFile(t, mnt+"/other-fs", "x", 0o644)
	writeFile(t, dir+"/v/a/f", "x", 0o644)

	err := Delete(r, "v", own("pv"))
	if err == nil || !strings.Contains(err.Error(), "a/mnt") {
		t.Fatalf("Delete = %v; want an error naming a/mnt", err)
	}
	assertFile(t, mnt+"/other-fs", "x")
	assertGone(t, dir+"/v/a/f")
	assertExists(t, dir+"/.v.dirpv")
}

// chmodSwapRounds run Delete and Scrub as a non-root owner on volumes full of mode-000
// directories (so the permission fallback must change modes) while a racer keeps swapping
// those directories for hard links to a file outside the volume. The outside file's mode must
// never change.
func runChmodSwap(t *testing.T, dir string) {
	r, err := fsys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustCreate(t, r, "w", "pv-w")
	secret := dir + "/w/secret"
	writeFile(t, secret, "sibling", 0o600)
	const rounds, dirs = 40, 8
	for i := range rounds {
		op := []string{"delete", "scrub"}[i%2]
		mustCreate(t, r, "v", "pv")
		vol := dir + "/v"
		for j := range dirs {
			d := fmt.Sprintf("%s/d%d", vol, j)
			writeFile(t, d+"/f", "x", 0o644)
			if err := os.Chmod(d, 0o000); err != nil {
				t.Fatal(err)
			}
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			// Flip each directory with a hard link to the secret, atomically, as fast as it
			// can: a check by name and a change by name see different things.
			for n := 0; !stop.Load(); n++ {
				d := fmt.Sprintf("%s/d%d", vol, n%dirs)
				if err := unix.Renameat2(unix.AT_FDCWD, d, unix.AT_FDCWD, d+".l", unix.RENAME_EXCHANGE); errors.Is(err, unix.ENOENT) {
					os.Link(secret, d+".l")
				}
			}
		})
		if op == "delete" {
			err = Delete(r, "v", own("pv"))
		} else {
			_, err = Scrub(r, "v", own("pv"), fmt.Sprintf("uid-%d", i))
		}
		stop.Store(true)
		wg.Wait()
		if fi, serr := os.Lstat(secret); serr != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("round %d (%s): file outside the volume is now %v (%v)", i, op, fi.Mode(), serr)
		}
		// The racer may make a round fail; what matters is that nothing outside changed.
		if err != nil {
			t.Logf("round %d (%s): %v", i, op, err)
		}
		// Clean up for the next round (as owner: make everything writable first).
		filepath.WalkDir(vol, func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(vol); err != nil {
			t.Fatal(err)
		}
		os.Remove(dir + "/.v.dirpv")
	}
	assertFile(t, secret, "sibling")
}

func TestChmodSwapChild(t *testing.T) { nonRootChild(t, runChmodSwap) }

// TestChmodSwap: the permission fallback changes modes only through a descriptor of the
// directory it checked, never by name.
func TestChmodSwap(t *testing.T) { asNonRoot(t, "TestChmodSwapChild", runChmodSwap) }
