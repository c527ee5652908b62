//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"dirpv.io/dirpv/provisioner/nodeexec"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// hostPathStatefulSet runs a StatefulSet called name of replicas (Parallel, over the default
// hostPath class) in ns until every pod runs, checks that each volume's directory is on its
// node, and returns their PVs.
func hostPathStatefulSet(t *testing.T, ns, name string, replicas int, mutate ...func(*appsv1.StatefulSet)) []*v1.PersistentVolume {
	t.Helper()
	sts := parallelStatefulSet(ns, name, replicas, nil)
	for _, m := range mutate {
		m(sts)
	}
	if _, err := client.AppsV1().StatefulSets(ns).Create(context.Background(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pvs []*v1.PersistentVolume
	for i := range replicas {
		pod := fmt.Sprintf("%s-%d", name, i)
		podRunning(t, ns, pod)
		pv := bound(t, ns, "data-"+pod)
		if !exists(hostDir(pv)) {
			t.Errorf("%s: no directory %s on %s", pv.Name, pvPath(pv), pvNode(pv))
		}
		pvs = append(pvs, pv)
	}
	return pvs
}

// deleteStatefulSet deletes the StatefulSet called name in ns, its pods and its claims, and
// waits until the claims' PVs and directories are gone.
func deleteStatefulSet(t *testing.T, ns, name string, pvs []*v1.PersistentVolume) {
	t.Helper()
	if err := client.AppsV1().StatefulSets(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "delete", "pods", "-l", "app="+name, "--wait=true")
	var claims []string
	for _, pv := range pvs {
		claims = append(claims, pv.Spec.ClaimRef.Name)
	}
	deleteClaims(t, client, ns, claims)
	for _, pv := range pvs {
		pvGone(t, pv.Name)
		waitGone(t, hostDir(pv))
	}
}

// testBatchedHelpers: with a helper pod per batch (the helper-pods overlay,
// --helper-keep-alive=0), a StatefulSet of 20 replicas (Parallel, over the default hostPath
// class) gets its 20 volumes through fewer helper pods than volumes, each volume made once by a
// pod on its own node; deleting the claims removes every directory, again through fewer pods,
// and no helper pod is left.
func testBatchedHelpers(t *testing.T) {
	install(t, "helper-pods")
	t.Cleanup(func() { install(t, "install") })
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	const replicas = 20
	pvs := hostPathStatefulSet(t, ns, "batch", replicas)
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create")
		helpers.checkOnNode(t, pv.Name, pvNode(pv))
	}
	made := helpers.podsOf("create", pvs)
	t.Logf("%d volumes made by %d helper pods", replicas, len(made))
	if len(made) >= replicas {
		t.Errorf("%d volumes made by %d helper pods, want fewer pods than volumes", replicas, len(made))
	}

	deleteStatefulSet(t, ns, "batch", pvs)
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create", "delete")
		helpers.checkOnNode(t, pv.Name, pvNode(pv))
	}
	removed := helpers.podsOf("delete", pvs)
	t.Logf("%d volumes deleted by %d helper pods", replicas, len(removed))
	if len(removed) >= replicas {
		t.Errorf("%d volumes deleted by %d helper pods, want fewer pods than volumes", replicas, len(removed))
	}
	for name := range made {
		if strings.HasPrefix(name, "dirpv-agent-") {
			t.Errorf("helper pod %s is an agent, with --helper-keep-alive=0", name)
		}
	}
	poll(t, "helper pods deleted", func(ctx context.Context) (bool, error) {
		left, err := client.CoreV1().Pods(dirpvNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=helper"})
		return err == nil && len(left.Items) == 0, nil
	})
}

// testHelperLog: a helper pod's outcomes read back from its container's log, as the API server
// serves it (where dirpv reads them when the kubelet is slow to post a pod's end), are those of
// its termination message, its paths named as the node has them.
func testHelperLog(t *testing.T) {
	ctx := context.Background()
	dep, err := client.AppsV1().Deployments(dirpvNamespace).Get(ctx, "dirpv", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	r := &nodeexec.PodRunner{Client: client, Namespace: dirpvNamespace, Image: c.Image, PullPolicy: c.ImagePullPolicy}
	ops := []volumeop.Op{{Kind: volumeop.Probe, Path: "e2e"}, {Kind: volumeop.Probe, Path: "e2e-no-such-dir/below"}}
	pods := client.CoreV1().Pods(dirpvNamespace)
	spec := r.Pod("node1", basePath, ops)
	// Not labelled as a helper: a leader whose term begins (after the previous case's install)
	// deletes the helper pods it finds.
	delete(spec.Labels, nodeexec.LabelComponent)
	pod, err := pods.Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pods.Delete(context.Background(), pod.Name, metav1.DeleteOptions{}) })
	poll(t, "the helper pod ended", func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed, nil
	})
	if pod.Status.Phase != v1.PodSucceeded || len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("helper pod %s ended %s: %+v", pod.Name, pod.Status.Phase, pod.Status.ContainerStatuses)
	}
	msg := pod.Status.ContainerStatuses[0].State.Terminated.Message
	want, err := volumeop.DecodeOutcomes(msg, len(ops))
	if err != nil {
		t.Fatalf("termination message %q: %v", msg, err)
	}
	for i := range want {
		want[i].Error = strings.ReplaceAll(want[i].Error, nodeexec.HelperMountPath, basePath)
	}
	got, err := r.LogOutcomes(ctx, pod, len(ops))
	t.Logf("termination message %s; from the log: %+v, %v", msg, got, err)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("outcomes from the log: %+v, %v; want %+v", got, err, want)
	}
}

