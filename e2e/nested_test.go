//go:build e2e

package e2e

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testNestedClasses: a class whose share lies below another class's never gets its volumes
// made inside one of that class's volumes, nor the other way round, whichever comes first.
// The by-name class makes each claim's directory at the top of the export, named after the
// claim; the inner and root classes have shares below it, named like such claims. All names
// carry the namespace's: the export outlives clusters, and a name an earlier run left there
// must not decide this one.
func testNestedClasses(t *testing.T) {
	ns := namespace(t)
	outerName, rootName := ns+"-outer", ns+"-root"
	byName := dirpvClass(t, ns+"-by-name", map[string]string{"backend": "nfs", "server": nfsServer, "share": exportDir, "pathPattern": "{{.PVC.Name}}"})
	inner := dirpvClass(t, ns+"-inner", map[string]string{"backend": "nfs", "server": nfsServer, "share": exportDir + "/" + outerName})
	root := dirpvClass(t, ns+"-root", map[string]string{"backend": "nfs", "server": nfsServer, "share": exportDir + "/" + rootName})
	pending := func(name string) {
		t.Helper()
		pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != v1.ClaimPending {
			t.Errorf("claim %s: %v %v, want Pending", name, pvc.Status.Phase, err)
		}
	}

	// A volume first, then a class whose share is inside it.
	claim(t, ns, outerName, byName)
	outer := onExport(t, bound(t, ns, outerName))
	claim(t, ns, "inner", inner)
	// The inner claim goes before the namespace: deleted together, the outer volume may go
	// first, and a retry of the inner claim before it is marked deleted would make the outer
	// directory again, as a plain parent directory.
	t.Cleanup(func() { deleteClaim(t, ns, "inner") })
	event(t, ns, "inner", "ProvisioningFailed", "lies inside another volume")
	pending("inner")
	if left := entries(t, outer); len(left) != 0 {
		t.Errorf("made inside the volume %s: %v", outer, left)
	}

	// A class's share first, then a claim whose volume would be that share.
	claim(t, ns, "first", root)
	bound(t, ns, "first")
	claim(t, ns, rootName, byName)
	event(t, ns, rootName, "ProvisioningFailed", "already exists, and not as a volume")
	pending(rootName)
	if exists(exportDir + "/." + rootName + ".dirpv") {
		t.Errorf("a marker was left for the refused claim")
	}
}
