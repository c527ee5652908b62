//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The release of the case Helm, beside the dirpv the suite installs: its own namespace and
// provisioner names (testdata/helm/values.yaml).
const (
	helmRelease   = "e2e-helm"
	helmNamespace = "e2e-helm"
	helmDeploy    = "e2e-helm-dirpv" // the release's objects' name (the chart's fullname)
	helmCapacity  = "e2e-helm.dirpv.io"
	helmClass     = "e2e-helm-hostpath"
)

// helmCmd runs the helm that hack/e2e.sh built (DIRPV_HELM) and returns its output.
func helmCmd(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("DIRPV_HELM")
	if bin == "" {
		t.Fatal("DIRPV_HELM is not set: run the suite with make e2e, which builds helm")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testHelm installs dirpv from the chart as a user would, provisions a claim through a class the
// chart made, upgrades the release with a changed value (the Deployment rolls, the volume and its
// data stay), and uninstalls it: the PV and its directory stay, as docs/helm.md says.
func testHelm(t *testing.T) {
	ctx := context.Background()
	chart := filepath.Join("..", "manifests", "helm", "dirpv")
	values := filepath.Join("testdata", "helm", "values.yaml")
	// The chart makes and labels its namespace: --take-ownership adopts the one
	// --create-namespace made for the release's record.
	helmCmd(t, "install", helmRelease, chart, "--namespace", helmNamespace, "--create-namespace", "--take-ownership",
		"--values", values, "--wait", "--timeout", "3m")
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = exec.Command(os.Getenv("DIRPV_HELM"), "uninstall", helmRelease, "--namespace", helmNamespace, "--wait").CombinedOutput()
			_ = client.CoreV1().Namespaces().Delete(ctx, helmNamespace, metav1.DeleteOptions{})
		}
	})
	if _, err := client.StorageV1().CSIDrivers().Get(ctx, helmCapacity, metav1.GetOptions{}); err != nil {
		t.Errorf("the chart's CSIDriver: %v", err)
	}

	ns := namespace(t)
	claim(t, ns, "data", helmClass)
	pod(t, ns, "app", "data")
	pv := bound(t, ns, "data")
	t.Cleanup(func() {
		// Nothing reclaims the volume once the release is gone: the test does.
		deletePod(t, ns, "app")
		_ = client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "data", metav1.DeleteOptions{})
		_, _ = client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, dropFinalizers, metav1.PatchOptions{})
		_ = client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		_ = os.RemoveAll(hostDir(pv))
	})
	if by := pv.Annotations["pv.kubernetes.io/provisioned-by"]; by != helmCapacity {
		t.Errorf("PV %s provisioned by %q, want the release's %q", pv.Name, by, helmCapacity)
	}
	exec1(t, ns, "app", "echo kept > /data/file")
	dataOnNode := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(filepath.Join(hostDir(pv), "file")); err != nil || string(b) != "kept\n" {
			t.Errorf("%s: %s on node %s holds %q %v", when, pvPath(pv), pvNode(pv), b, err)
		}
	}
	dataOnNode("installed")

	// An upgrade with a changed value rolls the Deployment and disturbs no volume.
	before, err := client.AppsV1().Deployments(helmNamespace).Get(ctx, helmDeploy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldPods := kubectl(t, "-n", helmNamespace, "get", "pods", "-l", "app.kubernetes.io/component=provisioner", "-o", "name")
	helmCmd(t, "upgrade", helmRelease, chart, "--namespace", helmNamespace, "--values", values, "--set", "flags.v=2",
		"--wait", "--timeout", "3m")
	kubectl(t, "-n", helmNamespace, "rollout", "status", "deployment/"+helmDeploy, "--timeout=3m")
	after, err := client.AppsV1().Deployments(helmNamespace).Get(ctx, helmDeploy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation == before.Generation || !slices.Contains(after.Spec.Template.Spec.Containers[0].Args, "--v=2") {
		t.Errorf("after the upgrade: generation %d (was %d), args %q", after.Generation, before.Generation, after.Spec.Template.Spec.Containers[0].Args)
	}
	poll(t, "the replicas before the upgrade gone", func(ctx context.Context) (bool, error) {
		now, err := kubectlErr("-n", helmNamespace, "get", "pods", "-l", "app.kubernetes.io/component=provisioner", "-o", "name")
		if err != nil {
			return false, nil
		}
		for _, p := range strings.Fields(oldPods) {
			if strings.Contains(now, p) {
				return false, nil
			}
		}
		return true, nil
	})
	checkUndisturbed := func(when string) {
		t.Helper()
		got, err := client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil || got.UID != pv.UID || got.Status.Phase != v1.VolumeBound {
			t.Errorf("%s: PV %s: %v %+v", when, pv.Name, err, got.Status)
		}
		if got := strings.TrimSpace(exec1(t, ns, "app", "cat /data/file")); got != "kept" {
			t.Errorf("%s: the pod reads %q", when, got)
		}
		dataOnNode(when)
	}
	checkUndisturbed("upgraded")

	// Uninstalling removes the release's objects, not the volumes, nor the namespace, which holds
	// the release's record until the end.
	helmCmd(t, "uninstall", helmRelease, "--namespace", helmNamespace, "--wait", "--timeout", "3m")
	uninstalled = true
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(ctx, helmNamespace, metav1.DeleteOptions{})
	})
	for what, err := range map[string]error{
		"Deployment " + helmDeploy:  getErr(client.AppsV1().Deployments(helmNamespace).Get(ctx, helmDeploy, metav1.GetOptions{})),
		"StorageClass " + helmClass: getErr(client.StorageV1().StorageClasses().Get(ctx, helmClass, metav1.GetOptions{})),
		"CSIDriver " + helmCapacity: getErr(client.StorageV1().CSIDrivers().Get(ctx, helmCapacity, metav1.GetOptions{})),
	} {
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s after uninstall: %v", what, err)
		}
	}
	poll(t, "the release's replicas gone", func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(helmNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=provisioner"})
		return err == nil && len(pods.Items) == 0, nil
	})
	checkUndisturbed("uninstalled")
}

// getErr is the error of a Get.
func getErr[T any](_ T, err error) error { return err }
