//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"dirpv.io/dirpv/provisioner/quota"
)

// capacityName is the slash-free provisioner name whose hostPath classes get capacity-aware
// scheduling (dirpv's --capacity-name, and the CSIDriver of manifests/base).
const capacityName = "dirpv.io"

// testFleet: node-local volumes on nodes with several disks of their own. Each case mounts small
// filesystems on the nodes below --hostpath-root (loop-device btrfs with quotas where sizes are
// enforced, tmpfs where they are labels) and takes them down at its end.
func testFleet(t *testing.T) {
	needNodes(t, 2)
	t.Run("SeveralDisks", testSeveralDisks)
	t.Run("CapacityScheduling", testCapacityScheduling)
	t.Run("CapacityMatchesDf", testCapacityMatchesDf)
	t.Run("Immediate", testImmediate)
}

// onNodeRun runs a command on node (in its mount namespace) and returns its output.
func onNodeRun(t *testing.T, node string, args ...string) string {
	t.Helper()
	if node == "node1" {
		return command(t, args[0], args[1:]...)
	}
	return command(t, filepath.Join(clusterDir(), "nodes", node, "exec"), args...)
}

// mountDisk mounts a new filesystem at dir on node for the rest of the test: a btrfs of size
// bytes with quotas on a loop device, or a tmpfs of that size.
func mountDisk(t *testing.T, node, dir, fstype string, size int64) {
	t.Helper()
	onNodeRun(t, node, "mkdir", "-p", dir)
	switch fstype {
	case "tmpfs":
		onNodeRun(t, node, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,nosuid,nodev", size), "tmpfs", dir)
	case "btrfs":
		img := filepath.Join(t.TempDir(), "disk.img")
		f, err := os.Create(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		command(t, "mkfs.btrfs", "-q", img)
		loop := command(t, "losetup", "--find", "--show", img)
		t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
		// Quotas are the filesystem's own: turned on here, they hold wherever it is mounted.
		tmp := t.TempDir()
		if err := syscall.Mount(loop, tmp, "btrfs", 0, ""); err != nil {
			t.Fatalf("mount %s: %v", loop, err)
		}
		withDir(t, tmp, func(fd int) {
			if err := quota.EnableQuota(fd); err != nil {
				t.Fatal(err)
			}
		})
		if err := syscall.Unmount(tmp, 0); err != nil {
			t.Fatal(err)
		}
		onNodeRun(t, node, "mount", "-t", "btrfs", "-o", "nosuid,nodev", loop, dir)
	default:
		t.Fatalf("no filesystem %s", fstype)
	}
	t.Cleanup(func() {
		if out, err := nodeCommand(node, "umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("unmount %s on %s: %v %s", dir, node, err, out)
		}
		_ = nodeCommand(node, "rmdir", dir).Run()
	})
}

// nodeCommand is a command that runs on node.
func nodeCommand(node string, args ...string) *exec.Cmd {
	if node == "node1" {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command(filepath.Join(clusterDir(), "nodes", node, "exec"), args...)
}

// avail is what df says is available on the filesystem of dir on node, in bytes.
func avail(t *testing.T, node, dir string) int64 {
	t.Helper()
	out := strings.Fields(onNodeRun(t, node, "df", "-B1", "--output=avail", dir))
	n, err := strconv.ParseInt(out[len(out)-1], 10, 64)
	if err != nil {
		t.Fatalf("df %s on %s: %q", dir, node, out)
	}
	return n
}

// fleetClass makes a hostPath class of provisioner with binding mode for this test only.
func fleetClass(t *testing.T, name, provisioner string, mode storagev1.VolumeBindingMode, params map[string]string) string {
	t.Helper()
	params["backend"] = "hostPath"
	return storageClass(t, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner, VolumeBindingMode: &mode, Parameters: params,
	})
}

// reclaimedFirst deletes ns at the end of the test and waits until the volumes of classes are
// gone, before the disks they are on (mounted earlier) are taken down.
func reclaimedFirst(t *testing.T, ns string, classes ...string) {
	t.Cleanup(func() {
		ctx := context.Background()
		_ = client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		pollFor(t, 2*timeout, "the volumes of "+strings.Join(classes, ", ")+" reclaimed", func(ctx context.Context) (bool, error) {
			pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			for _, pv := range pvs.Items {
				for _, c := range classes {
					if pv.Spec.StorageClassName == c {
						return false, nil
					}
				}
			}
			return true, nil
		})
	})
}

// published is the CSIStorageCapacity dirpv publishes for class on node, or nil.
func published(ctx context.Context, class, node string) (*storagev1.CSIStorageCapacity, error) {
	list, err := client.StorageV1().CSIStorageCapacities(dirpvNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i, c := range list.Items {
		if c.StorageClassName == class && c.NodeTopology != nil && c.NodeTopology.MatchLabels[v1.LabelHostname] == node {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// waitPublished waits until dirpv publishes for class on node the room want says is right
// (capacity and maximum volume size, in bytes), and returns them.
func waitPublished(t *testing.T, class, node string, want func(capacity, largest int64) bool) (int64, int64) {
	t.Helper()
	var capacity, largest int64
	var last string
	pollFor(t, timeout, fmt.Sprintf("the room published for class %s on %s", class, node), func(ctx context.Context) (bool, error) {
		c, err := published(ctx, class, node)
		if err != nil || c == nil || c.Capacity == nil || c.MaximumVolumeSize == nil {
			last = fmt.Sprintf("%+v %v", c, err)
			return false, nil
		}
		capacity, largest = c.Capacity.Value(), c.MaximumVolumeSize.Value()
		last = fmt.Sprintf("capacity %d, maximum volume size %d", capacity, largest)
		return want(capacity, largest), nil
	})
	t.Logf("class %s on %s: %s", class, node, last)
	return capacity, largest
}

// statfsSize is the size of the filesystem at p on this machine.
func statfsSize(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * int64(st.Bsize) // Bsize is an int32 on 32-bit arm
}

// testSeveralDisks: a class of three roots on node1: two disks of different sizes, and a plain
// directory where a third disk did not mount. With requireMount the directory is never used;
// claims fill the disks by room (sizes enforced: each volume takes its size of its disk's room),
// each recorded on its PV; a class whose only root is that directory gets an event saying so.
func testSeveralDisks(t *testing.T) {
	root := basePath + "/fleet-disks"
	d1, d2, d3 := root+"/d1", root+"/d2", root+"/d3"
	mountDisk(t, "node1", d1, "btrfs", 256*mib)
	mountDisk(t, "node1", d2, "btrfs", 384*mib)
	onNodeRun(t, "node1", "mkdir", "-p", d3)
	t.Cleanup(func() { _ = os.Remove(d3) })
	class := fleetClass(t, "e2e-disks", capacityName, storagev1.VolumeBindingWaitForFirstConsumer, map[string]string{
		"basePath": d1 + "," + d2 + "," + d3, "requireMount": "true", "capacity": "enforce",
	})
	unmounted := fleetClass(t, "e2e-disk-unmounted", "dirpv.io/provisioner", storagev1.VolumeBindingWaitForFirstConsumer, map[string]string{
		"basePath": d3, "requireMount": "true",
	})
	ns := namespace(t)
	reclaimedFirst(t, ns, class, unmounted)

	// One after another, so that each sees the room the ones before it took.
	const size = 64 * mib
	count := map[string]int64{}
	for i := range 6 {
		name := fmt.Sprintf("v%d", i)
		claim(t, ns, name, class, sized("64Mi"))
		pod(t, ns, name, name, onNode("node1"))
		pv := bound(t, ns, name)
		base := pv.Annotations["dirpv.io/base-path"]
		if base != d1 && base != d2 || filepath.Dir(pvPath(pv)) != base {
			t.Fatalf("claim %s: PV %s in %s, base path %q; want it on %s or %s", name, pv.Name, pvPath(pv), base, d1, d2)
		}
		if st, err := os.Stat(pvPath(pv)); err != nil || st.Sys().(*syscall.Stat_t).Ino != 256 || qgroupLimit(t, pvPath(pv)) != size {
			t.Fatalf("claim %s: %s is not a subvolume held to 64 MiB: %v", name, pvPath(pv), err)
		}
		count[base]++
	}
	// Most room first: the rooms left on the two disks end within one volume of each other.
	room1 := statfsSize(t, d1) - count[d1]*size
	room2 := statfsSize(t, d2) - count[d2]*size
	t.Logf("volumes: %d on %s (%d MiB left), %d on %s (%d MiB left)", count[d1], d1, room1/mib, count[d2], d2, room2/mib)
	if count[d1] == 0 || count[d2] == 0 || room1-room2 > size || room2-room1 > size {
		t.Errorf("volumes: %d on %s, %d on %s: want both disks filled by room", count[d1], d1, count[d2], d2)
	}
	if entries, err := os.ReadDir(d3); err != nil || len(entries) != 0 {
		t.Errorf("the plain directory %s holds %d entries (%v): it must not be used", d3, len(entries), err)
	}

	// A class whose only root is not a mount makes nothing, and says why.
	claim(t, ns, "nowhere", unmounted, sized("1Mi"))
	startPod(t, ns, "nowhere", "nowhere", onNode("node1"))
	event(t, ns, "nowhere", "ProvisioningFailed", "fleet-disks/d3 is not a mounted filesystem")
	if entries, err := os.ReadDir(d3); err != nil || len(entries) != 0 {
		t.Errorf("the plain directory %s holds %d entries (%v)", d3, len(entries), err)
	}
}

// testCapacityScheduling: the scheduler itself sends pods only to nodes where their volumes fit,
// from the CSIStorageCapacity objects dirpv publishes: a class whose root is a disk only node1
// has never gets a pod on node2; a StatefulSet whose volumes do not fit on one node spreads
// over both, with no provisioning failure on the way; a claim larger than any node's room
// leaves its pod Pending with the scheduler's own message.
func testCapacityScheduling(t *testing.T) {
	root := basePath + "/fleet-sched"
	spread, only := root+"/s1", root+"/one"
	for _, node := range []string{"node1", "node2"} {
		mountDisk(t, node, spread, "btrfs", 256*mib)
	}
	mountDisk(t, "node1", only, "btrfs", 256*mib)
	spreadClass := fleetClass(t, "e2e-sched", capacityName, storagev1.VolumeBindingWaitForFirstConsumer, map[string]string{
		"basePath": spread, "requireMount": "true", "capacity": "enforce",
	})
	onlyClass := fleetClass(t, "e2e-sched-one", capacityName, storagev1.VolumeBindingWaitForFirstConsumer, map[string]string{
		"basePath": only, "requireMount": "true", "capacity": "enforce",
	})
	ns := namespace(t)
	reclaimedFirst(t, ns, spreadClass, onlyClass)

	// What the scheduler will read: each disk's size, none on node2 for the class of node1's disk.
	size := statfsSize(t, only) / mib * mib
	for _, c := range []struct{ class, node string }{{spreadClass, "node1"}, {spreadClass, "node2"}, {onlyClass, "node1"}} {
		waitPublished(t, c.class, c.node, func(capacity, largest int64) bool { return capacity == size && largest == size })
	}
	waitPublished(t, onlyClass, "node2", func(capacity, largest int64) bool { return capacity == 0 && largest == 0 })

	// Three pods of the class of node1's disk, started at once: all on node1.
	only3 := parallelStatefulSet(ns, "only", 3, &onlyClass)
	only3.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("32Mi")
	if _, err := client.AppsV1().StatefulSets(ns).Create(context.Background(), only3, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		p := fmt.Sprintf("only-%d", i)
		podRunning(t, ns, p)
		if node := podNode(t, ns, p); node != "node1" {
			t.Errorf("pod %s runs on %s: the class's disk is on node1 only", p, node)
		}
	}

	// Four 100 MiB volumes, 256 MiB disks: two fit on a node. The StatefulSet grows one pod at a
	// time, each once the room its volume took is published.
	set := parallelStatefulSet(ns, "spread", 1, &spreadClass)
	set.Spec.PodManagementPolicy = appsv1.OrderedReadyPodManagement
	set.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("100Mi")
	if _, err := client.AppsV1().StatefulSets(ns).Create(context.Background(), set, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int64{}
	for i := range 4 {
		if i > 0 {
			scale := fmt.Sprintf(`{"spec":{"replicas":%d}}`, i+1)
			kubectl(t, "-n", ns, "patch", "statefulset", "spread", "--type=merge", "-p", scale)
		}
		p := fmt.Sprintf("spread-%d", i)
		podRunning(t, ns, p)
		node := podNode(t, ns, p)
		if pv := bound(t, ns, "data-"+p); pvNode(pv) != node {
			t.Fatalf("pod %s on %s, its volume on %s", p, node, pvNode(pv))
		}
		perNode[node]++
		left := size - perNode[node]*100*mib
		waitPublished(t, spreadClass, node, func(capacity, largest int64) bool { return capacity == left && largest == left })
	}
	if perNode["node1"] != 2 || perNode["node2"] != 2 {
		t.Errorf("volumes per node %v, want 2 and 2", perNode)
	}
	evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "reason=ProvisioningFailed"})
	if err != nil || len(evs.Items) != 0 {
		t.Errorf("provisioning failed on the way (%v): %+v", err, evs.Items)
	}

	// Larger than any node's room: the scheduler keeps its pod Pending, and says why.
	claim(t, ns, "huge", spreadClass, sized("1Gi"))
	startPod(t, ns, "huge", "huge")
	poll(t, "pod huge unschedulable for storage capacity", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "huge", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled && c.Status == v1.ConditionFalse && strings.Contains(c.Message, "did not have enough free storage") {
				t.Logf("pod huge: %s", c.Message)
				return true, nil
			}
		}
		return false, nil
	})
	if pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "huge", metav1.GetOptions{}); err != nil || pvc.Status.Phase != v1.ClaimPending {
		t.Errorf("claim huge: %v %v, want Pending", pvc.Status.Phase, err)
	}
}

// testCapacityMatchesDf: for a class whose sizes are labels, the room published is the free
// space df reports on each node, as volumes are made and removed.
func testCapacityMatchesDf(t *testing.T) {
	dir := basePath + "/fleet-df/l1"
	for _, node := range []string{"node1", "node2"} {
		mountDisk(t, node, dir, "tmpfs", 64*mib)
	}
	class := fleetClass(t, "e2e-df", capacityName, storagev1.VolumeBindingWaitForFirstConsumer, map[string]string{
		"basePath": dir, "requireMount": "true",
	})
	ns := namespace(t)
	reclaimedFirst(t, ns, class)
	// df's free bytes, in the whole MiB dirpv publishes.
	matchesDf := func(node string) func(capacity, largest int64) bool {
		return func(capacity, largest int64) bool {
			want := avail(t, node, dir) / mib * mib
			return capacity == want && largest == want
		}
	}
	for _, node := range []string{"node1", "node2"} {
		waitPublished(t, class, node, matchesDf(node))
	}
	claim(t, ns, "a", class, sized("16Mi"))
	pod(t, ns, "a", "a", onNode("node2"))
	exec1(t, ns, "a", "dd if=/dev/zero of=/data/f bs=1M count=20 2>&1")
	before, _ := waitPublished(t, class, "node2", func(int64, int64) bool { return true })
	// The next create on node2 has its room measured again: 20 MiB less.
	claim(t, ns, "b", class, sized("16Mi"))
	pod(t, ns, "b", "b", onNode("node2"))
	after, _ := waitPublished(t, class, "node2", matchesDf("node2"))
	if before-after < 20*mib {
		t.Errorf("published %d MiB before the second create and %d MiB after: want the 20 MiB written gone", before/mib, after/mib)
	}
	// Deleting the first volume gives its room back.
	deletePod(t, ns, "a")
	pv := bound(t, ns, "a")
	deleteClaim(t, ns, "a")
	pvGone(t, pv.Name)
	back, _ := waitPublished(t, class, "node2", matchesDf("node2"))
	if back-after < 20*mib {
		t.Errorf("published %d MiB after the delete, %d MiB before it: want the 20 MiB back", back/mib, after/mib)
	}
	waitPublished(t, class, "node1", matchesDf("node1"))
}

// testImmediate: a class of Immediate binding binds a claim at once, with no pod, on the node
// whose root has most room; the claim's pod then runs there.
func testImmediate(t *testing.T) {
	dir := basePath + "/fleet-immediate/i1"
	mountDisk(t, "node1", dir, "tmpfs", 32*mib)
	mountDisk(t, "node2", dir, "tmpfs", 96*mib)
	class := fleetClass(t, "e2e-immediate", "dirpv.io/provisioner", storagev1.VolumeBindingImmediate, map[string]string{
		"basePath": dir, "requireMount": "true",
	})
	ns := namespace(t)
	reclaimedFirst(t, ns, class)
	claim(t, ns, "now", class, sized("16Mi"))
	pv := bound(t, ns, "now")
	if pvNode(pv) != "node2" || pv.Annotations["dirpv.io/base-path"] != dir {
		t.Fatalf("PV %s on %s in %s: want node2, whose %s has most room", pv.Name, pvNode(pv), pv.Annotations["dirpv.io/base-path"], dir)
	}
	pod(t, ns, "app", "now")
	if node := podNode(t, ns, "app"); node != "node2" {
		t.Errorf("the claim's pod runs on %s, its volume is on node2", node)
	}
	exec1(t, ns, "app", "echo here > /data/f")
	if got := strings.TrimSpace(onNodeRun(t, "node2", "cat", pvPath(pv)+"/f")); got != "here" {
		t.Errorf("node2's %s/f holds %q", pvPath(pv), got)
	}
}
