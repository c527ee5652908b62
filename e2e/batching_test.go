//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// testBatchedHelpers: a StatefulSet of 20 replicas (Parallel, over the default hostPath class)
// gets its 20 volumes through fewer helper pods than volumes, each volume made once by a pod on
// its own node; deleting the claims removes every directory, again through fewer pods.
func testBatchedHelpers(t *testing.T) {
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	const replicas = 20
	sts := parallelStatefulSet(ns, "batch", replicas, nil)
	if _, err := client.AppsV1().StatefulSets(ns).Create(context.Background(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pvs []*v1.PersistentVolume
	var claims []string
	for i := range replicas {
		name := fmt.Sprintf("batch-%d", i)
		podRunning(t, ns, name)
		claims = append(claims, "data-"+name)
		pv := bound(t, ns, "data-"+name)
		if !exists(hostDir(pv)) {
			t.Errorf("%s: no directory %s on %s", pv.Name, pvPath(pv), pvNode(pv))
		}
		pvs = append(pvs, pv)
	}
	podsOf := func(op string) map[string]bool {
		pods := map[string]bool{}
		for _, pv := range pvs {
			for _, r := range helpers.of(pv.Name) {
				if r.op == op {
					pods[r.pod] = true
				}
			}
		}
		return pods
	}
	for _, pv := range pvs {
		helpers.waitOps(t, pv.Name, "create")
		helpers.checkOnNode(t, pv.Name, pvNode(pv))
	}
	made := podsOf("create")
	t.Logf("%d volumes made by %d helper pods", replicas, len(made))
	if len(made) >= replicas {
		t.Errorf("%d volumes made by %d helper pods, want fewer pods than volumes", replicas, len(made))
	}

	if err := client.AppsV1().StatefulSets(ns).Delete(context.Background(), "batch", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "delete", "pods", "-l", "app=batch", "--wait=true")
	deleteClaims(t, client, ns, claims)
	for _, pv := range pvs {
		pvGone(t, pv.Name)
		waitGone(t, hostDir(pv))
		helpers.waitOps(t, pv.Name, "create", "delete")
		helpers.checkOnNode(t, pv.Name, pvNode(pv))
	}
	removed := podsOf("delete")
	t.Logf("%d volumes deleted by %d helper pods", replicas, len(removed))
	if len(removed) >= replicas {
		t.Errorf("%d volumes deleted by %d helper pods, want fewer pods than volumes", replicas, len(removed))
	}
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
	r := &hostpath.PodRunner{Client: client, Namespace: dirpvNamespace, Image: c.Image, PullPolicy: c.ImagePullPolicy}
	ops := []volumeop.Op{{Kind: volumeop.Probe, Path: "e2e"}, {Kind: volumeop.Probe, Path: "e2e-no-such-dir/below"}}
	pods := client.CoreV1().Pods(dirpvNamespace)
	pod, err := pods.Create(ctx, r.Pod("node1", basePath, ops), metav1.CreateOptions{})
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
		want[i].Error = strings.ReplaceAll(want[i].Error, hostpath.HelperMountPath, basePath)
	}
	got, err := r.LogOutcomes(ctx, pod, len(ops))
	t.Logf("termination message %s; from the log: %+v, %v", msg, got, err)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("outcomes from the log: %+v, %v; want %+v", got, err, want)
	}
}
