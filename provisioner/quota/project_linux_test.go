package quota

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"

	"dirpv.io/dirpv/provisioner/quota/quotatest"
)

// The tests on real filesystems run where an environment variable names a mount; hack/quota-test.sh
// boots a VM that sets them (this machine's kernel may have neither XFS nor ext4 quotas).

// TestProjectQuota needs root and a filesystem mounted with prjquota.
func TestProjectQuota(t *testing.T) {
	for _, fs := range []struct{ name, env string }{
		{"XFS", "DIRPV_QUOTA_XFS"},
		{"ext4", "DIRPV_QUOTA_EXT4"},
	} {
		t.Run(fs.name, func(t *testing.T) {
			mnt := os.Getenv(fs.env)
			if mnt == "" {
				t.Skipf("%s is not set: it names a mounted %s with project quotas (hack/quota-test.sh sets it in a VM)",
					fs.env, fs.name)
			}
			testProjectQuota(t, mnt)
		})
	}
}

func testProjectQuota(t *testing.T, mnt string) {
	const limit = 10 << 20
	w := quotatest.NewWriter(t)
	root, rootFd := testRoot(t, mnt)
	if kind, err := Probe(rootFd); kind != KindProject || err != nil {
		t.Fatalf("Probe(%s) = %v, %v; want %v", root, kind, err, KindProject)
	}

	// The allocation contract: set the project and the limit, then unlock.
	id1, unlock, err := Allocate(rootFd)
	if err != nil {
		t.Fatal(err)
	}
	v1, v1Fd, closeV1 := mkdirOpen(t, root, "v1")
	if err := SetProject(v1Fd, id1); err != nil {
		unlock()
		t.Fatal(err)
	}
	if err := SetLimit(rootFd, id1, limit); err != nil {
		unlock()
		t.Fatal(err)
	}
	unlock()
	if id1 < FirstID {
		t.Errorf("Allocate = %d, want %d or more", id1, FirstID)
	}
	if got, err := ProjectID(v1Fd); got != id1 || err != nil {
		t.Fatalf("ProjectID(v1) = %d, %v; want %d", got, err, id1)
	}

	// v1 holds id1, so the next allocation is another ID; unused, it stays free for Assign.
	id2, unlock, err := Allocate(rootFd)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if id2 == id1 {
		t.Fatalf("second Allocate = %d, the ID v1 holds", id2)
	}
	_, v2Fd, _ := mkdirOpen(t, root, "v2")
	for i := range 2 { // a retry keeps the ID
		if got, err := Assign(rootFd, rootFd, v2Fd, 5<<20, 1); got != id2 || err != nil {
			t.Fatalf("Assign(v2) #%d = %d, %v; want %d", i+1, got, err, id2)
		}
	}
	if u, err := ProjectUsage(rootFd, id2); u.Limit != 5<<20 || u.Inodes != 1 || err != nil {
		t.Errorf("ProjectUsage(%d) = %+v, %v; want a 5 MiB limit and 1 inode (v2)", id2, u, err)
	}

	// Writing past the limit fails, and the usage stops at the limit.
	n, errno := w.Write(t, filepath.Join(v1, "big"), 2*limit)
	if !quotatest.OverLimit(errno) || n > limit || n < limit-2<<20 {
		t.Fatalf("writing %d bytes under a %d-byte limit: wrote %d, then %s; want EDQUOT or ENOSPC near the limit",
			2*limit, limit, n, quotatest.Stopped(errno))
	}
	t.Logf("the writer wrote %d bytes (limit %d), then: %v", n, limit, errno)
	u, err := ProjectUsage(rootFd, id1)
	if err != nil || u.Limit != limit || u.Used < uint64(n) || u.Used > limit || u.Inodes != 2 {
		t.Errorf("ProjectUsage(%d) = %+v, %v; want %d to %d bytes used of a %d-byte limit, 2 inodes",
			id1, u, err, n, limit, limit)
	}

	// statfs of the directory reports the limit as its size (df in a pod).
	var st unix.Statfs_t
	if err := unix.Fstatfs(v1Fd, &st); err != nil {
		t.Fatal(err)
	}
	if size := st.Blocks * uint64(st.Bsize); size+uint64(st.Bsize) < limit || size > limit+uint64(st.Bsize) {
		t.Errorf("statfs(v1): %d bytes in all, want %d", size, limit)
	}

	// A higher limit lets the writer go on.
	if err := SetLimit(rootFd, id1, 3*limit); err != nil {
		t.Fatal(err)
	}
	if n, errno := w.Write(t, filepath.Join(v1, "more"), limit); n != limit || errno != 0 {
		t.Fatalf("writing %d bytes more under a %d-byte limit: wrote %d, then %s", limit, 3*limit, n, quotatest.Stopped(errno))
	}
	if u, err := ProjectUsage(rootFd, id1); err != nil || u.Used < uint64(n)+limit || u.Limit != 3*limit {
		t.Errorf("ProjectUsage(%d) = %+v, %v; want %d bytes or more used of a %d-byte limit", id1, u, err,
			uint64(n)+limit, 3*limit)
	}

	// Released, with its directory gone, id1 is free again: the smallest one.
	closeV1()
	if err := os.RemoveAll(v1); err != nil {
		t.Fatal(err)
	}
	if err := Release(rootFd, id1); err != nil {
		t.Fatal(err)
	}
	// XFS frees removed files in the background (a quota report of ID 0 hurries it along).
	var u3 Usage
	err = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			if _, err := ProjectUsage(rootFd, 0); err != nil {
				return false, err
			}
			u3, err = ProjectUsage(rootFd, id1)
			return u3 == Usage{}, err
		})
	if err != nil {
		t.Errorf("ProjectUsage(%d) after Release and removal = %+v; want nothing: %v", id1, u3, err)
	}
	id3, unlock, err := Allocate(rootFd)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if id3 != id1 {
		t.Errorf("Allocate after Release = %d, want %d again", id3, id1)
	}
	// The filesystem is shared with other tests, whose admission counts the limits on it.
	if err := Release(rootFd, id2); err != nil {
		t.Fatal(err)
	}
}