// testHelperAgents: as installed (--helper-keep-alive=1m, the default), a StatefulSet of 10
// gets its volumes, each on its pod's node, through agents: helper pods that stay and run
// batches through a stream, fewer than the volumes, confined as any helper pod and controlled by the
// leader's pod, so that kubectl drain evicts them without --force; deleting its claims removes
// every directory; the agents go once idle for the keep-alive.
func testHelperAgents(t *testing.T) {
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	const replicas = 10
	pvs := hostPathStatefulSet(t, ns, "agents", replicas)
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create")
	}
	leader := leaderPod(t)
	agents, onNode := map[string]bool{}, map[string][]string{}
	for name := range helpers.podsOf("create", pvs) {
		p := helpers.pod(name)
		if !strings.HasPrefix(name, "dirpv-agent-") {
			t.Errorf("helper pod %s is not an agent", name)
		}
		for _, problem := range helperPodProblems(p) {
			t.Errorf("agent %s: %s", name, problem)
		}
		if owner := metav1.GetControllerOf(p); owner == nil || owner.Kind != "Pod" || owner.UID != leader.UID {
			t.Errorf("agent %s is controlled by %+v, want the leader's pod %s", name, owner, leader.Name)
		}
		agents[name+" on "+p.Spec.NodeName] = true
		onNode[p.Spec.NodeName] = append(onNode[p.Spec.NodeName], name)
	}
	// kubectl drain evicts the agents without --force: it refuses pods that declare no controller.
	for node, names := range onNode {
		out := kubectl(t, "drain", node, "--dry-run=server", "--pod-selector=app.kubernetes.io/component=helper")
		for _, name := range names {
			if !strings.Contains(out, "evicting pod "+dirpvNamespace+"/"+name) {
				t.Errorf("kubectl drain %s --dry-run=server does not evict agent %s:\n%s", node, name, out)
			}
		}
	}

	// What node1 mounts below its root after its agent started reaches the agent: a tmpfs,
	// probed from inside it.
	if len(onNode["node1"]) > 0 {
		lateMount(t, onNode["node1"][0], "e2e-late-"+ns)
	}

	deleteStatefulSet(t, ns, "agents", pvs)
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create", "delete")
		helpers.checkOnNode(t, pv.Name, pvNode(pv))
	}
	for name := range helpers.podsOf("delete", pvs) {
		agents[name+" on "+helpers.pod(name).Spec.NodeName] = true
	}
	t.Logf("%d volumes made and deleted through %d agents: %v", replicas, len(agents), agents)
	if len(agents) == 0 || len(agents) >= 2*replicas {
		t.Errorf("%d agents for %d operations", len(agents), 2*replicas)
	}
	// The keep-alive is a minute: the agents of these volumes go within a few. (Those for limits
	// come and go with the leader's probes of the classes that enforce sizes.)
	pollFor(t, 3*time.Minute, "the agents deleted once idle", func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(dirpvNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=helper"})
		return err == nil && !slices.ContainsFunc(pods.Items, func(p v1.Pod) bool { return p.Annotations[nodeexec.AnnAgent] != "limits" }), nil
	})
}

