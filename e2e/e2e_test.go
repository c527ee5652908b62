//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestE2E runs the suite in order on one cluster: dirpv is installed once, switched to
// --local-root and back, and its leader is killed along the way; the fault cases (faults*_test.go)
// come last. `go test -run 'TestE2E/Faults/LeaderKills'` runs one case after the install.
func TestE2E(t *testing.T) {
	install(t, "install")
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"StatefulSetKeepsData", testStatefulSet},
		{"PodDataSurvivesPod", testPodData},
		{"HostPathThroughHelperPods", testHelperPods},
		{"HelperOutcomesInLog", testHelperLog},
		{"HelperAgents", testHelperAgents},
		{"BatchedHelperPods", testBatchedHelpers},
		{"NoSharedRoot", testNoSharedRoot},
		{"NFS", testNFS(mount)},
		{"NFSKernelClient", testNFSKernelClient(mount)},
		{"Reclaim", testReclaim(mount)},
		{"RecycleNFS", testRecycleNFS(mount)},
		{"NFSDirect", testNFS(direct)},
		{"NFSDirectKernelClient", testNFSKernelClient(direct)},
		{"ReclaimDirect", testReclaim(direct)},
		{"RecycleNFSDirect", testRecycleNFS(direct)},
		{"NFSDirectNewExport", testNFSDirectNewExport},
		{"Adopt", testAdopt},
		{"AdoptLocalPath", testAdoptLocalPath},
		{"BadInput", testBadInput},
		{"ClaimBeingDeleted", testClaimBeingDeleted},
		{"NestedClasses", testNestedClasses},
		{"Capacity", testCapacity},
		{"LocalVolumeType", testLocalVolumeType},
		{"Recycle", testRecycle},
		{"RecycleStatefulSet", testRecycleStatefulSet},
		{"LeaderFailover", testLeaderFailover},
		{"SpreadStatefulSet", testSpreadStatefulSet},
		{"HelpersOnTheirNode", testHelpersOnTheirNode},
		{"LeaderKilledOnNode", testLeaderKilledOnNode},
		{"RecycleAcrossNodes", testRecycleAcrossNodes},
		{"Fleet", testFleet},
		{"Cordon", testCordon},
		{"LocalRootAndRollingUpdate", testLocalRoot},
		{"RBAC", testRBAC},
		{"HelperPodConfinement", testHelperPodConfinement},
		{"AdmissionPolicy", testAdmissionPolicy},
		{"Prometheus", testPrometheus},
		{"Helm", testHelm},
		{"Faults", testFaults},
		{"NodeRemoved", testNodeRemoved}, // last: it takes a node away
	} {
		if !t.Run(tc.name, tc.fn) {
			return // later cases build on a working install
		}
	}
}

// testStatefulSet is the seed scenario: the shipped StatefulSet example, no storageClassName, so
// the default class; each replica's data survives the deletion of every pod.
func testStatefulSet(t *testing.T) {
	ns := namespace(t)
	kubectl(t, "-n", ns, "apply", "-k", "testdata/web")
	pods := []string{"web-0", "web-1", "web-2"}
	for _, p := range pods {
		podRunning(t, ns, p)
	}
	for i, p := range pods {
		pv := bound(t, ns, "www-"+p)
		if pv.Spec.StorageClassName != "dirpv-hostpath" || pv.Annotations["pv.kubernetes.io/provisioned-by"] != capacityName {
			t.Errorf("claim www-%s: PV %s class %q provisioned by %q", p, pv.Name, pv.Spec.StorageClassName, pv.Annotations["pv.kubernetes.io/provisioned-by"])
		}
		exec1(t, ns, p, "echo hello $(hostname) > /usr/share/nginx/html/index.html")
		// The data is in the PV's directory on the node.
		if b, err := os.ReadFile(filepath.Join(hostDir(pv), "index.html")); err != nil || string(b) != fmt.Sprintf("hello web-%d\n", i) {
			t.Errorf("%s on node %s: %q %v", pvPath(pv), pvNode(pv), b, err)
		}
	}
	uids := map[string]string{}
	for _, p := range pods {
		got, _ := client.CoreV1().Pods(ns).Get(context.Background(), p, metav1.GetOptions{})
		uids[p] = string(got.UID)
	}
	kubectl(t, "-n", ns, "delete", "pods", "-l", "app=nginx", "--wait=true")
	for _, p := range pods {
		poll(t, p+" recreated", func(ctx context.Context) (bool, error) {
			got, err := client.CoreV1().Pods(ns).Get(ctx, p, metav1.GetOptions{})
			return err == nil && string(got.UID) != uids[p], nil
		})
		podRunning(t, ns, p)
		if got := strings.TrimSpace(exec1(t, ns, p, "cat /usr/share/nginx/html/index.html")); got != "hello "+p {
			t.Errorf("%s reads %q after its pod was replaced, want %q", p, got, "hello "+p)
		}
	}
}