// TestProbeRefuses checks what Probe says of filesystems that cannot enforce sizes as they are.
func TestProbeRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, env, want string
	}{
		{"XFS without quotas", "DIRPV_QUOTA_XFS_NOQUOTA", "XFS at %s is not mounted with prjquota"},
		{"ext4 without prjquota", "DIRPV_QUOTA_EXT4_NOENFORCE", "ext4 at %s counts project usage but does not enforce limits"},
		{"tmpfs", "DIRPV_QUOTA_TMPFS", "tmpfs at %s cannot enforce sizes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := os.Getenv(tt.env)
			if dir == "" {
				t.Skipf("%s is not set: it names a mounted %s (hack/quota-test.sh sets it in a VM)", tt.env, tt.name)
			}
			probeRefuses(t, dir, tt.want)
		})
	}
}

// TestProbeDevShm probes /dev/shm, where it is a tmpfs.
func TestProbeDevShm(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skipf("/dev/shm is not a tmpfs here (%v)", err)
	}
	probeRefuses(t, "/dev/shm", "tmpfs at %s cannot enforce sizes")
}

func probeRefuses(t *testing.T, dir, want string) {
	t.Helper()
	fd, _ := quotatest.Open(t, dir)
	kind, err := Probe(fd)
	if err == nil || !errors.Is(err, ErrNotEnforced) || !containsf(err.Error(), want, dir) {
		t.Errorf("Probe(%s) = %v, %v; want an ErrNotEnforced saying %q", dir, kind, err, want)
	}
	t.Logf("Probe(%s): %v", dir, err)
}

// containsf reports whether s contains format filled in with args.
func containsf(s, format string, args ...any) bool {
	return strings.Contains(s, fmt.Sprintf(format, args...))
}
