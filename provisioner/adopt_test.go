package provisioner

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumeop"
)

var nspAdoption = config.Adoption{Peer: config.PeerNSP, Name: config.DefaultNSPName, Server: "10.0.0.5", Path: "/exports/nsp"}

func nspStorageClass(params map[string]string) *storagev1.StorageClass {
	del := v1.PersistentVolumeReclaimDelete
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs-client"}, Provisioner: config.DefaultNSPName,
		Parameters: params, ReclaimPolicy: &del}
}

// nspReleasedPV is a Released PV as NSP makes it for claim team/data, with the library's finalizer
// dirpv's controller added while it was bound.
func nspReleasedPV(name, path string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{backend.AnnProvisionedBy: config.DefaultNSPName},
			Finalizers: []string{libraryFinalizer}},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "10.0.0.5", Path: path}},
			ClaimRef:                      &v1.ObjectReference{Namespace: "team", Name: "data", UID: "1234"},
			StorageClassName:              "nfs-client",
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeReleased},
	}
}

// newAdoptTest is newTest with NSP's export /exports/nsp adopted; its operations run for real on
// a temporary export.
func newAdoptTest(t *testing.T, sc *storagev1.StorageClass, pvs ...*v1.PersistentVolume) (*Provisioner, *fakeBackend, string, *fake.Clientset) {
	export := t.TempDir()
	p, fn, _, _ := newTest(t, export, t.TempDir())
	fn.passThrough = true
	objs := []runtime.Object{}
	if sc != nil {
		objs = append(objs, sc)
	}
	for _, pv := range pvs {
		objs = append(objs, pv)
	}
	client := fake.NewClientset(objs...)
	p.Adoptions, p.Peers, p.PVs = config.Adoptions{nspAdoption}, ClientPeers{client}, client.CoreV1().PersistentVolumes()
	return p, fn, export, client
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("tenant"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteAdoptsAndArchives(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pv := nspReleasedPV("pvc-1234", "/exports/nsp/team-data-pvc-1234")
	p, fn, export, _ := newAdoptTest(t, nspStorageClass(nil), pv) // archiveOnDelete unset: NSP archives
	mkdir(t, filepath.Join(export, "nsp/team-data-pvc-1234"))
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got, want := dirNames(t, filepath.Join(export, "nsp")), []string{".archived-team-data-pvc-1234.dirpv", "archived-team-data-pvc-1234"}; !slices.Equal(got, want) {
		t.Errorf("export holds %q, want %q", got, want)
	}
	if data, err := os.ReadFile(filepath.Join(export, "nsp/archived-team-data-pvc-1234/data")); err != nil || string(data) != "tenant" {
		t.Errorf("archived data %q, %v", data, err)
	}
	var kinds []volumeop.Kind
	for _, op := range fn.ops {
		kinds = append(kinds, op.Kind)
	}
	if !slices.Equal(kinds, []volumeop.Kind{volumeop.Adopt, volumeop.Archive}) || !fn.ops[1].PlainArchive {
		t.Errorf("operations %+v", fn.ops)
	}
	fresh, err := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{})
	if err != nil || fresh.Annotations[backend.AnnAdoptedFrom] != string(config.PeerNSP) || fresh.Annotations[backend.AnnPath] != "team-data-pvc-1234" ||
		fresh.Annotations[backend.AnnOnDelete] != "archive" {
		t.Errorf("PV record %v, %v", fresh.Annotations, err)
	}
	if e := <-p.Recorder.(*record.FakeRecorder).Events; !strings.HasPrefix(e, "Normal "+ReasonVolumeAdopted) {
		t.Errorf("event %q", e)
	}
}

func TestDeleteRefusesAdoption(t *testing.T) {
	tests := []struct {
		name, path string
		pvName     string
		setup      func(t *testing.T, export string)
		class      *storagev1.StorageClass
		wantEvent  string
	}{
		{name: "forged PV copying a real path", pvName: "pvc-forged", path: "/exports/nsp/team-data-pvc-1234", class: nspStorageClass(nil),
			wantEvent: "is not where"},
		{name: "outside the adopted export", pvName: "pvc-1234", path: "/exports/team-data-pvc-1234", class: nspStorageClass(nil),
			wantEvent: "is not a directory under /exports/nsp"},
		{name: "dot-dot", pvName: "pvc-1234", path: "/exports/nsp/../team-data-pvc-1234", class: nspStorageClass(nil),
			wantEvent: "is not a directory under /exports/nsp"},
		{name: "symlinked directory", pvName: "pvc-1234", path: "/exports/nsp/team-data-pvc-1234", class: nspStorageClass(nil),
			setup: func(t *testing.T, export string) {
				if err := os.RemoveAll(filepath.Join(export, "nsp/team-data-pvc-1234")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(export, "nsp/elsewhere"), filepath.Join(export, "nsp/team-data-pvc-1234")); err != nil {
					t.Fatal(err)
				}
			}, wantEvent: "not a directory"},
		{name: "directory missing", pvName: "pvc-1234", path: "/exports/nsp/team-data-pvc-1234", class: nspStorageClass(nil),
			setup: func(t *testing.T, export string) {
				os.Remove(filepath.Join(export, "nsp/team-data-pvc-1234/data"))
				os.Remove(filepath.Join(export, "nsp/team-data-pvc-1234"))
			},
			wantEvent: "missing"},
		{name: "class gone", pvName: "pvc-1234", path: "/exports/nsp/team-data-pvc-1234", wantEvent: "is gone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			pv := nspReleasedPV(tc.pvName, tc.path)
			p, fn, export, _ := newAdoptTest(t, tc.class, pv)
			mkdir(t, filepath.Join(export, "nsp/team-data-pvc-1234"))
			mkdir(t, filepath.Join(export, "nsp/elsewhere"))
			if tc.setup != nil {
				tc.setup(t, export)
			}
			before := dirNames(t, filepath.Join(export, "nsp"))
			err := p.Delete(ctx, pv)
			if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrAdoptionRefused) {
				t.Fatalf("Delete: %v, want ErrRefused and ErrAdoptionRefused", err)
			}
			for _, op := range fn.ops {
				if op.Kind != volumeop.Adopt {
					t.Errorf("ran %s", op.Kind)
				}
			}
			if after := dirNames(t, filepath.Join(export, "nsp")); !slices.Equal(before, after) {
				t.Errorf("export changed: %q, was %q", after, before)
			}
			e := <-p.Recorder.(*record.FakeRecorder).Events
			if !strings.HasPrefix(e, "Warning "+ReasonAdoptionRefused) || !strings.Contains(e, tc.wantEvent) {
				t.Errorf("event %q, want %s naming %q", e, ReasonAdoptionRefused, tc.wantEvent)
			}
			fresh, err := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{})
			if err != nil || backend.Recorded(fresh) || slices.Contains(fresh.Finalizers, libraryFinalizer) {
				t.Errorf("PV %+v, %v: want no record and no library finalizer (it must not be held forever)", fresh.ObjectMeta, err)
			}
		})
	}
}

