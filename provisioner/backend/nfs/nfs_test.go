package nfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// TestShareWithinExport: a class may name any directory inside a mounted export; its volumes
// are made through that export's mount, with paths relative to it.
func TestShareWithinExport(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := t.TempDir()
	b := &Backend{Exports: config.NFSExports{{Server: "nfs1", Share: "/exports", LocalPath: dir}}, Timeout: time.Minute}
	create := volumeop.Op{Kind: volumeop.Create, Path: "ns-a", Mode: 0o777, UID: -1, GID: -1, Owner: volumefs.Marker{PV: "pvc-a"}}
	if _, err := b.Run(ctx, backend.Volume{Location: Location{Server: "nfs1", Share: "/exports/team/fast"}}, create); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "team/fast/ns-a")); err != nil || !fi.IsDir() {
		t.Fatalf("volume directory: %v %v", fi, err)
	}
	for share, want := range map[string]string{
		"/export":             "NFS export nfs1:/export is not mounted",
		"/exports/.x":         "share /exports/.x (in export nfs1:/exports)",
		"/exports/team/../..": "is not mounted",
	} {
		if _, err := b.Place(context.Background(), &config.Class{Backend: Name, Params: Class{Server: "nfs1", Share: share}}, controller.ProvisionOptions{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Place(%s) = %v, want %q", share, err, want)
		}
	}
}