// testNoSharedRoot: where a node's root is not a shared mount, the container runtime refuses an
// agent (its HostToContainer propagation needs one), and dirpv runs that node's batches in a
// helper pod each instead: the volumes are made and deleted all the same. node1's root is made
// private for the case; dirpv restarts on each side of it: before, or an agent that started
// earlier would serve node1; after, or node1 would go without agents for the next 10 minutes.
func testNoSharedRoot(t *testing.T) {
	restart := func() {
		t.Helper()
		kubectl(t, "-n", dirpvNamespace, "rollout", "restart", "deployment/dirpv")
		provisionerReady(t)
	}
	command(t, "mount", "--make-private", basePath)
	t.Cleanup(func() {
		command(t, "mount", "--make-rshared", basePath)
		restart()
	})
	restart()

	helpers := watchHelperRuns(t)
	ns := namespace(t)
	onNode1 := func(s *appsv1.StatefulSet) {
		s.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "node1"}
	}
	pvs := hostPathStatefulSet(t, ns, "private", 3, onNode1)
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create")
	}
	deleteStatefulSet(t, ns, "private", pvs)
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create", "delete")
		helpers.checkOnNode(t, pv.Name, "node1")
	}
	for _, op := range []string{"create", "delete"} {
		for name := range helpers.podsOf(op, pvs) {
			if strings.HasPrefix(name, "dirpv-agent-") {
				t.Errorf("%s ran in the agent %s, on a node whose root is not a shared mount", op, name)
			}
		}
	}
	logs := kubectl(t, "-n", dirpvNamespace, "logs", "-l", "app.kubernetes.io/component=provisioner", "--tail=-1")
	if !strings.Contains(logs, "No helper agent can run on this node") || !strings.Contains(logs, "not a shared or slave mount") {
		t.Errorf("no log line of the provisioner says why node1 has no agent")
	}
}

// lateMount mounts a tmpfs at dir below node1's root, where agent runs already, and checks that
// the agent sees it there: a class's filesystem mounted while dirpv runs must hold its volumes,
// not the directory beneath it.
func lateMount(t *testing.T, agent, dir string) {
	t.Helper()
	mnt := filepath.Join(basePath, dir)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.Remove(mnt) }()
	if err := syscall.Mount("e2e-late", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", mnt, err)
	}
	defer func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}()
	probe := volumeop.BatchArgs([]volumeop.Op{{Kind: volumeop.Probe, Path: dir}})
	out := kubectl(t, append([]string{"-n", dirpvNamespace, "exec", agent, "--", "/dirpv", "helper",
		"--root=" + nodeexec.HelperMountPath, "--termination-log=/dev/null"}, probe...)...)
	if !strings.Contains(out, "tmpfs at "+nodeexec.HelperMountPath+"/"+dir) {
		t.Errorf("agent %s does not see the tmpfs node1 mounted at %s after it started; its probe: %s", agent, mnt, out)
	}
}
