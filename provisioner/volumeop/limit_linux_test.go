package volumeop

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/quota/quotatest"
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
// nothing is left behind: in a temporary directory (skipped where that enforces sizes), and on
// the filesystems the DIRPV_QUOTA_* variables below name (hack/quota-test.sh sets them in a VM).
func TestCreateLimitRefused(t *testing.T) {
	t.Run("TempDir", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := quota.Probe(mustFd(t, openRoot(t, dir))); err == nil {
			t.Skipf("%s enforces sizes", dir)
		}
		createLimitRefused(t, dir)
	})
	for _, fs := range []struct{ name, env string }{
		{"XFS without quotas", "DIRPV_QUOTA_XFS_NOQUOTA"},
		{"ext4 without prjquota", "DIRPV_QUOTA_EXT4_NOENFORCE"},
		{"tmpfs", "DIRPV_QUOTA_TMPFS"},
	} {
		t.Run(fs.name, func(t *testing.T) {
			mnt := os.Getenv(fs.env)
			if mnt == "" {
				t.Skipf("%s is not set: it names a mounted %s (hack/quota-test.sh sets it in a VM)", fs.env, fs.name)
			}
			createLimitRefused(t, tempDir(t, mnt))
		})
	}
}

func createLimitRefused(t *testing.T, dir string) {
	root := openRoot(t, dir)
	op := Op{Kind: Create, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1"}, Mode: 0o777, UID: -1, GID: -1, Limit: 1 << 20}
	_, err := Apply(root, op)
	if !errors.Is(err, quota.ErrNotEnforced) {
		t.Fatalf("Create with a limit = %v, want ErrNotEnforced", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "ns")); len(ents) != 0 {
		t.Errorf("left behind in ns: %v", ents)
	}
	t.Logf("Create with a limit in %s: %v", dir, err)
	// A probe says the same, for the root and for a base directory not made yet.
	for _, p := range []string{".", "ns", "base/not/made/yet"} {
		if _, err := Apply(root, Op{Kind: Probe, Path: p}); !errors.Is(err, quota.ErrNotEnforced) {
			t.Errorf("Probe %q = %v, want ErrNotEnforced", p, err)
		}
	}
}

// A probe goes through no symbolic link, and takes no path out of the root.
func TestProbeRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	root := openRoot(t, dir)
	for _, p := range []string{"link", "link/base", "../x", "/etc"} {
		res, err := Apply(root, Op{Kind: Probe, Path: p})
		if err == nil || errors.Is(err, quota.ErrNotEnforced) {
			t.Errorf("Probe %q = %+v, %v; want it refused", p, res, err)
		}
	}
}

// probeIs checks that a probe of dir's root and of a base directory not made yet find quota kind.
func probeIs(t *testing.T, root fsys.Dir, kind quota.Kind) {
	t.Helper()
	for _, p := range []string{".", "base/not/made/yet"} {
		if res, err := Apply(root, Op{Kind: Probe, Path: p}); err != nil || res.Quota != kind.String() {
			t.Errorf("Probe %q = %+v, %v; want %s", p, res, err, kind)
		}
	}
}

