//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"dirpv.io/dirpv/provisioner/nodeexec"
)

// The cases of a cluster with several nodes (make e2e brings up two): hostPath volumes live on
// their node, and dirpv's work on a volume happens on that node, wherever dirpv itself runs.

// helperRun is one operation a helper pod dirpv started ran: the operation, its PV, and the
// pod and its node.
type helperRun struct{ op, pv, pod, node string }

// helperRuns records the operations of the helper pods while a test runs: those of each
// one-batch helper pod created, and each batch an agent runs (its pod's annotations name its
// latest batch, their number, and its operations).
type helperRuns struct {
	mu   sync.Mutex
	runs map[string][]helperRun // by pod name and, for an agent, batch number
	pods map[string]*v1.Pod     // by name, as last seen
}

func watchHelperRuns(t *testing.T) *helperRuns {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &helperRuns{runs: map[string][]helperRun{}, pods: map[string]*v1.Pod{}}
	w := watchPods(t, ctx, "app.kubernetes.io/component=helper")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.ResultChan() {
			p, ok := e.Object.(*v1.Pod)
			if !ok || e.Type == watch.Deleted {
				continue
			}
			var runs []helperRun
			// dirpv.io/operations: a line "KIND PV" per operation.
			for line := range strings.Lines(p.Annotations[nodeexec.AnnOperations]) {
				op, pv, _ := strings.Cut(strings.TrimSpace(line), " ")
				runs = append(runs, helperRun{op: op, pv: pv, pod: p.Name, node: p.Spec.NodeName})
			}
			h.mu.Lock()
			h.runs[p.Name+"#"+p.Annotations[nodeexec.AnnBatch]] = runs
			h.pods[p.Name] = p
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return h
}

// pod returns the helper pod called name as last seen.
func (h *helperRuns) pod(name string) *v1.Pod {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pods[name]
}

// podsOf returns the names of the helper pods that ran op for any of pvs.
func (h *helperRuns) podsOf(op string, pvs []*v1.PersistentVolume) map[string]bool {
	pods := map[string]bool{}
	for _, pv := range pvs {
		for _, r := range h.of(pv.Name) {
			if r.op == op {
				pods[r.pod] = true
			}
		}
	}
	return pods
}

// of returns the runs for PV pv.
func (h *helperRuns) of(pv string) []helperRun {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []helperRun
	for _, runs := range h.runs {
		for _, r := range runs {
			if r.pv == pv {
				out = append(out, r)
			}
		}
	}
	return out
}

// ops returns the operations run for PV pv, sorted.
func (h *helperRuns) ops(pv string) []string {
	var ops []string
	for _, r := range h.of(pv) {
		ops = append(ops, r.op)
	}
	slices.Sort(ops)
	return ops
}

// waitOps waits until the helper pods run for PV pv are exactly want (sorted).
func (h *helperRuns) waitOps(t *testing.T, pv string, want ...string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return slices.Equal(h.ops(pv), want), nil
	})
	if err != nil {
		t.Errorf("helper pods for %s: %v, want %v", pv, h.ops(pv), want)
	}
}

// checkOnNode fails the test if a helper pod for PV pv ran anywhere but node.
func (h *helperRuns) checkOnNode(t *testing.T, pv, node string) {
	t.Helper()
	for _, r := range h.of(pv) {
		if r.node != node {
			t.Errorf("helper pod for %s (%s) ran on %s, not on the PV's node %s", pv, r.op, r.node, node)
		}
	}
}

// leaderNode is the node the current leader runs on.
func leaderNode(t *testing.T) string {
	t.Helper()
	return leaderPod(t).Spec.NodeName
}

// leaderPod is the pod of the replica that leads now. Right after a rollout the Lease may be
// released by a replica that was replaced, or held by one being deleted: it waits for a running
// replica to lead.
func leaderPod(t *testing.T) *v1.Pod {
	t.Helper()
	var pod *v1.Pod
	poll(t, "a running replica leading", func(ctx context.Context) (bool, error) {
		lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return false, nil
		}
		p, err := client.CoreV1().Pods(dirpvNamespace).Get(ctx, holderPod(*lease.Spec.HolderIdentity), metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp != nil {
			return false, nil
		}
		pod = p
		return true, nil
	})
	return pod
}

