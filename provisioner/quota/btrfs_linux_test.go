package quota

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/quota/quotatest"
)

// TestBtrfs needs root and a mounted btrfs (hack/quota-test.sh makes one on a loop device); it
// enables quotas there if they are off.
func TestBtrfs(t *testing.T) {
	const limit = 8 << 20
	mnt := os.Getenv("DIRPV_QUOTA_BTRFS")
	if mnt == "" {
		t.Skip("DIRPV_QUOTA_BTRFS is not set: it names a mounted btrfs (hack/quota-test.sh makes one)")
	}
	w := quotatest.NewWriter(t)
	mntFd, _ := quotatest.Open(t, mnt)
	if _, err := Probe(mntFd); err != nil {
		// A new filesystem: quotas are off, and Probe says how to turn them on.
		if !errors.Is(err, ErrNotEnforced) || !containsf(err.Error(), "quotas are not enabled (btrfs quota enable %s)", mnt) {
			t.Fatalf("Probe(%s) before enabling quotas: %v", mnt, err)
		}
		t.Logf("Probe(%s): %v", mnt, err)
	}
	if err := EnableQuota(mntFd); err != nil {
		t.Fatal(err)
	}
	if kind, err := Probe(mntFd); kind != KindBtrfs || err != nil {
		t.Fatalf("Probe(%s) = %v, %v; want %v", mnt, kind, err, KindBtrfs)
	}
	root, rootFd := testRoot(t, mnt)

	if err := CreateSubvolume(rootFd, "v1"); err != nil {
		t.Fatal(err)
	}
	v1 := filepath.Join(root, "v1")
	v1Fd, closeV1 := quotatest.Open(t, v1)
	if err := unix.Fchown(v1Fd, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	id, err := SubvolumeID(v1Fd)
	if err != nil || id < btrfsFirstFreeObjectid {
		t.Fatalf("SubvolumeID(v1) = %d, %v; want a new subvolume's ID (256 or more)", id, err)
	}
	if top, err := SubvolumeID(rootFd); top != btrfsFsTreeObjectid || err != nil {
		t.Errorf("SubvolumeID(%s) = %d, %v; want the top level, %d", root, top, err, btrfsFsTreeObjectid)
	}
	if err := SetQgroupLimit(v1Fd, limit); err != nil {
		t.Fatal(err)
	}

	n, errno := w.Write(t, filepath.Join(v1, "big"), 2*limit)
	if !quotatest.OverLimit(errno) || n > limit || n < limit-2<<20 {
		t.Fatalf("writing %d bytes under a %d-byte qgroup limit: wrote %d, then %s; want EDQUOT near the limit",
			2*limit, limit, n, quotatest.Stopped(errno))
	}
	t.Logf("the writer wrote %d bytes (limit %d), then: %v", n, limit, errno)
	usage := func() Usage {
		t.Helper()
		if err := unix.Syncfs(rootFd); err != nil { // qgroups count at transaction commits
			t.Fatal(err)
		}
		u, err := QgroupUsage(v1Fd)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	// Referenced bytes count metadata too: a few 16 KiB tree blocks.
	if u := usage(); u.Limit != limit || u.Used < uint64(n) || u.Used > limit {
		t.Errorf("QgroupUsage(v1) = %+v; want %d to %d bytes used of a %d-byte limit", u, n, limit, limit)
	}

	if err := SetQgroupLimit(v1Fd, 4*limit); err != nil {
		t.Fatal(err)
	}
	if m, errno := w.Write(t, filepath.Join(v1, "more"), limit); m != limit || errno != 0 {
		t.Fatalf("writing %d bytes more under a %d-byte limit: wrote %d, then %s", limit, 4*limit, m, quotatest.Stopped(errno))
	}
	if u := usage(); u.Limit != 4*limit || u.Used < uint64(n)+limit || u.Used > 2*limit+1<<20 {
		t.Errorf("QgroupUsage(v1) = %+v; want about %d bytes used of a %d-byte limit", u, uint64(n)+limit, 4*limit)
	}
	if err := SetQgroupLimit(v1Fd, 0); err != nil {
		t.Fatal(err)
	}
	if u := usage(); u.Limit != 0 {
		t.Errorf("QgroupUsage(v1) after removing the limit = %+v; want no limit", u)
	}

	// A limit meant for a volume never falls on the filesystem or on a plain directory.
	if err := SetQgroupLimit(mntFd, limit); err == nil || !strings.Contains(err.Error(), "top-level subvolume") {
		t.Errorf("SetQgroupLimit(%s) = %v; want a refusal (top level)", mnt, err)
	}
	if err := SetQgroupLimit(rootFd, limit); err == nil || !strings.Contains(err.Error(), "not the root directory of a btrfs subvolume") {
		t.Errorf("SetQgroupLimit(%s) = %v; want a refusal (not a subvolume)", root, err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "../v1"} {
		if err := CreateSubvolume(rootFd, name); err == nil || !strings.Contains(err.Error(), "invalid subvolume name") {
			t.Errorf("CreateSubvolume(%q) = %v; want an invalid name", name, err)
		}
		if err := DeleteSubvolume(rootFd, name); err == nil || !strings.Contains(err.Error(), "invalid subvolume name") {
			t.Errorf("DeleteSubvolume(%q) = %v; want an invalid name", name, err)
		}
	}
	if err := CreateSubvolume(rootFd, "v1"); !errors.Is(err, unix.EEXIST) {
		t.Errorf("CreateSubvolume(v1) again = %v; want EEXIST", err)
	}

	closeV1()
	if err := DeleteSubvolume(rootFd, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(v1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after DeleteSubvolume, lstat %s: %v; want it gone", v1, err)
	}
	if err := os.Mkdir(v1, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := DeleteSubvolume(rootFd, "v1"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("DeleteSubvolume of a plain directory = %v; want EINVAL", err)
	}
}
