//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"dirpv.io/dirpv/provisioner/quota"
)

// btrfsRoot is the basePath of the classes e2e-enforce and e2e-enforce-recycle: a btrfs with
// quotas on a loop device, mounted on node1 (this machine) below --hostpath-root.
const btrfsRoot = basePath + "/btrfs"

const mib = 1 << 20

// mountBtrfs makes a sparse 512 MiB btrfs on a loop device, mounts it at btrfsRoot, turns its
// quotas on, and takes it all down when the test ends. Helper pods made after it see it (the
// kubelet's hostPath bind mounts are recursive).
func mountBtrfs(t *testing.T) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "btrfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 * mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	command(t, "mkfs.btrfs", "-q", img)
	loop := command(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	if err := os.MkdirAll(btrfsRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(loop, btrfsRoot, "btrfs", syscall.MS_NOSUID|syscall.MS_NODEV, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", loop, btrfsRoot, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(btrfsRoot, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", btrfsRoot, err)
		}
		_ = os.Remove(btrfsRoot)
	})
	withDir(t, btrfsRoot, func(fd int) {
		if err := quota.EnableQuota(fd); err != nil {
			t.Fatal(err)
		}
	})
}

// withDir runs f with the directory p open.
func withDir(t *testing.T, p string, f func(fd int)) {
	t.Helper()
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	f(fd)
}

// qgroupLimit is the qgroup limit of the subvolume at p, as btrfs keeps it.
func qgroupLimit(t *testing.T, p string) uint64 {
	t.Helper()
	var u quota.Usage
	withDir(t, p, func(fd int) {
		var err error
		if u, err = quota.QgroupUsage(fd); err != nil {
			t.Fatal(err)
		}
	})
	return u.Limit
}

func sized(size string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse(size)
	}
}