func podNode(t *testing.T, ns, name string) string {
	t.Helper()
	p, err := client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Spec.NodeName
}

// provisionerPods lists dirpv's replicas that are not being deleted.
func provisionerPods(t *testing.T) []v1.Pod {
	t.Helper()
	list, err := client.CoreV1().Pods(dirpvNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=provisioner"})
	if err != nil {
		t.Fatal(err)
	}
	var pods []v1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	return pods
}

// spreadReplicas makes sure dirpv's replicas run on different nodes. The Deployment spreads
// them when it schedules them, but a rolling update or a replaced pod can leave both on one
// node: then a replica that does not lead is deleted, and its replacement goes to the other.
func spreadReplicas(t *testing.T) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		kubectl(t, "-n", dirpvNamespace, "rollout", "status", "deployment/dirpv", "--timeout=2m")
		pods := provisionerPods(t)
		nodes := map[string]bool{}
		for _, p := range pods {
			nodes[p.Spec.NodeName] = true
		}
		if len(nodes) > 1 || len(pods) < 2 {
			return
		}
		if attempt == 3 {
			t.Fatalf("dirpv's replicas stay on one node: %v", nodes)
		}
		lead := holderPod(leader(t))
		i := slices.IndexFunc(pods, func(p v1.Pod) bool { return p.Name != lead })
		if err := client.CoreV1().Pods(dirpvNamespace).Delete(context.Background(), pods[i].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Its replacement may come at once: wait for it, not for a moment with a replica less.
		poll(t, "a replacement for "+pods[i].Name, func(ctx context.Context) (bool, error) {
			now := provisionerPods(t)
			return len(now) >= len(pods) && !slices.ContainsFunc(now, func(p v1.Pod) bool { return p.Name == pods[i].Name }), nil
		})
	}
}

// leadFrom makes the replica on node the leader: while another one leads, its pod is deleted
// (it hands the Lease over as it shuts down) and the Deployment replaces it.
func leadFrom(t *testing.T, node string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		spreadReplicas(t)
		holder := leader(t)
		if podNode(t, dirpvNamespace, holderPod(holder)) == node {
			return
		}
		if attempt == 5 {
			t.Fatalf("no replica on %s took the Lease after %d handovers", node, attempt)
		}
		if err := client.CoreV1().Pods(dirpvNamespace).Delete(context.Background(), holderPod(holder), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "another leader than "+holder, func(ctx context.Context) (bool, error) {
			lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
			return err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" && *lease.Spec.HolderIdentity != holder, nil
		})
	}
}