func testPodData(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "data", "")
	pod(t, ns, "writer", "data")
	exec1(t, ns, "writer", "echo kept > /data/file")
	deletePod(t, ns, "writer")
	pod(t, ns, "reader", "data")
	if got := strings.TrimSpace(exec1(t, ns, "reader", "cat /data/file")); got != "kept" {
		t.Fatalf("reader sees %q", got)
	}
}

// testHelperPods: a hostPath class with mode and owner; the directory is made and removed on
// the node by helper pods, and the PV is pinned to the node.
func testHelperPods(t *testing.T) {
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	claim(t, ns, "data", "e2e-hostpath-mode")
	pod(t, ns, "app", "data")
	pv := bound(t, ns, "data")
	dir := pvPath(pv)
	if !strings.HasPrefix(dir, basePath+"/e2e/"+ns+"-data-pvc-") || *pv.Spec.HostPath.Type != v1.HostPathDirectory {
		t.Errorf("hostPath %s type %v", dir, *pv.Spec.HostPath.Type)
	}
	fi, err := os.Stat(hostDir(pv))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o750 || st.Uid != 1000 || st.Gid != 2000 {
		t.Errorf("%s: mode %v owner %d:%d, want 0750 1000:2000", dir, fi.Mode().Perm(), st.Uid, st.Gid)
	}
	app, err := client.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	if len(terms) != 1 || terms[0].MatchExpressions[0].Key != v1.LabelHostname || terms[0].MatchExpressions[0].Values[0] != app.Spec.NodeName {
		t.Errorf("node affinity %+v, want the pod's node %s", terms, app.Spec.NodeName)
	}
	helpers.waitOps(t, pv.Name, "create")
	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
	waitGone(t, hostDir(pv))
	helpers.waitOps(t, pv.Name, "create", "delete")
	helpers.checkOnNode(t, pv.Name, app.Spec.NodeName)
}

// nfsAccess is how dirpv reaches the export in a case: through its backing directory (mount),
// or as an NFSv3 client of the server (direct). The direct classes are the mount classes'
// twins, named with "-direct".
type nfsAccess string

const (
	mount  nfsAccess = "mount"
	direct nfsAccess = "direct"
)

// class is the name of the class of this access mode.
func (a nfsAccess) class(name string) string {
	if a == direct {
		return name + "-direct"
	}
	return name
}

// testNFS checks the export side: the PV's source, the class's mount options, the directory.
func testNFS(access nfsAccess) func(*testing.T) {
	return func(t *testing.T) {
		ns := namespace(t)
		claim(t, ns, "shared", access.class("e2e-nfs"), func(c *v1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
		})
		pv := bound(t, ns, "shared")
		checkNFSVolume(t, ns, pv, access)
	}
}

