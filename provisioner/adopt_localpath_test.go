package provisioner

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
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

// newLocalPathTest adopts local-path-provisioner with every node's volumes under
// /var/lib/dirpv/lpp (--hostpath-root /var/lib/dirpv, node1's held in a temporary directory);
// its operations run for real there.
func newLocalPathTest(t *testing.T, objs ...runtime.Object) (*Provisioner, *fakeBackend, string, *record.FakeRecorder) {
	t.Helper()
	root := t.TempDir()
	p, _, fh, rec := newTest(t, t.TempDir(), root)
	fh.passThrough = true
	l, err := config.ParseLocalPath([]byte(`{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/var/lib/dirpv/lpp"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(append(objs, node1)...)
	p.Adoptions = config.Adoptions{{Peer: config.PeerLocalPath, Name: config.DefaultLocalPathName, LocalPath: l}}
	p.Peers, p.PVs = ClientPeers{client}, client.CoreV1().PersistentVolumes()
	return p, fh, root, rec
}

func lppStorageClass() *storagev1.StorageClass {
	del := v1.PersistentVolumeReclaimDelete
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-path"}, Provisioner: config.DefaultLocalPathName,
		ReclaimPolicy: &del, VolumeBindingMode: wffc()}
}

// lppReleasedPV is a Released PV as local-path-provisioner makes it on node (hostname label
// hostname) for claim team/data.
func lppReleasedPV(name, node, hostname, path string) *v1.PersistentVolume {
	dirOrCreate := v1.HostPathDirectoryOrCreate
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			backend.AnnProvisionedBy: config.DefaultLocalPathName, "local.path.provisioner/selected-node": node}},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			PersistentVolumeSource:        v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: path, Type: &dirOrCreate}},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{hostname}}},
			}}}},
			ClaimRef:         &v1.ObjectReference{Namespace: "team", Name: "data", UID: "1234"},
			StorageClassName: "local-path",
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeReleased},
	}
}

func TestDeleteAdoptsLocalPath(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pv := lppReleasedPV("pvc-1", "node1", "host-1", "/var/lib/dirpv/lpp/pvc-1_team_data")
	p, fh, root, _ := newLocalPathTest(t, lppStorageClass(), pv)
	mkdir(t, filepath.Join(root, "lpp/pvc-1_team_data"))
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := dirNames(t, filepath.Join(root, "lpp")); len(got) != 0 {
		t.Errorf("lpp/ holds %q after the delete, want nothing", got)
	}
	var kinds []volumeop.Kind
	for _, op := range fh.ops {
		kinds = append(kinds, op.Kind)
	}
	if !slices.Equal(kinds, []volumeop.Kind{volumeop.Adopt, volumeop.Delete}) {
		t.Errorf("operations %v, want adopt then delete", kinds)
	}
	fresh, err := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{})
	if err != nil || fresh.Annotations["dirpv.io/node"] != "node1" || fresh.Annotations["dirpv.io/node-uid"] != "uid-node1" ||
		fresh.Annotations["dirpv.io/base-path"] != "/var/lib/dirpv/lpp" || fresh.Annotations[backend.AnnAdoptedFrom] != "local-path-provisioner" {
		t.Errorf("recorded %v, %v", fresh.Annotations, err)
	}
}

func TestDeleteLocalPathNodeGone(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pv := lppReleasedPV("pvc-1", "node9", "node9", "/var/lib/dirpv/lpp/pvc-1_team_data")
	p, fh, _, rec := newLocalPathTest(t, lppStorageClass(), pv)
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatalf("Delete: %v (want the PV let go, as local-path-provisioner does)", err)
	}
	if len(fh.ops) != 0 {
		t.Errorf("operations %+v on a gone node", fh.ops)
	}
	if ev := <-rec.Events; !strings.Contains(ev, ReasonNodeGone) || !strings.Contains(ev, "node9") {
		t.Errorf("event %q", ev)
	}
}

func TestDeleteLocalPathRefusesForeignHostname(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	// The affinity selects node1 by its name, but node1's hostname label is host-1: the PV was
	// not made by local-path-provisioner for that node.
	pv := lppReleasedPV("pvc-1", "node1", "node1", "/var/lib/dirpv/lpp/pvc-1_team_data")
	p, fh, root, rec := newLocalPathTest(t, lppStorageClass(), pv)
	mkdir(t, filepath.Join(root, "lpp/pvc-1_team_data"))
	err := p.Delete(ctx, pv)
	if err == nil || !strings.Contains(err.Error(), "node affinity selects") {
		t.Fatalf("Delete: %v, want a refusal", err)
	}
	if len(fh.ops) != 0 || !exists(filepath.Join(root, "lpp/pvc-1_team_data/data")) {
		t.Errorf("operations %+v; the directory must stay", fh.ops)
	}
	if ev := <-rec.Events; !strings.Contains(ev, ReasonAdoptionRefused) {
		t.Errorf("event %q", ev)
	}
}

func TestProvisionLocalPathClass(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	sc := lppStorageClass()
	p, _, root, _ := newLocalPathTest(t, sc)
	pvc := claim(func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{"volumeType": "local"} })
	pv, state, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: sc, PVC: pvc, PVName: "pvc-1234", SelectedNode: node1})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision: %v, %v", state, err)
	}
	if pv.Spec.Local == nil || pv.Spec.Local.Path != "/var/lib/dirpv/lpp/pvc-1234_team_data" || pv.Annotations[backend.AnnAdoptedFrom] != "local-path-provisioner" {
		t.Fatalf("PV source %+v, annotations %v; want a local source laid out as local-path-provisioner's", pv.Spec.PersistentVolumeSource, pv.Annotations)
	}
	if fi, err := os.Stat(filepath.Join(root, "lpp/pvc-1234_team_data")); err != nil || !fi.IsDir() {
		t.Errorf("directory: %v %v", fi, err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