// testSpreadStatefulSet: a StatefulSet spread over both nodes. Each PV is pinned to its pod's
// node, its directory is in that node's root and not in the other's, and after every pod is
// deleted each comes back on its node and reads its own data.
func testSpreadStatefulSet(t *testing.T) {
	nodes := needNodes(t, 2)
	ns := namespace(t)
	const replicas = 2
	sts := parallelStatefulSet(ns, "spread", replicas, nil)
	sts.Spec.Template.Spec.Affinity = &v1.Affinity{PodAntiAffinity: &v1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []v1.PodAffinityTerm{{
			TopologyKey: v1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: sts.Spec.Selector.MatchLabels},
		}},
	}}
	if _, err := client.AppsV1().StatefulSets(ns).Create(context.Background(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	uids := map[string]types.UID{}
	seen := map[string]bool{}
	for i := range replicas {
		name := fmt.Sprintf("spread-%d", i)
		podRunning(t, ns, name)
		p, err := client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[name] = p.UID
		node := p.Spec.NodeName
		seen[node] = true
		exec1(t, ns, name, "echo hello "+name+" > /data/f")
		pv := bound(t, ns, "data-"+name)
		terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
		if pvNode(pv) != node || len(terms) != 1 || terms[0].MatchExpressions[0].Values[0] != node {
			t.Errorf("PV %s of %s (on %s): annotation node %q, affinity %+v", pv.Name, name, node, pvNode(pv), terms)
		}
		if b, err := os.ReadFile(filepath.Join(hostDir(pv), "f")); err != nil || string(b) != "hello "+name+"\n" {
			t.Errorf("%s in %s's root: %q %v", pvPath(pv), node, b, err)
		}
		for _, other := range nodes {
			if other != node && exists(onHost(other, pvPath(pv))) {
				t.Errorf("%s exists on %s too, not only on %s", pvPath(pv), other, node)
			}
		}
	}
	if len(seen) != replicas {
		t.Fatalf("the StatefulSet's pods ran on %v, want %d nodes", seen, replicas)
	}
	kubectl(t, "-n", ns, "delete", "pods", "-l", "app=spread", "--wait=true")
	for i := range replicas {
		name := fmt.Sprintf("spread-%d", i)
		poll(t, name+" recreated", func(ctx context.Context) (bool, error) {
			p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && p.UID != uids[name], nil
		})
		podRunning(t, ns, name)
		pv := bound(t, ns, "data-"+name)
		if node := podNode(t, ns, name); node != pvNode(pv) {
			t.Errorf("%s came back on %s, its volume is on %s", name, node, pvNode(pv))
		}
		if got := strings.TrimSpace(exec1(t, ns, name, "cat /data/f")); got != "hello "+name {
			t.Errorf("%s reads %q after its pod was replaced", name, got)
		}
	}
}

// lifecycle makes a claim of class with a pod on node, then deletes both, and returns the PV.
func lifecycle(t *testing.T, ns, name, class, node string) *v1.PersistentVolume {
	t.Helper()
	claim(t, ns, name, class)
	pod(t, ns, name, name, onNode(node))
	exec1(t, ns, name, "echo x > /data/f")
	pv := bound(t, ns, name)
	deletePod(t, ns, name)
	deleteClaim(t, ns, name)
	return pv
}

// testHelpersOnTheirNode: helper pods run on the PV's node, never elsewhere, for create,
// delete, archive and scrub, whichever node the leader runs on.
func testHelpersOnTheirNode(t *testing.T) {
	nodes := needNodes(t, 2)
	for _, lead := range nodes {
		t.Run("leader on "+lead, func(t *testing.T) {
			leadFrom(t, lead)
			helpers := watchHelperRuns(t)
			ns := namespace(t)
			type vol struct {
				pv   *v1.PersistentVolume
				want []string
			}
			var vols []vol
			for _, node := range nodes {
				deleted := lifecycle(t, ns, "del-"+node, "dirpv-hostpath", node)
				archived := lifecycle(t, ns, "arch-"+node, "e2e-hostpath-archive", node)
				recycled := lifecycle(t, ns, "rec-"+node, "e2e-recycle-nodes", node)
				vols = append(vols, vol{deleted, []string{"create", "delete"}}, vol{archived, []string{"archive", "create"}},
					vol{recycled, []string{"create", "delete", "scrub"}})
				pvGone(t, deleted.Name)
				pvGone(t, archived.Name)
				pvPhase(t, recycled.Name, v1.VolumeAvailable)
				// Out of the pool: its directory is reclaimed on its node too.
				if err := client.CoreV1().PersistentVolumes().Delete(context.Background(), recycled.Name, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				pvGone(t, recycled.Name)
			}
			for _, v := range vols {
				helpers.waitOps(t, v.pv.Name, v.want...)
				helpers.checkOnNode(t, v.pv.Name, pvNode(v.pv))
				if exists(hostDir(v.pv)) {
					t.Errorf("%s still on %s", pvPath(v.pv), pvNode(v.pv))
				}
			}
			if got := leaderNode(t); got != lead {
				t.Logf("the leader moved to %s during the case", got)
			}
		})
	}
}

// testLeaderKilledOnNode: replicas on different nodes; the leader on the last node is killed
// (SIGKILL, no handover), a replica on another node takes over, and work for the killed
// leader's node still happens on that node.
func testLeaderKilledOnNode(t *testing.T) {
	nodes := needNodes(t, 2)
	victim := nodes[len(nodes)-1]
	leadFrom(t, victim)
	for attempt := 0; ; attempt++ {
		holder := leader(t)
		p, err := client.CoreV1().Pods(dirpvNamespace).Get(context.Background(), holderPod(holder), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pids := dirpvProcesses(p.UID)
		if len(pids) != 1 {
			t.Fatalf("dirpv processes of the leader %s on %s: %v", p.Name, victim, pids)
		}
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		t.Logf("SIGKILLed pid %d of %s, the leader on %s", pids[0], p.Name, victim)
		var next string
		poll(t, "a new leader after the kill", func(ctx context.Context) (bool, error) {
			lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
			if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == holder || *lease.Spec.HolderIdentity == "" {
				return false, nil
			}
			next = *lease.Spec.HolderIdentity
			return true, nil
		})
		if node := podNode(t, dirpvNamespace, holderPod(next)); node != victim {
			t.Logf("%s took over, on %s", holderPod(next), node)
			break
		}
		// The killed replica came back in place and won the Lease again: kill it again.
		if attempt == 5 {
			t.Fatalf("the replica on %s keeps winning the Lease back", victim)
		}
	}
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	claim(t, ns, "data", "dirpv-hostpath")
	pod(t, ns, "app", "data", onNode(victim))
	pv := bound(t, ns, "data")
	if pvNode(pv) != victim || !exists(hostDir(pv)) {
		t.Errorf("PV %s on %q, directory %s there: %v", pv.Name, pvNode(pv), hostDir(pv), exists(hostDir(pv)))
	}
	helpers.waitOps(t, pv.Name, "create")
	helpers.checkOnNode(t, pv.Name, victim)
	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
	helpers.checkOnNode(t, pv.Name, victim)
}

// testRecycleAcrossNodes: a recycled volume on the last node is scrubbed there; it binds again
// only to a claim whose pod goes to that node, and a claim for another node gets a new volume.
func testRecycleAcrossNodes(t *testing.T) {
	nodes := needNodes(t, 2)
	far, near := nodes[len(nodes)-1], nodes[0]
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	const class = "e2e-recycle-nodes"
	first := lifecycle(t, ns, "first", class, far)
	pvPhase(t, first.Name, v1.VolumeAvailable)
	poll(t, "the scrub of "+first.Name, func(context.Context) (bool, error) {
		return slices.Contains(helpers.ops(first.Name), "scrub"), nil
	})
	helpers.checkOnNode(t, first.Name, far)
	if left := entries(t, hostDir(first)); len(left) != 0 {
		t.Errorf("recycled volume on %s holds %v", far, left)
	}

	claim(t, ns, "other-node", class)
	pod(t, ns, "other-node", "other-node", onNode(near))
	if pv := bound(t, ns, "other-node"); pv.Name == first.Name || pvNode(pv) != near {
		t.Errorf("a claim for %s got PV %s on %s (the recycled one is %s, on %s)", near, pv.Name, pvNode(pv), first.Name, far)
	}
	claim(t, ns, "same-node", class)
	pod(t, ns, "same-node", "same-node", onNode(far))
	if pv := bound(t, ns, "same-node"); pv.Name != first.Name {
		t.Errorf("a claim for %s got PV %s, not the recycled %s", far, pv.Name, first.Name)
	}
	if seen := strings.TrimSpace(exec1(t, ns, "same-node", "ls -A /data")); seen != "" {
		t.Errorf("the next tenant on %s sees %q", far, seen)
	}
	// Empty the pool: the class's PVs go, with their directories.
	for _, name := range []string{"other-node", "same-node"} {
		deletePod(t, ns, name)
		deleteClaim(t, ns, name)
	}
	for name := range classPVs(t, class) {
		pvPhase(t, name, v1.VolumeAvailable)
		if err := client.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		pvGone(t, name)
	}
}

// testCordon: a StatefulSet pod pinned to a node by its volume waits while that node is
// cordoned, as Kubernetes does with any node-local volume, and runs there again once it is not.
func testCordon(t *testing.T) {
	nodes := needNodes(t, 2)
	target := nodes[len(nodes)-1]
	ns := namespace(t)
	claim(t, ns, "data", "dirpv-hostpath")
	pod(t, ns, "app", "data", onNode(target))
	exec1(t, ns, "app", "echo kept > /data/f")
	pv := bound(t, ns, "data")
	deletePod(t, ns, "app")

	kubectl(t, "cordon", target)
	t.Cleanup(func() { kubectl(t, "uncordon", target) })
	pod := &v1.Pod{ // no node selector: only its volume ties it to target
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			Containers: []v1.Container{{
				Name: "app", Image: busybox, ImagePullPolicy: v1.PullNever, Command: []string{"sleep", "3600"},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"},
			}}},
		},
	}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var why string
	poll(t, "the pod reported unschedulable", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled && c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable {
				why = c.Message
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("while %s is cordoned: %s", target, why)
	if !strings.Contains(why, "didn't match PersistentVolume's node affinity") || !strings.Contains(why, "unschedulable") {
		t.Errorf("unschedulable for another reason: %s", why)
	}
	kubectl(t, "uncordon", target)
	podRunning(t, ns, "app")
	if node := podNode(t, ns, "app"); node != target || pvNode(pv) != target {
		t.Errorf("pod on %s, volume on %s, want %s", node, pvNode(pv), target)
	}
	if got := strings.TrimSpace(exec1(t, ns, "app", "cat /data/f")); got != "kept" {
		t.Errorf("after the node came back the pod reads %q", got)
	}
}

// testNodeRemoved: a node taken away for good while it holds volumes (its Node object deleted,
// its disk gone). Its PVs are reclaimed with a VolumeNodeGone warning and nothing blocks;
// claims for the other nodes go on. It removes the last node, so it runs last.
func testNodeRemoved(t *testing.T) {
	nodes := needNodes(t, 2)
	gone, staying := nodes[len(nodes)-1], nodes[0]
	ns := namespace(t)
	var pvs []*v1.PersistentVolume
	for _, c := range []struct{ name, class string }{{"plain", "dirpv-hostpath"}, {"pooled", "e2e-recycle-nodes"}} {
		claim(t, ns, c.name, c.class)
		pod(t, ns, c.name, c.name, onNode(gone))
		pvs = append(pvs, bound(t, ns, c.name))
	}
	out, err := exec.Command(filepath.Join("..", "hack", "node-down.sh"), gone).CombinedOutput()
	if err != nil {
		t.Fatalf("hack/node-down.sh %s: %v\n%s", gone, err, out)
	}
	t.Logf("%s removed:\n%s", gone, out)
	if _, err := client.CoreV1().Nodes().Get(context.Background(), gone, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("node %s: %v", gone, err)
	}
	for _, name := range []string{"plain", "pooled"} {
		deleteClaim(t, ns, name)
	}
	for _, pv := range pvs {
		pvGone(t, pv.Name)
		event(t, "", pv.Name, "VolumeNodeGone", "no longer exists")
	}
	claim(t, ns, "after", "dirpv-hostpath")
	pod(t, ns, "after", "after", onNode(staying))
	pv := bound(t, ns, "after")
	if pvNode(pv) != staying || !exists(hostDir(pv)) {
		t.Errorf("a claim for %s after %s went: PV on %q", staying, gone, pvNode(pv))
	}
	// A replica on a node that is still there leads (the Lease of one on the removed node
	// expires), and the Deployment has both replicas again.
	poll(t, "a leader on a node that is still there", func(ctx context.Context) (bool, error) {
		lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return false, nil
		}
		p, err := client.CoreV1().Pods(dirpvNamespace).Get(ctx, holderPod(*lease.Spec.HolderIdentity), metav1.GetOptions{})
		return err == nil && p.Spec.NodeName != gone, nil
	})
	kubectl(t, "-n", dirpvNamespace, "rollout", "status", "deployment/dirpv", "--timeout=2m")
}