func checkNFSVolume(t *testing.T, ns string, pv *v1.PersistentVolume, access nfsAccess) {
	t.Helper()
	if pv.Spec.NFS.Path != exportDir+"/"+ns+"/shared" || len(pv.Spec.MountOptions) != 1 || pv.Spec.MountOptions[0] != "nfsvers=4.1" {
		t.Errorf("PV source %+v mount options %v", pv.Spec.NFS, pv.Spec.MountOptions)
	}
	if got := pv.Annotations["dirpv.io/nfs-access"]; (access == direct) != (got == "direct") {
		t.Errorf("PV of access %s: annotation dirpv.io/nfs-access %q", access, got)
	}
	dir := onExport(t, pv)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("%s: %v %v", dir, fi, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deleteClaim(t, ns, "shared")
	pvGone(t, pv.Name)
	waitGone(t, dir)
}

func testReclaim(access nfsAccess) func(*testing.T) {
	return func(t *testing.T) { reclaim(t, access) }
}

func reclaim(t *testing.T, access nfsAccess) {
	ctx := context.Background()
	ns := namespace(t)

	t.Run("archive", func(t *testing.T) {
		claim(t, ns, "arch", access.class("e2e-nfs-archive"))
		pv := bound(t, ns, "arch")
		dir := onExport(t, pv)
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old data"), 0o644); err != nil {
			t.Fatal(err)
		}
		deleteClaim(t, ns, "arch")
		msg := event(t, "", pv.Name, "VolumeArchived", "archived as archived-")
		pvGone(t, pv.Name)
		archived := filepath.Join(exportDir, msg[strings.LastIndex(msg, " ")+1:])
		if b, err := os.ReadFile(filepath.Join(archived, "f")); err != nil || string(b) != "old data" {
			t.Errorf("archive %s: %q %v", archived, b, err)
		}
		if exists(dir) {
			t.Errorf("%s still there after archiving", dir)
		}
	})

	t.Run("onDelete retain", func(t *testing.T) {
		claim(t, ns, "ret", access.class("e2e-nfs-retain"))
		pv := bound(t, ns, "ret")
		dir := onExport(t, pv)
		deleteClaim(t, ns, "ret")
		pvGone(t, pv.Name)
		if !exists(dir) {
			t.Errorf("%s removed despite onDelete: retain", dir)
		}
	})

	t.Run("reclaimPolicy Retain", func(t *testing.T) {
		claim(t, ns, "keep", access.class("e2e-nfs-keep"))
		pv := bound(t, ns, "keep")
		dir := onExport(t, pv)
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
		deleteClaim(t, ns, "keep")
		poll(t, "PV "+pv.Name+" Released", func(ctx context.Context) (bool, error) {
			got, err := client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			return err == nil && got.Status.Phase == v1.VolumeReleased, nil
		})
		caughtUp(t, ns, access.class("e2e-nfs")) // a wrong reclaim would have happened by now
		if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "precious" {
			t.Errorf("data of a Retain PV: %q %v", b, err)
		}
		_ = client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	})

	t.Run("class deleted before the claim", func(t *testing.T) {
		class := dirpvClass(t, "e2e-ephemeral-"+ns,
			map[string]string{"backend": "nfs", "server": nfsServer, "share": exportDir, "onDelete": "archive", "access": string(access)})
		claim(t, ns, "orphan", class)
		pv := bound(t, ns, "orphan")
		dir := onExport(t, pv)
		if err := client.StorageV1().StorageClasses().Delete(ctx, class, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleteClaim(t, ns, "orphan")
		event(t, "", pv.Name, "VolumeArchived", "archived as")
		pvGone(t, pv.Name)
		if exists(dir) {
			t.Errorf("%s not archived", dir)
		}
	})

	t.Run("PV deleted before its claim", func(t *testing.T) {
		claim(t, ns, "early", access.class("e2e-nfs"))
		pv := bound(t, ns, "early")
		dir := onExport(t, pv)
		if err := client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The PV stays while its claim exists (kubernetes.io/pv-protection) ...
		caughtUp(t, ns, access.class("e2e-nfs"))
		if !exists(dir) {
			t.Fatalf("%s removed while its claim still exists", dir)
		}
		// ... and the directory goes with it when the claim goes.
		deleteClaim(t, ns, "early")
		pvGone(t, pv.Name)
		waitGone(t, dir)
	})
}

// testBadInput: each bad input gets an event naming the problem, the claim stays Pending, and
// nothing is written outside the roots.
func testBadInput(t *testing.T) {
	ns := namespace(t)
	escape := filepath.Join(filepath.Dir(exportDir), "dirpv-e2e-escaped")
	block := v1.PersistentVolumeBlock
	tests := []struct {
		claim  string
		class  string
		mutate func(*v1.PersistentVolumeClaim)
		want   string
	}{
		{"traversal", "e2e-traversal", func(c *v1.PersistentVolumeClaim) {
			c.Annotations = map[string]string{"dir": "../dirpv-e2e-escaped"}
		}, `rendered "../dirpv-e2e-escaped": unsafe volume path: escapes its root`},
		{"absolute", "e2e-traversal", func(c *v1.PersistentVolumeClaim) {
			c.Annotations = map[string]string{"dir": escape}
		}, "unsafe volume path: absolute"},
		{"unknown-param", "e2e-unknown-param", nil, `parameter "archiveOnDelete": unknown parameter`},
		{"bad-root-policy", "e2e-hostpath-bad-policy", nil, `parameter "rootPolicy": "biggest" is not one of mostRoom, leastRoom`},
		{"block", "e2e-nfs", func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block }, "block"},
		{"unknown-export", "e2e-unknown-export", nil, "NFS export nfs.elsewhere.test:/data is not mounted in the provisioner"},
		{"unallowed-server", "e2e-nfs-direct-unallowed", nil, "NFS server nfs.elsewhere.test, share /data, is not allowed for access: direct"},
	}
	for _, tt := range tests {
		mutate := []func(*v1.PersistentVolumeClaim){}
		if tt.mutate != nil {
			mutate = append(mutate, tt.mutate)
		}
		claim(t, ns, tt.claim, tt.class, mutate...)
	}
	for _, tt := range tests {
		t.Run(tt.claim, func(t *testing.T) {
			event(t, ns, tt.claim, "ProvisioningFailed", tt.want)
			pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), tt.claim, metav1.GetOptions{})
			if err != nil || pvc.Status.Phase != v1.ClaimPending {
				t.Errorf("claim %s: %v %v", tt.claim, pvc.Status.Phase, err)
			}
		})
	}
	if exists(escape) {
		t.Errorf("%s was created outside the export", escape)
	}
}

