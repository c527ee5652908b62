package volumeop

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
)

// mountTmpfs mounts a tmpfs of size bytes at dir (made), or skips the test where it cannot.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// free is what statfs says is free at p, and its device.
func free(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	var fs unix.Statfs_t
	var st unix.Stat_t
	if err := unix.Statfs(p, &fs); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return fs.Bavail * uint64(fs.Bsize), st.Dev
}

// TestRoom: a root is measured as df counts it, on its own device; a root that must be a mount
// and is a plain directory (its disk did not mount) or that must be there and is not is
// refused, saying so; a root that need not exist is measured where its first volume would go;
// a bind mount counts as a mount; a symbolic link is never followed.
func TestRoom(t *testing.T) {
	dir := t.TempDir()
	mountTmpfs(t, filepath.Join(dir, "disks/d1"), "8m")
	if err := os.MkdirAll(filepath.Join(dir, "disks/plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bound"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(dir, "disks/plain"), filepath.Join(dir, "bound"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(dir, "bound"), unix.MNT_DETACH) })
	if err := os.Symlink("disks/d1", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "disks/d1/data"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d1Free, d1Dev := free(t, filepath.Join(dir, "disks/d1"))
	rootFree, rootDev := free(t, dir)
	if d1Free > 7<<20 || d1Dev == rootDev {
		t.Fatalf("the tmpfs has %d bytes free on device %d (the root's: %d)", d1Free, d1Dev, rootDev)
	}
	root := openRoot(t, dir)
	for _, tt := range []struct {
		name      string
		op        Op
		room, dev uint64
		err       error  // matched with errors.Is
		msg       string // in the error
	}{
		{name: "disk", op: Op{Path: "disks/d1", MustExist: true, MustMount: true}, room: d1Free, dev: d1Dev},
		{name: "plain directory", op: Op{Path: "disks/plain", MustMount: true}, err: ErrNotMounted,
			msg: "disks/plain is not a mounted filesystem (a plain directory on its parent's): is its disk mounted?"},
		{name: "plain directory, mount not required", op: Op{Path: "disks/plain", MustExist: true}, room: rootFree, dev: rootDev},
		{name: "bind mount", op: Op{Path: "bound", MustMount: true}, room: rootFree, dev: rootDev},
		{name: "missing, must exist", op: Op{Path: "disks/d9", MustExist: true}, err: ErrNotThere, msg: "disks/d9 is not there"},
		{name: "missing, must mount", op: Op{Path: "disks/d9/x", MustMount: true}, err: ErrNotThere, msg: "disks/d9/x is not there"},
		{name: "missing, measured on its ancestor", op: Op{Path: "disks/d1/class/new"}, room: d1Free, dev: d1Dev},
		{name: "operator's root", op: Op{Path: "."}, room: rootFree, dev: rootDev},
		{name: "operator's root as a mount", op: Op{Path: ".", MustMount: true}, msg: "cannot be required to be a mount"},
		{name: "symbolic link", op: Op{Path: "link", MustExist: true}, msg: "link"},
		{name: "dot dot", op: Op{Path: "disks/../disks/d1"}, msg: "disks/../disks/d1"},
		{name: "sizes on tmpfs", op: Op{Path: "disks/d1", Limited: true}, err: quota.ErrNotEnforced},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.op.Kind = Room
			res, err := Apply(root, tt.op)
			if tt.err == nil && tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				// Another process may write to the root's filesystem meanwhile: df's count then
				// moves by a little.
				if diff := int64(res.Room) - int64(tt.room); res.Device != tt.dev || diff > 1<<20 || diff < -(1<<20) {
					t.Errorf("Room = %+v, want room %d on device %d", res, tt.room, tt.dev)
				}
				return
			}
			if err == nil || (tt.err != nil && !errors.Is(err, tt.err)) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Room = %+v, %v; want an error matching %v, saying %q", res, err, tt.err, tt.msg)
			}
		})
	}
	if res := apply(t, root, Op{Kind: Room, Path: "disks/d1", MustMount: true}); res.Room != d1Free {
		t.Errorf("the tmpfs's room is %d, want %d (nothing else writes there)", res.Room, d1Free)
	}
}

// TestRoomBtrfs: with sizes enforced, the room is what admission would still promise: each
// volume's limit leaves it, whatever the volume holds, and overcommit scales the filesystem's
// size. It needs root and DIRPV_QUOTA_BTRFS naming a mounted btrfs (hack/quota-test.sh).
func TestRoomBtrfs(t *testing.T) {
	mnt := os.Getenv("DIRPV_QUOTA_BTRFS")
	if mnt == "" {
		t.Skip("DIRPV_QUOTA_BTRFS is not set: it names a mounted btrfs (hack/quota-test.sh makes one)")
	}
	mntRoot := openRoot(t, mnt)
	if _, err := quota.Probe(mustFd(t, mntRoot)); err != nil {
		if err := quota.EnableQuota(mustFd(t, mntRoot)); err != nil {
			t.Fatal(err)
		}
	}
	root := openRoot(t, tempDir(t, mnt))
	room := func(overcommit float64) uint64 {
		return apply(t, root, Op{Kind: Room, Path: ".", Limited: true, Overcommit: overcommit}).Room
	}
	before, twice := room(1), room(2)
	const limit = 16 << 20
	apply(t, root, Op{Kind: Create, Path: "v", Owner: volumefs.Marker{PV: "pv1"}, Limit: limit})
	t.Cleanup(func() { Apply(root, Op{Kind: Delete, Path: "v", Owner: volumefs.Marker{PV: "pv1"}, Limited: true}) })
	if after := room(1); after != before-limit {
		t.Errorf("room %d before a volume of %d, %d after; want it %d less", before, limit, after, limit)
	}
	if after := room(2); after != twice-limit || twice < 2*before-2 {
		t.Errorf("room with overcommit 2: %d before (%d without), %d after", twice, before, after)
	}
}