// tempDir makes a directory in mnt that the writer may pass through, removed at the test's end.
func tempDir(t *testing.T, mnt string) string {
	t.Helper()
	dir, err := os.MkdirTemp(mnt, "volumeop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
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
	probeIs(t, root, quota.KindBtrfs)
	const limit = 8 << 20
	owner := volumefs.Marker{PV: "pv1", ClaimUID: "c1"}

	res := apply(t, root, Op{Kind: Create, Path: "ns/v1", Owner: owner, Limit: limit})
	if !strings.HasPrefix(res.Quota, "btrfs subvolume ") {
		t.Errorf("Create's Quota = %q, want btrfs subvolume N", res.Quota)
	}
	if m, err := volumefs.ReadMarker(root, "ns/v1"); err != nil || m.Quota != res.Quota {
		t.Errorf("marker %+v, %v; want it to record %q", m, err, res.Quota)
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
	m, err := fill(t, filepath.Join(v1, "b"), limit)
	if err != nil || m < limit {
		t.Fatalf("after Expand to 24 MiB, wrote %d more bytes, then %v; want 8 MiB more", m, err)
	}
	// A qgroup counts as of the last transaction commit: syncfs makes one (Usage itself does
	// not, as it must stay cheap).
	if err := unix.Syncfs(mustFd(t, root)); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, root, "ns/v1", "pv1", uint64(n+m), 3*limit)
	apply(t, root, Op{Kind: Create, Path: "ns/plain", Owner: volumefs.Marker{PV: "pv-plain"}})
	if _, err := Apply(root, Op{Kind: Usage, Path: "ns/plain", Owner: volumefs.Marker{PV: "pv-plain"}}); err == nil || !strings.Contains(err.Error(), "not the root directory of a btrfs subvolume") {
		t.Errorf("Usage of a volume made without a limit = %v, want refused: it has no subvolume of its own", err)
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
	testNoRoom(t, dir, root)
}

// testNoRoom checks admission on the filesystem of dir: a volume larger than the filesystem is
// refused and leaves nothing behind, unless the overcommit factor makes room; a volume cannot
// grow past the room either, and keeps its limit then.
func testNoRoom(t *testing.T, dir string, root fsys.Dir) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	size := st.Blocks * uint64(st.Bsize)
	huge := Op{Kind: Create, Path: "ns/huge", Owner: volumefs.Marker{PV: "pv-huge"}, Mode: 0o777, UID: -1, GID: -1, Limit: 2 * size}
	if _, err := Apply(root, huge); !errors.Is(err, quota.ErrNoRoom) {
		t.Fatalf("a volume twice the filesystem's size: %v, want ErrNoRoom", err)
	} else {
		t.Logf("refused: %v", err)
	}
	for _, name := range []string{"ns/huge", "ns/.huge.dirpv"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after the refusal: %v", name, err)
		}
	}
	apply(t, root, Op{Kind: Create, Path: "ns/small", Owner: volumefs.Marker{PV: "pv-small"}, Limit: 1 << 20})
	huge.Overcommit = 3
	apply(t, root, huge)
	grow := Op{Kind: Expand, Path: "ns/small", Owner: volumefs.Marker{PV: "pv-small"}, Limit: size}
	if _, err := Apply(root, grow); !errors.Is(err, quota.ErrNoRoom) {
		t.Errorf("growing past the room left by the huge volume: %v, want ErrNoRoom", err)
	}
	apply(t, root, Op{Kind: Delete, Path: "ns/huge", Owner: volumefs.Marker{PV: "pv-huge"}, Limited: true})
	grow.Limit = size / 2
	apply(t, root, grow) // the huge volume's limit is gone with it
	apply(t, root, Op{Kind: Delete, Path: "ns/small", Owner: volumefs.Marker{PV: "pv-small"}, Limited: true})
}

// TestLimitsProject runs the operations of a limited volume's life with XFS and ext4 project
// quotas, through Apply: made a directory with a project ID of its own and a limit that stops
// an unprivileged writer (root may pass ext4's), grown, scrubbed (keeping both), deleted and
// archived (releasing the ID, which the next volume gets again). It needs root and
// DIRPV_QUOTA_XFS or DIRPV_QUOTA_EXT4 naming a filesystem mounted with prjquota
// (hack/quota-test.sh sets them in a VM).
func TestLimitsProject(t *testing.T) {
	var set []struct{ name, mnt string }
	for _, fs := range []struct{ name, env string }{
		{"XFS", "DIRPV_QUOTA_XFS"},
		{"ext4", "DIRPV_QUOTA_EXT4"},
	} {
		if mnt := os.Getenv(fs.env); mnt != "" {
			set = append(set, struct{ name, mnt string }{fs.name, mnt})
		}
	}
	if len(set) == 0 {
		t.Skip("neither DIRPV_QUOTA_XFS nor DIRPV_QUOTA_EXT4 is set: they name a mounted XFS or ext4 with project quotas (hack/quota-test.sh sets them in a VM)")
	}
	for _, fs := range set {
		t.Run(fs.name, func(t *testing.T) { testLimitsProject(t, fs.mnt) })
	}
}