// testClaimBeingDeleted: a claim marked for deletion gets no volume, even once it becomes
// provisionable. A finalizer of the test's keeps the deleted claim; the node annotation the
// scheduler would set for its pod then lets kube-controller-manager hand it to dirpv.
func testClaimBeingDeleted(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	claims := client.CoreV1().PersistentVolumeClaims(ns)
	claim(t, ns, "doomed", "e2e-hostpath-mode", func(c *v1.PersistentVolumeClaim) { c.Finalizers = []string{"e2e.dirpv.io/hold"} })
	t.Cleanup(func() {
		_, _ = claims.Patch(ctx, "doomed", types.MergePatchType, dropFinalizers, metav1.PatchOptions{})
	})
	if err := claims.Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	node := nodeNames(t)[0]
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"volume.kubernetes.io/selected-node":%q}}}`, node)
	if _, err := claims.Patch(ctx, "doomed", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	event(t, ns, "doomed", "ProvisioningFailed", "the claim is being deleted: no volume is made for it")
	pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pv := range pvs.Items {
		if ref := pv.Spec.ClaimRef; ref != nil && ref.Namespace == ns {
			t.Errorf("PV %s made for the claim being deleted", pv.Name)
		}
	}
}

func leader(t *testing.T) string {
	t.Helper()
	lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(context.Background(), leaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Fatalf("lease: %v %+v", err, lease)
	}
	return *lease.Spec.HolderIdentity
}

// holderPod maps a Lease holder identity ("<pod>_<uuid>") to its pod.
func holderPod(id string) string { return id[:strings.LastIndex(id, "_")] }

// testLeaderFailover: two replicas, one leads; when its pod is deleted the other provisions the
// next claim within seconds, and no claim gets two PVs.
func testLeaderFailover(t *testing.T) {
	ctx := context.Background()
	pods, err := client.CoreV1().Pods(dirpvNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=provisioner"})
	if err != nil || len(pods.Items) != 2 {
		t.Fatalf("provisioner pods: %v %d", err, len(pods.Items))
	}
	// A helper pod as a crashed leader leaves behind: the next leader deletes it.
	leftover := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "dirpv-create-leftover", Namespace: dirpvNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "dirpv", "app.kubernetes.io/component": "helper"}},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			RestartPolicy:                 v1.RestartPolicyNever,
			Containers:                    []v1.Container{{Name: "helper", Image: busybox, ImagePullPolicy: v1.PullNever, Command: []string{"sleep", "3600"}}},
		},
	}
	if _, err := client.CoreV1().Pods(dirpvNamespace).Create(ctx, leftover, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	old := leader(t)
	start := time.Now()
	if err := client.CoreV1().Pods(dirpvNamespace).Delete(ctx, holderPod(old), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	claim(t, ns, "after-failover", "e2e-nfs")
	bound(t, ns, "after-failover")
	took := time.Since(start)
	t.Logf("claim bound %v after the leader's pod was deleted", took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("failover took %v", took)
	}
	if now := leader(t); now == old {
		t.Errorf("lease still held by the deleted pod %s", old)
	}
	poll(t, "the leftover helper pod deleted by the new leader", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(dirpvNamespace).Get(ctx, leftover.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	pvs, _ := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	perClaim := map[string]int{}
	for _, pv := range pvs.Items {
		if ref := pv.Spec.ClaimRef; ref != nil {
			perClaim[ref.Namespace+"/"+ref.Name+"/"+string(ref.UID)]++
		}
	}
	for c, n := range perClaim {
		if n > 1 {
			t.Errorf("claim %s has %d PVs", c, n)
		}
	}
	kubectl(t, "-n", dirpvNamespace, "rollout", "status", "deployment/dirpv", "--timeout=2m")
}

// testLocalRoot switches dirpv to --local-root with a rolling update, measures the Lease
// handover, and checks that hostPath work then runs without helper pods. It restores the
// install overlay at the end.
func testLocalRoot(t *testing.T) {
	ctx := context.Background()
	before := leader(t)
	var handover atomic.Int64
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	leases, err := client.CoordinationV1().Leases(dirpvNamespace).List(wctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := client.CoordinationV1().Leases(dirpvNamespace).Watch(wctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + leaseName, ResourceVersion: leases.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	deleted := make(chan time.Time, 1)
	pw := watchPods(t, wctx, "app.kubernetes.io/component=provisioner")
	go func() {
		for e := range pw.ResultChan() {
			if p, ok := e.Object.(*v1.Pod); ok && p.Name == holderPod(before) && p.DeletionTimestamp != nil {
				deleted <- time.Now()
				return
			}
		}
	}()
	go func() {
		var t0 time.Time // when the old leader's pod began terminating
		for {
			select {
			case t0 = <-deleted:
			case e, ok := <-w.ResultChan():
				if !ok {
					return
				}
				lease, ok := e.Object.(*coordinationv1.Lease)
				if !ok || lease.Spec.HolderIdentity == nil || t0.IsZero() {
					continue
				}
				if id := *lease.Spec.HolderIdentity; id != "" && id != before {
					handover.Store(int64(time.Since(t0)))
					return
				}
			}
		}
	}()
	install(t, "localroot")
	t.Cleanup(func() { install(t, "install") })
	poll(t, "lease handed over", func(context.Context) (bool, error) { return handover.Load() != 0, nil })
	took := time.Duration(handover.Load())
	t.Logf("rolling update: lease handed over %v after the old leader's pod began terminating", took.Round(10*time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("handover took %v; the lease should be released on shutdown", took)
	}

	// The leader works in-process on its own node only; every other node's volumes still go
	// through helper pods on that node.
	lead := leaderNode(t)
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	for _, node := range nodeNames(t) {
		pv := lifecycle(t, ns, "local-"+node, "dirpv-hostpath", node)
		pvGone(t, pv.Name)
		waitGone(t, hostDir(pv))
		// An agent's record of a batch may reach the watch after the PV is gone: wait for it.
		if node != lead {
			helpers.waitOps(t, pv.Name, "create", "delete")
		}
		ops := helpers.ops(pv.Name)
		t.Logf("a volume on %s, the leader on %s: helper pods %v", node, lead, ops)
		if node == lead && len(ops) != 0 {
			t.Errorf("%d helper pods for a volume on the leader's node %s with --local-root: %v", len(ops), node, ops)
		}
		helpers.checkOnNode(t, pv.Name, node)
	}
	if now := leaderNode(t); now != lead {
		t.Errorf("the leader moved from %s to %s during the case", lead, now)
	}
}

// pvPhase waits until the PV reaches phase.
func pvPhase(t *testing.T, name string, phase v1.PersistentVolumePhase) *v1.PersistentVolume {
	t.Helper()
	var pv *v1.PersistentVolume
	poll(t, "PV "+name+" "+string(phase), func(ctx context.Context) (bool, error) {
		var err error
		pv, err = client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return err == nil && pv.Status.Phase == phase, nil
	})
	return pv
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

// testRecycle: a released volume is scrubbed (symlinks planted in it are removed, never
// followed), becomes Available, and the next claim binds it and sees none of the old data.
func testRecycle(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "sibling", "e2e-recycle-hostpath")
	pod(t, ns, "sibling-app", "sibling", onNode("node1")) // node1: its files are this machine's
	exec1(t, ns, "sibling-app", "echo sibling data > /data/keep")
	sibling := pvPath(bound(t, ns, "sibling"))

	claim(t, ns, "first", "e2e-recycle-hostpath")
	pod(t, ns, "first-app", "first", onNode("node1"))
	exec1(t, ns, "first-app", "mkdir -p /data/a/b && echo old > /data/a/b/f && echo old > /data/ro && chmod 0444 /data/ro && chmod 0555 /data/a")
	pv := bound(t, ns, "first")
	dir := pvPath(pv)
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain || pv.Labels["dirpv.io/reclaim"] != "recycle" || pv.Annotations["dirpv.io/reclaim"] != "Recycle" {
		t.Errorf("PV policy %s labels %v", pv.Spec.PersistentVolumeReclaimPolicy, pv.Labels)
	}
	// Links a tenant could plant: to the sibling volume as the node sees it, as the helper pod
	// sees it, and relatively.
	for name, target := range map[string]string{
		"to-sibling-host": sibling,
		"to-sibling-pod":  "/data/recycle/" + filepath.Base(sibling),
		"to-sibling-rel":  "../" + filepath.Base(sibling),
		"to-root":         "/",
		"to-parent":       "..",
		"to-sibling-dir":  filepath.Dir(sibling) + "/" + filepath.Base(sibling) + "/",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	deletePod(t, ns, "first-app")
	deleteClaim(t, ns, "first")
	pvPhase(t, pv.Name, v1.VolumeAvailable)
	event(t, "", pv.Name, "VolumeRecycled", "scrubbed")
	if left := entries(t, dir); len(left) != 0 {
		t.Errorf("recycled volume still holds %v", left)
	}
	if b, err := os.ReadFile(filepath.Join(sibling, "keep")); err != nil || string(b) != "sibling data\n" {
		t.Errorf("sibling volume damaged: %q %v", b, err)
	}

	claim(t, ns, "second", "e2e-recycle-hostpath")
	pod(t, ns, "second-app", "second", onNode("node1"))
	if got := bound(t, ns, "second"); got.Name != pv.Name {
		t.Errorf("the next claim got PV %s, not the recycled %s", got.Name, pv.Name)
	}
	if seen := strings.TrimSpace(exec1(t, ns, "second-app", "ls -A /data")); seen != "" {
		t.Errorf("the next tenant sees %q", seen)
	}

	deletePod(t, ns, "second-app")
	deleteClaim(t, ns, "second")
	pvPhase(t, pv.Name, v1.VolumeAvailable)
	ctx := context.Background()
	if err := client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pvGone(t, pv.Name)
	waitGone(t, dir)
}

// testRecycleNFS: a recycled nfs volume is scrubbed on the export, then bound again; deleting
// the PV reclaims its directory.
func testRecycleNFS(access nfsAccess) func(*testing.T) {
	return func(t *testing.T) {
		ns := namespace(t)
		claim(t, ns, "shared", access.class("e2e-recycle-nfs"))
		npv := bound(t, ns, "shared")
		ndir := onExport(t, npv)
		if err := os.WriteFile(filepath.Join(ndir, "old"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		deleteClaim(t, ns, "shared")
		pvPhase(t, npv.Name, v1.VolumeAvailable)
		if left := entries(t, ndir); len(left) != 0 {
			t.Errorf("recycled nfs volume still holds %v", left)
		}
		claim(t, ns, "shared-again", access.class("e2e-recycle-nfs"))
		if got := bound(t, ns, "shared-again"); got.Name != npv.Name {
			t.Errorf("the next nfs claim got PV %s, not the recycled %s", got.Name, npv.Name)
		}

		// Deleting a recycling PV reclaims its directory by the class's onDelete, though its
		// Kubernetes policy is Retain: a bound one once its claim goes, a pool one at once.
		ctx := context.Background()
		if err := client.CoreV1().PersistentVolumes().Delete(ctx, npv.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleteClaim(t, ns, "shared-again")
		pvGone(t, npv.Name)
		waitGone(t, ndir)
	}
}

// classPVs lists the PVs of a class.
func classPVs(t *testing.T, class string) map[string]bool {
	t.Helper()
	pvs, err := client.CoreV1().PersistentVolumes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, pv := range pvs.Items {
		if pv.Spec.StorageClassName == class {
			names[pv.Name] = true
		}
	}
	return names
}

// testRecycleStatefulSet: scaled 3 -> 1 -> 3 with whenScaled: Delete, the StatefulSet gets its two
// recycled volumes back, empty, and no new PV is made.
func testRecycleStatefulSet(t *testing.T) {
	ns := namespace(t)
	kubectl(t, "-n", ns, "apply", "-k", "testdata/recycle-web")
	for _, p := range []string{"rweb-0", "rweb-1", "rweb-2"} {
		podRunning(t, ns, p)
	}
	before := classPVs(t, "e2e-recycle-sts")
	if len(before) != 3 {
		t.Fatalf("PVs of the class: %v", before)
	}
	released := []string{bound(t, ns, "www-rweb-1").Name, bound(t, ns, "www-rweb-2").Name}
	kubectl(t, "-n", ns, "scale", "statefulset/rweb", "--replicas=1")
	for _, name := range released {
		pvPhase(t, name, v1.VolumeAvailable)
	}
	kubectl(t, "-n", ns, "scale", "statefulset/rweb", "--replicas=3")
	for _, p := range []string{"rweb-1", "rweb-2"} {
		podRunning(t, ns, p)
		if seen := strings.TrimSpace(exec1(t, ns, p, "cat /tmp/seen")); seen != "" {
			t.Errorf("%s started on a volume holding %q", p, seen)
		}
	}
	after := classPVs(t, "e2e-recycle-sts")
	if len(after) != 3 {
		t.Errorf("PVs after scaling back: %v (before: %v)", after, before)
	}
	for name := range after {
		if !before[name] {
			t.Errorf("new PV %s made instead of reusing a recycled one", name)
		}
	}
}
