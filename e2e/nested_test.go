//go:build e2e

package e2e

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testNestedClasses: a class whose share lies below another class's never gets its volumes
// made inside one of that class's volumes, nor the other way round, whichever comes first.
// e2e-by-name makes each claim's directory at the top of the export, named after the claim;
// e2e-nested-inner and e2e-nested-root have shares below it, named like such claims.
func testNestedClasses(t *testing.T) {
	ns := namespace(t)
	pending := func(name string) {
		t.Helper()
		pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != v1.ClaimPending {
			t.Errorf("claim %s: %v %v, want Pending", name, pvc.Status.Phase, err)
		}
	}

	// The export outlives clusters. A run whose inner claim was provisioned after its outer
	// volume was gone (see the cleanup below) left the outer directory empty and unmarked:
	// remove it, or by-name refuses this run's outer claim. A non-empty one stays, and fails here.
	if exists(exportDir + "/.e2e-nested-outer.dirpv") {
		t.Fatalf("a volume e2e-nested-outer is left on the export by an earlier run")
	}
	if err := os.Remove(exportDir + "/e2e-nested-outer"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("left by an earlier run: %v", err)
	}

	// A volume first, then a class whose share is inside it.
	claim(t, ns, "e2e-nested-outer", "e2e-by-name")
	outer := onExport(t, bound(t, ns, "e2e-nested-outer"))
	claim(t, ns, "inner", "e2e-nested-inner")
	// The inner claim goes before the namespace: deleted together, the outer volume may go
	// first, and a last provisioning attempt of the claim being deleted then succeeds, making
	// e2e-nested-outer again as a plain parent directory (seen once).
	t.Cleanup(func() { deleteClaim(t, ns, "inner") })
	event(t, ns, "inner", "ProvisioningFailed", "lies inside another volume")
	pending("inner")
	if left := entries(t, outer); len(left) != 0 {
		t.Errorf("made inside the volume %s: %v", outer, left)
	}

	// A class's share first, then a claim whose volume would be that share.
	claim(t, ns, "first", "e2e-nested-root")
	bound(t, ns, "first")
	claim(t, ns, "e2e-nested-root", "e2e-by-name")
	event(t, ns, "e2e-nested-root", "ProvisioningFailed", "already exists, and not as a volume")
	pending("e2e-nested-root")
	if _, err := os.Lstat(exportDir + "/.e2e-nested-root.dirpv"); err == nil {
		t.Errorf("a marker was left for the refused claim")
	}
}