func testLimitsProject(t *testing.T, mnt string) {
	const limit = 8 << 20
	w := quotatest.NewWriter(t)
	dir := tempDir(t, mnt)
	root := openRoot(t, dir)
	rootFd := mustFd(t, root)
	if kind, err := quota.Probe(rootFd); kind != quota.KindProject || err != nil {
		t.Fatalf("Probe(%s) = %v, %v; want %v", dir, kind, err, quota.KindProject)
	}
	probeIs(t, root, quota.KindProject)
	owner := volumefs.Marker{PV: "pv1", ClaimUID: "c1"}

	// Each volume gets a project ID of its own; a retried Create keeps it.
	id1 := projectOf(t, apply(t, root, Op{Kind: Create, Path: "ns/v1", Owner: owner, Limit: limit}))
	if again := projectOf(t, apply(t, root, Op{Kind: Create, Path: "ns/v1", Owner: owner, Limit: limit})); again != id1 {
		t.Errorf("Create again: project %d, want %d", again, id1)
	}
	id2 := projectOf(t, apply(t, root, Op{Kind: Create, Path: "ns/v2", Owner: volumefs.Marker{PV: "pv2"}, Limit: limit}))
	if id2 == id1 {
		t.Fatalf("the second volume got project %d too", id1)
	}
	v1 := filepath.Join(dir, "ns/v1")
	v1Fd, closeV1 := quotatest.Open(t, v1)
	if got, err := quota.ProjectID(v1Fd); got != id1 || err != nil {
		t.Fatalf("ProjectID(v1) = %d, %v; want %d", got, err, id1)
	}
	size := statfsSize(t, v1Fd, limit)

	// The limit stops a writer that is not root near it.
	n, errno := w.Write(t, filepath.Join(v1, "a"), 2*limit)
	if !overLimit(errno) || n > limit || n < limit-2<<20 {
		t.Fatalf("writing %d bytes into an %d-byte volume: wrote %d, then %v; want EDQUOT or ENOSPC near the limit",
			2*limit, limit, n, quotatest.Stopped(errno))
	}
	t.Logf("project %d (second volume: %d), 8 MiB: statfs size %d; the writer (uid %d) wrote %d bytes, then %v",
		id1, id2, size, quotatest.Nobody, n, errno)

	// Expand raises it.
	if got := projectOf(t, apply(t, root, Op{Kind: Expand, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1"}, Limit: 3 * limit})); got != id1 {
		t.Errorf("Expand: project %d, want %d", got, id1)
	}
	size = statfsSize(t, v1Fd, 3*limit)
	if m, errno := w.Write(t, filepath.Join(v1, "b"), limit); m != limit || errno != 0 {
		t.Fatalf("after Expand to 24 MiB, wrote %d more bytes, then %v; want 8 MiB more", m, quotatest.Stopped(errno))
	}
	t.Logf("expanded to 24 MiB: statfs size %d; the writer wrote 8 MiB more", size)
	checkUsage(t, root, "ns/v1", "pv1", uint64(n)+limit, 3*limit)
	apply(t, root, Op{Kind: Create, Path: "ns/plain", Owner: volumefs.Marker{PV: "pv-plain"}})
	if _, err := Apply(root, Op{Kind: Usage, Path: "ns/plain", Owner: volumefs.Marker{PV: "pv-plain"}}); err == nil || !strings.Contains(err.Error(), "inherited") {
		t.Errorf("Usage of a volume made without a limit = %v, want refused: its project is not its own", err)
	}

	// Scrub empties the directory and keeps its project and limit: what is written next counts.
	if res := apply(t, root, Op{Kind: Scrub, Path: "ns/v1", Owner: owner}); !res.Scrubbed {
		t.Fatal("Scrub removed nothing")
	}
	if ents, err := os.ReadDir(v1); len(ents) != 0 || err != nil {
		t.Fatalf("after Scrub, v1 holds %v (%v)", ents, err)
	}
	if got, err := quota.ProjectID(v1Fd); got != id1 || err != nil {
		t.Errorf("after Scrub: ProjectID(v1) = %d, %v; want %d", got, err, id1)
	}
	if u, err := quota.ProjectUsage(rootFd, id1); u.Limit != 3*limit || err != nil {
		t.Errorf("after Scrub: ProjectUsage(%d) = %+v, %v; want the 24 MiB limit kept", id1, u, err)
	}
	if m, errno := w.Write(t, filepath.Join(v1, "c"), 1<<20); m != 1<<20 || errno != 0 {
		t.Fatalf("after Scrub, wrote %d bytes, then %v; want 1 MiB", m, quotatest.Stopped(errno))
	}
	cFd, closeC := quotatest.Open(t, filepath.Join(v1, "c"))
	if got, err := quota.ProjectID(cFd); got != id1 || err != nil {
		t.Errorf("after Scrub: a new file's ProjectID = %d, %v; want %d", got, err, id1)
	}
	closeC()

	// Delete releases the ID: once the directory's blocks are freed (XFS does that in the
	// background), the next volume gets it again, the smallest free one.
	closeV1()
	apply(t, root, Op{Kind: Delete, Path: "ns/v1", Owner: volumefs.Marker{PV: "pv1"}, Limited: true})
	if _, err := os.Lstat(v1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Delete: %v, want v1 gone", err)
	}
	var u quota.Usage
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		var err error
		if _, err = quota.ProjectUsage(rootFd, 0); err == nil { // hurries XFS along
			u, err = quota.ProjectUsage(rootFd, id1)
		}
		if err != nil {
			t.Fatal(err)
		}
		if u == (quota.Usage{}) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if u != (quota.Usage{}) {
		t.Errorf("ProjectUsage(%d) 10 s after Delete = %+v; want nothing", id1, u)
	}
	id3 := projectOf(t, apply(t, root, Op{Kind: Create, Path: "ns/v3", Owner: volumefs.Marker{PV: "pv3"}, Limit: limit}))
	if id3 != id1 {
		t.Errorf("Create after Delete: project %d, want %d again", id3, id1)
	}
	t.Logf("deleted: project %d empty after %v; the next volume got project %d", id1, time.Since(start).Round(time.Millisecond), id3)
	apply(t, root, Op{Kind: Delete, Path: "ns/v3", Owner: volumefs.Marker{PV: "pv3"}, Limited: true})

	// Archive clears the limit: the archive is the operator's and holds what it holds.
	archived := apply(t, root, Op{Kind: Archive, Path: "ns/v2", Owner: volumefs.Marker{PV: "pv2"}, Limited: true, Now: time.Unix(0, 0)})
	aFd, _ := quotatest.Open(t, filepath.Join(dir, archived.Archive))
	if got, err := quota.ProjectID(aFd); got != id2 || err != nil {
		t.Errorf("ProjectID(archive) = %d, %v; want %d", got, err, id2)
	}
	u, err := quota.ProjectUsage(rootFd, id2)
	if u.Limit != 0 || err != nil {
		t.Errorf("after Archive: ProjectUsage(%d) = %+v, %v; want no limit", id2, u, err)
	}
	t.Logf("archived as %s: project %d holds %+v", archived.Archive, id2, u)
	testNoRoom(t, dir, root)
}

// checkUsage reads the usage of the volume path through Apply, as a helper pod does: it must
// report about used bytes (metadata may add a little) and the limit.
func checkUsage(t *testing.T, root fsys.Dir, path, pv string, used, limit uint64) {
	t.Helper()
	res := apply(t, root, Op{Kind: Usage, Path: path, Owner: volumefs.Marker{PV: pv}})
	const slack = 1 << 20
	if res.Limit != limit || res.Used+slack < used || res.Used > used+slack {
		t.Errorf("Usage of %s = %d used, limit %d; want about %d used (within 1 MiB), limit %d", path, res.Used, res.Limit, used, limit)
	}
	t.Logf("usage of %s after writing %d bytes: %d used, limit %d", path, used, res.Used, res.Limit)
}

// projectOf returns the project ID of Result.Quota, "project N", which must be FirstID or more.
func projectOf(t *testing.T, res Result) uint32 {
	t.Helper()
	s, ok := strings.CutPrefix(res.Quota, "project ")
	id, err := strconv.ParseUint(s, 10, 32)
	if !ok || err != nil || uint32(id) < quota.FirstID {
		t.Fatalf("Quota = %q, want project N with N %d or more", res.Quota, quota.FirstID)
	}
	return uint32(id)
}

// statfsSize returns the size statfs reports for the directory fd (df in a pod), which must be
// about want.
func statfsSize(t *testing.T, fd int, want uint64) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		t.Fatal(err)
	}
	size := st.Blocks * uint64(st.Bsize)
	if size+uint64(st.Bsize) < want || size > want+uint64(st.Bsize) {
		t.Errorf("statfs: %d bytes in all, want %d", size, want)
	}
	return size
}

func TestMain(m *testing.M) { quotatest.Main(m) }
