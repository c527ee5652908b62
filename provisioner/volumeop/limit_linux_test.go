package volumeop

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
)

func openRoot(t *testing.T, dir string) fsys.Dir {
	t.Helper()
	r, err := fsys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func apply(t *testing.T, root fsys.Dir, op Op) Result {
	t.Helper()
	op.Mode, op.UID, op.GID = 0o777, -1, -1
	res, err := Apply(root, op)
	if err != nil {
		t.Fatalf("%s %s: %v", op.Kind, op.Path, err)
	}
	return res
}

// fill writes into dir/name until the filesystem refuses, up to max bytes, and returns how much
// it wrote and the error that stopped it (nil if none did).
func fill(t *testing.T, path string, max int64) (int64, error) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 256<<10)
	var n int64
	for n < max {
		w, err := f.Write(chunk)
		n += int64(w)
		if err == nil {
			err = f.Sync() // btrfs reserves at write, and settles usage at commit
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func overLimit(err error) bool {
	return errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.ENOSPC)
}

// A volume made with a limit on a filesystem that cannot enforce one is refused, saying why, and
// nothing is left behind.
func TestCreateLimitRefused(t *testing.T) {
	dir := t.TempDir()
	root := openRoot(t, dir)
	if _, err := quota.Probe(mustFd(t, root)); err == nil {
		t.Skipf("%s enforces sizes", dir)
	}
	op := Op{Kind: Create, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1"}, Mode: 0o777, UID: -1, GID: -1, Limit: 1 << 20}
	_, err := Apply(root, op)
	if !errors.Is(err, quota.ErrNotEnforced) {
		t.Fatalf("Create with a limit = %v, want ErrNotEnforced", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "ns")); len(ents) != 0 {
		t.Errorf("left behind in ns: %v", ents)
	}
}

func mustFd(t *testing.T, d fsys.Dir) int {
	fd, ok := fsys.Descriptor(d)
	if !ok {
		t.Fatal("not a local directory")
	}
	return fd
}

// TestLimitsBtrfs runs the operations of a limited volume's life on btrfs: made a subvolume held
// to its size, grown, scrubbed (keeping its limit), archived and deleted (clearing it). It needs
// root and DIRPV_QUOTA_BTRFS naming a mounted btrfs (hack/quota-test.sh makes one).
func TestLimitsBtrfs(t *testing.T) {
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
	dir, err := os.MkdirTemp(mnt, "volumeop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root := openRoot(t, dir)
	const limit = 8 << 20
	owner := volumefs.Marker{PV: "pv1", ClaimUID: "c1"}

	res := apply(t, root, Op{Kind: Create, Path: "ns/v1", Owner: owner, Limit: limit})
	if !strings.HasPrefix(res.Quota, "btrfs subvolume ") {
		t.Errorf("Create's Quota = %q, want btrfs subvolume N", res.Quota)
	}
	v1 := filepath.Join(dir, "ns/v1")
	if st, err := os.Stat(v1); err != nil || st.Sys().(*syscall.Stat_t).Ino != 256 {
		t.Fatalf("%s is not a subvolume's root (inode 256): %v", v1, err)
	}
	if again := apply(t, root, Op{Kind: Create, Path: "ns/v1", Owner: owner, Limit: limit}); again.Quota != res.Quota {
		t.Errorf("Create again: Quota = %q, want %q", again.Quota, res.Quota)
	}
	n, err := fill(t, filepath.Join(v1, "a"), 2*limit)
	if !overLimit(err) || n > limit {
		t.Fatalf("wrote %d bytes into an %d-byte volume, stopped by %v; want EDQUOT by the limit", n, limit, err)
	}
	t.Logf("8 MiB volume: wrote %d bytes, then %v", n, err)

	apply(t, root, Op{Kind: Expand, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1"}, Limit: 3 * limit})
	if m, err := fill(t, filepath.Join(v1, "b"), limit); err != nil || m < limit {
		t.Fatalf("after Expand to 24 MiB, wrote %d more bytes, then %v; want 8 MiB more", m, err)
	}

	if res := apply(t, root, Op{Kind: Scrub, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1", ClaimUID: "c1"}}); !res.Scrubbed {
		t.Fatal("Scrub removed nothing")
	}
	vfd := openRoot(t, v1)
	if u, err := quota.QgroupUsage(mustFd(t, vfd)); err != nil || u.Limit != 3*limit {
		t.Errorf("after Scrub: qgroup %+v, %v; want the 24 MiB limit kept", u, err)
	}

	// Archive clears the limit: the archive is the operator's and holds what it holds.
	archived := apply(t, root, Op{Kind: Archive, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1"}, Limited: true, Now: time.Unix(0, 0)})
	afd := openRoot(t, filepath.Join(dir, archived.Archive))
	if u, err := quota.QgroupUsage(mustFd(t, afd)); err != nil || u.Limit != 0 {
		t.Errorf("after Archive: qgroup %+v, %v; want no limit", u, err)
	}

	apply(t, root, Op{Kind: Create, Path: "ns/v2", Owner: volumefs.Marker{PV: "pv2"}, Limit: limit})
	apply(t, root, Op{Kind: Delete, Path: "ns/v2", Owner: volumefs.Marker{PV: "pv2"}, Limited: true})
	if _, err := os.Lstat(filepath.Join(dir, "ns/v2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Delete: %v, want the subvolume gone", err)
	}
	apply(t, root, Op{Kind: Delete, Path: "ns/v2", Owner: volumefs.Marker{PV: "pv2"}, Limited: true})
}