// resizeClaim sets the claim's request to size.
func resizeClaim(ns, name, size string) error {
	patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":%q}}}}`, size)
	_, err := client.CoreV1().PersistentVolumeClaims(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// resized waits until the claim's resize is finished at size, as dirpv finishes it: the claim's
// capacity and its PV's are size, and no condition or status of the resize is left.
func resized(t *testing.T, ns, name, size string) *v1.PersistentVolume {
	t.Helper()
	want := resource.MustParse(size)
	var pv *v1.PersistentVolume
	var last string
	pollFor(t, timeout, "claim "+ns+"/"+name+" resized to "+size, func(ctx context.Context) (bool, error) {
		pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = fmt.Sprintf("capacity %v allocated %v statuses %v conditions %v", pvc.Status.Capacity.Storage(),
			pvc.Status.AllocatedResources.Storage(), pvc.Status.AllocatedResourceStatuses, pvc.Status.Conditions)
		if c := pvc.Status.Capacity[v1.ResourceStorage]; c.Cmp(want) != 0 ||
			len(pvc.Status.Conditions) != 0 || len(pvc.Status.AllocatedResourceStatuses) != 0 {
			return false, nil
		}
		pv, err = client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		c := pv.Spec.Capacity[v1.ResourceStorage]
		return c.Cmp(want) == 0, nil
	})
	t.Logf("claim %s/%s resized: %s", ns, name, last)
	return pv
}

// write writes mb MiB of zeros to the new file in the pod's volume, and returns what dd said and
// the file's size.
func write(t *testing.T, ns, pod, file string, mb int) (string, int64) {
	t.Helper()
	out := exec1(t, ns, pod, fmt.Sprintf("dd if=/dev/zero of=/data/%s bs=1M count=%d conv=fsync 2>&1; echo rc=$?; stat -c %%s /data/%s", file, mb, file))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var size int64
	fmt.Sscan(lines[len(lines)-1], &size)
	return out, size
}

func overLimit(out string) bool {
	return strings.Contains(out, "Disk quota exceeded") || strings.Contains(out, "No space left on device")
}

// testCapacity: with capacity: enforce, a volume on a btrfs with quotas is a subvolume held to
// its claim's size; resizing the claim lets it hold more; a shrink is refused; a recycled
// volume keeps its limit; a filesystem that cannot enforce sizes fails the claim with an event
// saying so. A label class's claims are resized too, in their sizes only.
func testCapacity(t *testing.T) {
	mountBtrfs(t)
	t.Run("EnforceAndExpand", testEnforceAndExpand)
	t.Run("RecycleKeepsLimit", testRecycleKeepsLimit)
	t.Run("NoQuota", testEnforceNoQuota)
	t.Run("NoRoom", testNoRoom)
	t.Run("LabelExpand", testLabelExpand)
	// Last: the probe that failed before the btrfs was mounted runs again a minute later.
	t.Run("Probed", testProbed)
}

func testEnforceAndExpand(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "data", "e2e-enforce", sized("16Mi"))
	pod(t, ns, "app", "data", onNode("node1")) // node1: the btrfs is this machine's
	pv := bound(t, ns, "data")
	dir := pvPath(pv)
	if !strings.HasPrefix(pv.Annotations["dirpv.io/quota"], "btrfs subvolume ") || pv.Annotations["dirpv.io/capacity"] != "enforce" {
		t.Errorf("PV annotations %v, want capacity enforce and the subvolume", pv.Annotations)
	}
	if st, err := os.Stat(dir); err != nil || st.Sys().(*syscall.Stat_t).Ino != 256 {
		t.Fatalf("%s is not a subvolume (inode 256): %v", dir, err)
	}
	if got := qgroupLimit(t, dir); got != 16*mib {
		t.Errorf("qgroup limit %d, want 16 MiB", got)
	}
	out, size := write(t, ns, "app", "a", 64)
	if !overLimit(out) || size > 16*mib {
		t.Fatalf("writing 64 MiB into a 16 MiB volume: %d bytes written; dd said:\n%s", size, out)
	}
	t.Logf("16 MiB volume: %d bytes written, then: %s", size, strings.Split(out, "\n")[0])

	// A shrink below what the claim has is refused (by kube-apiserver's validation).
	if err := resizeClaim(ns, "data", "8Mi"); err == nil || !strings.Contains(err.Error(), "less than") {
		t.Errorf("shrinking the claim to 8Mi: %v, want it refused", err)
	}

	if err := resizeClaim(ns, "data", "48Mi"); err != nil {
		t.Fatal(err)
	}
	resized(t, ns, "data", "48Mi")
	event(t, ns, "data", "VolumeResizeSuccessful", "resized to 48Mi")
	if got := qgroupLimit(t, dir); got != 48*mib {
		t.Errorf("qgroup limit after the resize %d, want 48 MiB", got)
	}
	if out, size := write(t, ns, "app", "b", 24); overLimit(out) || size != 24*mib {
		t.Errorf("writing 24 MiB more after the resize to 48Mi: %d bytes; dd said:\n%s", size, out)
	}
	if out, _ := write(t, ns, "app", "c", 64); !overLimit(out) {
		t.Errorf("writing past 48 MiB: dd said:\n%s", out)
	}

	// The leader reads the volume's qgroup every --usage-interval (5s here); btrfs settles a
	// qgroup's usage at its next commit (30 s at most).
	lead := leaderPod(t)
	var m volumeMetrics
	pollFor(t, timeout, "the usage metrics of "+ns+"/data on "+lead.Name, func(context.Context) (bool, error) {
		var err error
		m, err = readVolumeMetrics(lead.Status.PodIP, ns, "data")
		return err == nil && m.capacity == 48*mib && m.used > 16*mib, nil
	})
	t.Logf("%s: dirpv_volume_capacity_bytes %v, dirpv_volume_used_bytes %v (%.1f MiB)", lead.Name, m.capacity, m.used, m.used/mib)
	if m.pv != pv.Name {
		t.Errorf("the series name PV %q, want %s", m.pv, pv.Name)
	}

	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
	waitGone(t, dir)
	pollFor(t, timeout, "the usage metrics of the deleted "+ns+"/data to go", func(context.Context) (bool, error) {
		m, err := readVolumeMetrics(lead.Status.PodIP, ns, "data")
		return err == nil && !m.found, nil
	})
}

// volumeMetrics are one claim's series of dirpv_volume_capacity_bytes and dirpv_volume_used_bytes.
type volumeMetrics struct {
	found          bool
	pv             string
	capacity, used float64
}

// readVolumeMetrics reads the usage metrics of the claim ns/name from the /metrics of the
// provisioner pod at ip.
func readVolumeMetrics(ip, ns, name string) (volumeMetrics, error) {
	var m volumeMetrics
	resp, err := http.Get("http://" + ip + ":8080/metrics")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		metric, rest, ok := strings.Cut(line, "{")
		if !ok || (metric != "dirpv_volume_capacity_bytes" && metric != "dirpv_volume_used_bytes") ||
			!strings.Contains(rest, `namespace="`+ns+`"`) || !strings.Contains(rest, `persistentvolumeclaim="`+name+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			return m, fmt.Errorf("%q: %w", line, err)
		}
		if _, after, ok := strings.Cut(rest, `persistentvolume="`); ok {
			m.pv, _, _ = strings.Cut(after, `"`)
		}
		m.found = true
		if metric == "dirpv_volume_capacity_bytes" {
			m.capacity = v
		} else {
			m.used = v
		}
	}
	return m, sc.Err()
}

