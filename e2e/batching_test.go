//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