func TestAdoptDryRunChangesNothing(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pv := nspReleasedPV("pvc-1234", "/exports/nsp/team-data-pvc-1234")
	pv.Status.Phase = v1.VolumeBound
	p, _, export, _ := newAdoptTest(t, nspStorageClass(map[string]string{"archiveOnDelete": "false"}), pv)
	mkdir(t, filepath.Join(export, "nsp/team-data-pvc-1234"))
	got, err := p.Adopt(ctx, pv, true)
	if err != nil || got.Record[backend.AnnOnDelete] != "delete" || got.Volume != "10.0.0.5:/exports/nsp/team-data-pvc-1234" {
		t.Fatalf("Adopt check: %+v, %v", got, err)
	}
	if names := dirNames(t, filepath.Join(export, "nsp")); !slices.Equal(names, []string{"team-data-pvc-1234"}) {
		t.Errorf("export holds %q", names)
	}
	if fresh, _ := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{}); backend.Recorded(fresh) {
		t.Errorf("PV recorded: %v", fresh.Annotations)
	}
	// Then for real: the marker, the record; a second time it is not a peer's PV any more.
	if _, err := p.Adopt(ctx, pv, false); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, filepath.Join(export, "nsp")); !slices.Equal(names, []string{".team-data-pvc-1234.dirpv", "team-data-pvc-1234"}) {
		t.Errorf("export holds %q", names)
	}
	fresh, _ := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{})
	if _, err := p.Adopt(ctx, fresh, false); err == nil {
		t.Error("adopted twice")
	}
}

func TestProvisionNSPClass(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, export, _ := newAdoptTest(t, nil)
	sc := nspStorageClass(map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.labels.app}"})
	c := claim(func(c *v1.PersistentVolumeClaim) { c.Labels = map[string]string{"app": "web"} })
	pv, state, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: sc, PVC: c, PVName: "pvc-1234"})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision: %v, %v", state, err)
	}
	if src := pv.Spec.NFS; src == nil || src.Server != "10.0.0.5" || src.Path != "/exports/nsp/team/web" {
		t.Errorf("source %+v", pv.Spec.NFS)
	}
	if pv.Annotations[backend.AnnAdoptedFrom] != string(config.PeerNSP) || pv.Annotations[backend.AnnOnDelete] != "archive" {
		t.Errorf("record %v", pv.Annotations)
	}
	if _, err := os.Stat(filepath.Join(export, "nsp/team/.web.dirpv")); err != nil {
		t.Errorf("marker: %v", err)
	}
	// What dirpv cannot do as NSP does fails, naming the parameter.
	bad := nspStorageClass(map[string]string{"archiveOnDelete": "sometimes"})
	if _, _, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: bad, PVC: claim(), PVName: "pvc-2"}); err == nil || !strings.Contains(err.Error(), "archiveOnDelete") {
		t.Errorf("bad class: %v", err)
	}
}

// TestExpandAdopts: resizing is acting on a volume too: the PV is taken over first, then its new
// size (a label on nfs) needs nothing on disk. A refused one cannot be resized.
func TestExpandAdopts(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pv := nspReleasedPV("pvc-1234", "/exports/nsp/team-data-pvc-1234")
	pv.Status.Phase = v1.VolumeBound
	forged := nspReleasedPV("pvc-forged", "/exports/nsp/team-data-pvc-1234")
	p, _, export, _ := newAdoptTest(t, nspStorageClass(nil), pv, forged)
	mkdir(t, filepath.Join(export, "nsp/team-data-pvc-1234"))
	if err := p.Expand(ctx, pv, resource.MustParse("2Gi")); err != nil {
		t.Fatalf("Expand: %v", err)
	}
	if fresh, _ := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{}); !backend.Recorded(fresh) {
		t.Errorf("PV not taken over: %v", fresh.Annotations)
	}
	if err := p.Expand(ctx, forged, resource.MustParse("2Gi")); !errors.Is(err, ErrInfeasible) || !errors.Is(err, ErrAdoptionRefused) {
		t.Errorf("Expand of a forged PV: %v, want ErrInfeasible and ErrAdoptionRefused", err)
	}
}
