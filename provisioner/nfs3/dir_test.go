package nfs3

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/fsys/fsystest"
)

// TestDir runs the fsys conformance cases over NFS. One server exports a directory, and the
// cases' directories are made inside it: t.TempDir makes them under $TMPDIR.
func TestDir(t *testing.T) {
	export := t.TempDir()
	srv := startServer(t, testExport{Dir: export})
	c, root := mountAs(t, srv, srv.config(), export)
	t.Setenv("TMPDIR", export)
	fsystest.Run(t, func(t *testing.T, dir string) fsys.Dir {
		return openPath(t, c, root, export, dir)
	})
}

// openPath opens dir, a directory inside the export mounted as root, over NFS.
func openPath(t *testing.T, c *Client, root Handle, export, dir string) fsys.Dir {
	t.Helper()
	rel, err := filepath.Rel(export, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%s is not inside the export %s", dir, export)
	}
	ctx := testCtx(t)
	h, _, err := c.Walk(ctx, root, rel)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.OpenDir(ctx, h, serverAddr+":"+dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDirRemoveTree empties a tree over NFS with the calls, in the order, of volumefs's removal
// walk: unlink every entry, and for a directory (EISDIR) Lstat, OpenDir with its ID, empty it,
// come back up with OpenDir("..", ID recorded on the way down), Rmdir.
func TestDirRemoveTree(t *testing.T) {
	export := t.TempDir()
	vol := filepath.Join(export, "vol")
	outside := filepath.Join(export, "outside")
	for _, d := range []string{vol, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := vol
	for i := range 30 {
		deep = filepath.Join(deep, fmt.Sprintf("d%d", i))
		if err := os.Mkdir(deep, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{
			os.WriteFile(filepath.Join(deep, "file"), []byte("data"), 0o644),
			os.Symlink(outside, filepath.Join(deep, "out")),
			os.Symlink(filepath.Join(outside, "keep"), filepath.Join(deep, "keep")),
			os.Symlink("..", filepath.Join(deep, "up")),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	locked := filepath.Join(vol, "d0", "locked")
	if err := os.MkdirAll(filepath.Join(locked, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(locked, "sub", "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(locked, "sub"), locked} {
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
	}

	srv := startServer(t, testExport{Dir: export})
	c, root := mountAs(t, srv, srv.config(), export)
	d := openPath(t, c, root, export, vol)
	emptyTree(t, d)
	if left, err := os.ReadDir(vol); err != nil || len(left) != 0 {
		t.Fatalf("left in the volume: %v, %v", left, err)
	}
	if data, err := os.ReadFile(filepath.Join(outside, "keep")); err != nil || string(data) != "keep" {
		t.Fatalf("outside/keep: %q, %v", data, err)
	}
}

// emptyTree removes everything in d and returns d as reopened through "..", which the caller
// goes on with.
func emptyTree(t *testing.T, d fsys.Dir) fsys.Dir {
	t.Helper()
	self, err := d.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var subdirs []string
	err = d.EachName(func(name string) {
		switch err := d.Unlink(name); {
		case errors.Is(err, syscall.EISDIR):
			subdirs = append(subdirs, name)
		case err != nil:
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range subdirs {
		info, err := d.Lstat(name)
		if err != nil || !info.IsDir() {
			t.Fatalf("Lstat(%s) = %+v, %v", name, info, err)
		}
		sub, err := d.OpenDir(name, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if sub.Mount() != d.Mount() {
			t.Fatalf("%s is on filesystem %d, its parent on %d", sub.Name(), sub.Mount(), d.Mount())
		}
		sub = emptyTree(t, sub)
		up, err := sub.OpenDir("..", self.ID)
		if err != nil {
			t.Fatal(err)
		}
		sub.Close()
		d = up
		if err := d.Rmdir(name); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// TestDirRootSquash: squashed, root is the anonymous user, may not give a directory away, and
// works in its own directories whatever their mode (OpenDir adds u+rwx, as their owner).
func TestDirRootSquash(t *testing.T) {
	export := t.TempDir()
	if err := os.Chmod(export, 0o777); err != nil { // the anonymous user must create here
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(export, "roots"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, testExport{Dir: export, Squash: true})
	c, root := mountAs(t, srv, srv.config(), export)
	top := openPath(t, c, root, export, export)

	if err := top.Mkdir("mine", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mine", "roots"} {
		t.Run("chown-"+name, func(t *testing.T) {
			sub, err := top.OpenDir(name, fsys.ID{})
			if err != nil {
				t.Fatal(err)
			}
			err = sub.Chown(1000, -1)
			if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "nfs3 server "+serverAddr) {
				t.Fatalf("Chown(1000) of %s: %v; want EPERM naming the server", name, err)
			}
			t.Logf("ganesha: %v", err)
		})
	}

	t.Run("no-permission", func(t *testing.T) {
		if err := top.Mkdir("closed", 0); err != nil {
			t.Fatal(err)
		}
		sub, err := top.OpenDir("closed", fsys.ID{})
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.Mkdir("inside", 0o755); err != nil {
			t.Fatal(err)
		}
		if fi, _ := lstat(t, filepath.Join(export, "closed")); fi.Mode().Perm() != 0o700 {
			t.Fatalf("closed has mode %v, want u+rwx added", fi.Mode())
		}
	})
}

// TestDirMount: ganesha serves a filesystem mounted below the export with an FSID of its own,
// so Mount tells a walk not to enter it.
func TestDirMount(t *testing.T) {
	export := t.TempDir()
	mnt := filepath.Join(export, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "dirpv-nfs3-test", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	if err := os.Mkdir(filepath.Join(export, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, testExport{Dir: export})
	c, root := mountAs(t, srv, srv.config(), export)
	top := openPath(t, c, root, export, export)
	for name, same := range map[string]bool{"plain": true, "mnt": false} {
		sub, err := top.OpenDir(name, fsys.ID{})
		if err != nil {
			t.Fatal(err)
		}
		info, err := top.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		if (sub.Mount() == top.Mount()) != same || (info.ID.Dev == top.Mount()) != same || top.Mount() == 0 {
			t.Errorf("%s: Mount %d, ID %v; the export's Mount %d", name, sub.Mount(), info.ID, top.Mount())
		}
	}
}