func testRecycleKeepsLimit(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "first", "e2e-enforce-recycle", sized("16Mi"))
	pod(t, ns, "first-app", "first", onNode("node1"))
	pv := bound(t, ns, "first")
	dir := pvPath(pv)
	write(t, ns, "first-app", "old", 4)
	deletePod(t, ns, "first-app")
	deleteClaim(t, ns, "first")
	pvPhase(t, pv.Name, v1.VolumeAvailable)
	if got := qgroupLimit(t, dir); got != 16*mib {
		t.Errorf("qgroup limit of the recycled volume %d, want 16 MiB kept", got)
	}

	claim(t, ns, "second", "e2e-enforce-recycle", sized("16Mi"))
	pod(t, ns, "second-app", "second", onNode("node1"))
	if got := bound(t, ns, "second"); got.Name != pv.Name {
		t.Fatalf("the next claim got PV %s, not the recycled %s", got.Name, pv.Name)
	}
	if out, size := write(t, ns, "second-app", "a", 64); !overLimit(out) || size > 16*mib {
		t.Errorf("writing 64 MiB into the recycled 16 MiB volume: %d bytes; dd said:\n%s", size, out)
	}

	deletePod(t, ns, "second-app")
	deleteClaim(t, ns, "second")
	pvPhase(t, pv.Name, v1.VolumeAvailable)
	if err := client.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pvGone(t, pv.Name)
	waitGone(t, dir)
}

// testEnforceNoQuota: the node's own filesystem has no quotas on; the claim stays Pending with an
// event that says what the filesystem would need.
func testEnforceNoQuota(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "data", "e2e-enforce-noquota", sized("16Mi"))
	startPod(t, ns, "app", "data", onNode("node1")) // node1: this machine
	msg := event(t, ns, "data", "ProvisioningFailed", "quota")
	t.Logf("ProvisioningFailed: %s", msg)
	if left := entries(t, basePath+"/noquota"); len(left) != 0 {
		t.Errorf("left behind in %s/noquota: %v", basePath, left)
	}
	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
}

// testLabelExpand: a claim of a class whose sizes are labels grows in its sizes only.
func testLabelExpand(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "data", "e2e-label-expand", sized("1Mi"))
	pod(t, ns, "app", "data", onNode("node1"))
	pv := bound(t, ns, "data")
	if err := resizeClaim(ns, "data", "2Mi"); err != nil {
		t.Fatal(err)
	}
	resized(t, ns, "data", "2Mi")
	event(t, ns, "data", "VolumeResizeSuccessful", "resized to 2Mi")
	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
}

// testNoRoom: a claim larger than the btrfs (512 MiB; overcommit 1) is refused with an event that
// says how much room there is, and leaves nothing behind.
func testNoRoom(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "big", "e2e-enforce", sized("1Gi"))
	startPod(t, ns, "app", "big", onNode("node1")) // node1: this machine
	msg := event(t, ns, "big", "ProvisioningFailed", "no room for the volume's size")
	t.Logf("ProvisioningFailed: %s", msg)
	if !strings.Contains(msg, "the filesystem of "+btrfsRoot+" holds ") {
		t.Errorf("the event does not say how much the filesystem holds: %s", msg)
	}
	deletePod(t, ns, "app")
	deleteClaim(t, ns, "big")
	for _, name := range entries(t, btrfsRoot) {
		if strings.Contains(name, ns) {
			t.Errorf("left behind in %s: %s", btrfsRoot, name)
		}
	}
}

// testProbed: the leader probes each enforcing class on each node (at the start of its term, and
// again while a probe fails) and says which can enforce sizes: e2e-enforce on node1 can once the
// btrfs is mounted; e2e-enforce-noquota, on the node's own filesystem, cannot.
func testProbed(t *testing.T) {
	lead := leaderPod(t)
	want := []string{
		`dirpv_capacity_enforceable{node="node1",storageclass="e2e-enforce"} 1`,
		`dirpv_capacity_enforceable{node="node1",storageclass="e2e-enforce-noquota"} 0`,
	}
	var missing []string
	defer func() {
		if t.Failed() {
			t.Logf("missing from %s's /metrics: %q", lead.Name, missing)
		}
	}()
	pollFor(t, timeout, "dirpv_capacity_enforceable on "+lead.Name, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + lead.Status.PodIP + ":8080/metrics")
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, nil
		}
		missing = missing[:0]
		for _, line := range want {
			if !strings.Contains(string(body), "\n"+line+"\n") {
				missing = append(missing, line)
			}
		}
		return len(missing) == 0, nil
	})
}
