//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testBatchedHelpers: a StatefulSet of 20 replicas (Parallel, over the default hostPath class)
// gets its 20 volumes through fewer helper pods than volumes, each volume made once by a pod on
// its own node; deleting the claims removes every directory, again through fewer pods.
func testBatchedHelpers(t *testing.T) {
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	const replicas = 20
	labels := map[string]string{"app": "batch"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "batch", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr(int32(replicas)),
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					TerminationGracePeriodSeconds: ptr(int64(0)),
					Containers: []v1.Container{{
						Name: "app", Image: busybox, ImagePullPolicy: v1.PullNever, Command: []string{"sleep", "3600"},
						VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
					}},
				},
			},
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: v1.PersistentVolumeClaimSpec{
					AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
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
