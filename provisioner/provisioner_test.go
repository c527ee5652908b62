package provisioner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// fakeBackend places volumes like the real backends but records operations instead of running
// them, unless run says what to do or passThrough has the real backend run them.
type fakeBackend struct {
	backend.Backend // the real one
	ops             []volumeop.Op
	run             func(volumeop.Op) (volumeop.Result, error)
	passThrough     bool
}

func (f *fakeBackend) Run(ctx context.Context, v backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	f.ops = append(f.ops, op)
	switch {
	case f.run != nil:
		return f.run(op)
	case f.passThrough:
		return f.Backend.Run(ctx, v, op)
	}
	return volumeop.Result{}, nil
}

// inProcess runs each operation on a node in its directory, as dirpv does with --local-root.
type inProcess string

func (d inProcess) Run(ctx context.Context, _, _ string, op volumeop.Op) (volumeop.Result, error) {
	return volumeop.RunLocal(ctx, string(d), op)
}

var testNow = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// newTest returns a provisioner whose nfs backend serves export 10.0.0.5:/exports (mounted at
// nfsDir) and whose hostPath backend runs in-process on localRoot, both wrapped in fakes.
func newTest(t *testing.T, nfsDir, localRoot string) (*Provisioner, *fakeBackend, *fakeBackend, *record.FakeRecorder) {
	exports := config.NFSExports{{Server: "10.0.0.5", Share: "/exports", LocalPath: nfsDir}}
	fn := &fakeBackend{Backend: &nfs.Backend{Exports: exports, Timeout: time.Minute}}
	fh := &fakeBackend{Backend: &hostpath.Backend{Client: fake.NewClientset(node1), Root: "/var/lib/dirpv", Node: inProcess(localRoot), Timeout: time.Minute}}
	rec := record.NewFakeRecorder(10)
	p := &Provisioner{
		Backends: backend.Set{fn, fh},
		Recorder: rec,
		Now:      func() time.Time { return testNow },
	}
	return p, fn, fh, rec
}

func wffc() *storagev1.VolumeBindingMode {
	m := storagev1.VolumeBindingWaitForFirstConsumer
	return &m
}

func hostPathClass(params map[string]string) *storagev1.StorageClass {
	p := map[string]string{"backend": "hostPath"}
	for k, v := range params {
		p[k] = v
	}
	retain := v1.PersistentVolumeReclaimRetain
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "hp"}, Provisioner: config.DefaultName,
		Parameters: p, VolumeBindingMode: wffc(), ReclaimPolicy: &retain}
}

func nfsClass(params map[string]string) *storagev1.StorageClass {
	p := map[string]string{"backend": "nfs", "server": "10.0.0.5", "share": "/exports"}
	for k, v := range params {
		p[k] = v
	}
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs"}, Provisioner: config.DefaultName,
		Parameters: p, MountOptions: []string{"nfsvers=4.1"}}
}

func claim(mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "data", UID: "1234"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

var node1 = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-node1", Labels: map[string]string{v1.LabelHostname: "host-1"}}}

func opts(sc *storagev1.StorageClass, pvc *v1.PersistentVolumeClaim, node *v1.Node) controller.ProvisionOptions {
	return controller.ProvisionOptions{StorageClass: sc, PVC: pvc, PVName: "pvc-1234", SelectedNode: node}
}

func TestProvisionHostPath(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	pv, state, err := p.Provision(ctx, opts(hostPathClass(map[string]string{"mode": "0750", "uid": "1000", "gid": "2000"}), claim(), node1))
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision: %v, %v", state, err)
	}
	if len(fh.ops) != 1 {
		t.Fatalf("ops %+v", fh.ops)
	}
	op := fh.ops[0]
	if op.Kind != volumeop.Create || op.Path != "team-data-pvc-1234" || op.Mode != 0o750 || op.UID != 1000 || op.GID != 2000 ||
		op.Owner.PV != "pvc-1234" || op.Owner.ClaimUID != "1234" || op.Owner.ClaimNamespace != "team" || op.Owner.ClaimName != "data" {
		t.Errorf("op %+v", op)
	}
	hp := pv.Spec.HostPath
	if hp == nil || hp.Path != "/var/lib/dirpv/team-data-pvc-1234" || hp.Type == nil || *hp.Type != v1.HostPathDirectory {
		t.Errorf("hostPath source %+v", hp)
	}
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	if len(terms) != 1 || terms[0].MatchExpressions[0].Key != v1.LabelHostname || terms[0].MatchExpressions[0].Values[0] != "host-1" {
		t.Errorf("node affinity %+v", terms)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		t.Errorf("reclaim policy %q, want the class's Retain", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if got := pv.Spec.Capacity[v1.ResourceStorage]; got.String() != "1Gi" {
		t.Errorf("capacity %s", got.String())
	}
	if *pv.Spec.VolumeMode != v1.PersistentVolumeFilesystem || len(pv.Spec.AccessModes) != 1 || pv.Spec.AccessModes[0] != v1.ReadWriteOnce {
		t.Errorf("mode %v access %v", *pv.Spec.VolumeMode, pv.Spec.AccessModes)
	}
	want := map[string]string{backend.AnnBackend: "hostPath", hostpath.AnnNode: "node1", hostpath.AnnNodeUID: "uid-node1",
		hostpath.AnnBasePath: "/var/lib/dirpv", backend.AnnPath: "team-data-pvc-1234", backend.AnnOnDelete: "delete"}
	for k, v := range want {
		if pv.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, pv.Annotations[k], v)
		}
	}
	if pv.Name != "pvc-1234" {
		t.Errorf("name %q", pv.Name)
	}
	// Kubernetes tells nobody about a deleted Retain PV: dirpv's finalizer lets it release the
	// directory to the operator first.
	if !slices.Equal(pv.Finalizers, []string{backend.FinalizerReclaim}) {
		t.Errorf("finalizers %v", pv.Finalizers)
	}
}

func TestProvisionNFS(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, fn, _, _ := newTest(t, t.TempDir(), "")
	c := claim(func(c *v1.PersistentVolumeClaim) {
		c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany, v1.ReadOnlyMany}
	})
	sc := nfsClass(map[string]string{"pathPattern": "{{.PVC.Namespace}}/{{.PVC.Name}}", "onDelete": "archive"})
	pv, _, err := p.Provision(ctx, opts(sc, c, nil))
	if err != nil {
		t.Fatal(err)
	}
	if s := pv.Spec.NFS; s == nil || s.Server != "10.0.0.5" || s.Path != "/exports/team/data" {
		t.Errorf("nfs source %+v", s)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		t.Errorf("reclaim policy %q, want the default Delete", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if len(pv.Spec.MountOptions) != 1 || pv.Spec.MountOptions[0] != "nfsvers=4.1" || pv.Spec.NodeAffinity != nil {
		t.Errorf("mount options %v affinity %v", pv.Spec.MountOptions, pv.Spec.NodeAffinity)
	}
	if len(pv.Spec.AccessModes) != 2 || len(fn.ops) != 1 || fn.ops[0].Path != "team/data" {
		t.Errorf("access %v ops %+v", pv.Spec.AccessModes, fn.ops)
	}
	if pv.Annotations[nfs.AnnServer] != "10.0.0.5" || pv.Annotations[nfs.AnnShare] != "/exports" || pv.Annotations[backend.AnnOnDelete] != "archive" {
		t.Errorf("annotations %v", pv.Annotations)
	}
}

// TestProvisionRecycle: dirpv recycles the volume itself, so Kubernetes sees Retain and never
// runs its own recycler on it; the real policy is recorded and labelled.
func TestProvisionRecycle(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, _, _ := newTest(t, t.TempDir(), "")
	pv, _, err := p.Provision(ctx, opts(nfsClass(map[string]string{"recycle": "true"}), claim(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain ||
		pv.Annotations[backend.AnnReclaim] != "Recycle" || pv.Labels[backend.LabelReclaim] != "recycle" ||
		!slices.Equal(pv.Finalizers, []string{backend.FinalizerReclaim}) {
		t.Fatalf("policy %q annotations %v labels %v finalizers %v", pv.Spec.PersistentVolumeReclaimPolicy, pv.Annotations, pv.Labels, pv.Finalizers)
	}
	vol, _, err := p.Backends.FromPV(pv)
	if err != nil || !vol.Recycle {
		t.Fatalf("FromPV: %+v %v", vol, err)
	}
	plain, _, _ := p.Provision(ctx, opts(nfsClass(nil), claim(), nil))
	if _, ok := plain.Annotations[backend.AnnReclaim]; ok || plain.Labels != nil || plain.Finalizers != nil {
		t.Errorf("a plain volume is marked for recycling: %v %v %v", plain.Annotations, plain.Labels, plain.Finalizers)
	}
}

func TestScrub(t *testing.T) {
	tests := []struct {
		name      string
		forge     func(pv *v1.PersistentVolume)
		runErr    error
		wantErr   error
		wantInErr string
	}{
		{name: "scrubbed"},
		{name: "failure reported", runErr: errors.New("device or resource busy"), wantInErr: "scrubbing 10.0.0.5:/exports/team-data-pvc-1234: device or resource busy"},
		{name: "node gone", runErr: backend.ErrNodeGone, wantErr: backend.ErrNodeGone},
		{name: "forged path refused", forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnPath] = "../etc"
			pv.Spec.NFS.Path = "/etc"
		}, wantErr: ErrRefused, wantInErr: "refusing to recycle: annotation dirpv.io/path"},
		{name: "export not served refused", forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[nfs.AnnShare] = "/"
			pv.Spec.NFS.Path = "/team-data-pvc-1234"
		}, wantErr: ErrRefused, wantInErr: "not mounted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, fn, _, _ := newTest(t, t.TempDir(), "")
			pv := provisioned(t, p, nfsClass(map[string]string{"recycle": "true"}), nil)
			if tt.forge != nil {
				tt.forge(pv)
			}
			fn.ops = nil
			fn.run = func(volumeop.Op) (volumeop.Result, error) { return volumeop.Result{Scrubbed: true}, tt.runErr }
			scrubbed, err := p.Scrub(ctx, pv, "old-uid")
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) || tt.wantInErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantInErr)) ||
				tt.wantErr == nil && tt.wantInErr == "" && (err != nil || !scrubbed.Removed) {
				t.Fatalf("Scrub = %v, %v; want %v containing %q", scrubbed, err, tt.wantErr, tt.wantInErr)
			}
			if errors.Is(tt.wantErr, ErrRefused) {
				if len(fn.ops) != 0 {
					t.Errorf("refused PV still touched disk: %+v", fn.ops)
				}
				return
			}
			if len(fn.ops) != 1 || fn.ops[0].Kind != volumeop.Scrub || fn.ops[0].Path != "team-data-pvc-1234" ||
				fn.ops[0].Owner.PV != "pvc-1234" || fn.ops[0].Owner.ClaimUID != "old-uid" {
				t.Errorf("ops %+v", fn.ops)
			}
		})
	}
}

// TestProvisionRefused: every bad input fails with a message naming the problem, and nothing is
// created on disk.
func TestProvisionRefused(t *testing.T) {
	withMountOptions := hostPathClass(nil)
	withMountOptions.MountOptions = []string{"ro"}
	block := v1.PersistentVolumeBlock
	tests := []struct {
		name    string
		sc      *storagev1.StorageClass
		pvc     *v1.PersistentVolumeClaim
		node    *v1.Node
		wantErr string
	}{
		{"unknown parameter", hostPathClass(map[string]string{"archiveOnDelete": "true"}), claim(), node1, `"archiveOnDelete": unknown parameter`},
		{"no selected node", hostPathClass(nil), claim(), nil, "no selected node"},
		{"hostPath mountOptions", withMountOptions, claim(), node1, "does not support mountOptions"},
		{"basePath outside root", hostPathClass(map[string]string{"basePath": "/etc"}), claim(), node1, "basePath /etc is not within the provisioner's --hostpath-root /var/lib/dirpv"},
		{"basePath beside root", hostPathClass(map[string]string{"basePath": "/var/lib/dirpv2"}), claim(), node1, "not within"},
		{"block", hostPathClass(nil), claim(func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block }), node1, "volumeMode Block is not supported"},
		{"RWX on hostPath", hostPathClass(nil), claim(func(c *v1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
		}), node1, "access mode ReadWriteMany is not supported by backend hostPath"},
		{"no access modes", hostPathClass(nil), claim(func(c *v1.PersistentVolumeClaim) { c.Spec.AccessModes = nil }), node1, "no access modes"},
		{"no request", hostPathClass(nil), claim(func(c *v1.PersistentVolumeClaim) { c.Spec.Resources.Requests = nil }), node1, "no storage request"},
		{"selector", hostPathClass(nil), claim(func(c *v1.PersistentVolumeClaim) { c.Spec.Selector = &metav1.LabelSelector{} }), node1, "selector"},
		{"data source", hostPathClass(nil), claim(func(c *v1.PersistentVolumeClaim) {
			c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "x"}
		}), node1, "dataSource"},
		{"unknown export", nfsClass(map[string]string{"share": "/other"}), claim(), nil, "NFS export 10.0.0.5:/other is not mounted in the provisioner (it serves: 10.0.0.5:/exports)"},
		{"traversal through annotation", nfsClass(map[string]string{"pathPattern": `{{index .PVC.Annotations "dir"}}`}),
			claim(func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{"dir": "../../etc"} }), nil, `rendered "../../etc": unsafe volume path: escapes its root`},
		{"absolute through annotation", nfsClass(map[string]string{"pathPattern": `{{index .PVC.Annotations "dir"}}`}),
			claim(func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{"dir": "/etc"} }), nil, "absolute"},
		{"recycle with reclaimPolicy Retain", hostPathClass(map[string]string{"recycle": "true"}), claim(), node1, `"recycle": "true" conflicts with reclaimPolicy Retain`},
		{"missing label", nfsClass(map[string]string{"pathPattern": `{{.PVC.Labels.team}}`}), claim(), nil, `map has no entry for key "team"`},
		{"claim being deleted", nfsClass(nil), claim(beingDeleted), nil, "the claim is being deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			exportDir, localRoot := t.TempDir(), t.TempDir()
			p, fn, fh, _ := newTest(t, exportDir, localRoot)
			pv, state, err := p.Provision(ctx, opts(tt.sc, tt.pvc, tt.node))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Provision = %v, %v; want error containing %q", pv, err, tt.wantErr)
			}
			if state != controller.ProvisioningFinished {
				t.Errorf("state %q, want final", state)
			}
			if len(fn.ops)+len(fh.ops) != 0 {
				t.Errorf("operations ran: %+v %+v", fn.ops, fh.ops)
			}
			for _, dir := range []string{exportDir, localRoot} {
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("%s not empty: %v", dir, entries)
				}
			}
		})
	}
}

func TestProvisionErrorStates(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		state controller.ProvisioningState
	}{
		{"node gone: reschedule", fmt.Errorf("node node1: %w", backend.ErrNodeGone), controller.ProvisioningReschedule},
		{"timeout: may still finish", fmt.Errorf("helper: %w", context.DeadlineExceeded), controller.ProvisioningInBackground},
		{"refused: final", errors.New("directory belongs to another PV"), controller.ProvisioningFinished},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, _, fh, _ := newTest(t, t.TempDir(), "")
			fh.run = func(volumeop.Op) (volumeop.Result, error) { return volumeop.Result{}, tt.err }
			_, state, err := p.Provision(ctx, opts(hostPathClass(nil), claim(), node1))
			if !errors.Is(err, tt.err) || state != tt.state {
				t.Fatalf("got %q, %v; want %q, %v", state, err, tt.state, tt.err)
			}
		})
	}
}

func beingDeleted(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &metav1.Time{Time: testNow} }

// TestProvisionClaimBeingDeleted: a claim being deleted is refused, unless its last create ran
// out of time, whose directory may still appear: that claim gets its PV, to be reclaimed.
func TestProvisionClaimBeingDeleted(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	timeout := fmt.Errorf("helper: %w", context.DeadlineExceeded)
	fh.run = func(volumeop.Op) (volumeop.Result, error) { return volumeop.Result{}, timeout }
	if _, state, err := p.Provision(ctx, opts(hostPathClass(nil), claim(), node1)); state != controller.ProvisioningInBackground {
		t.Fatalf("got %q, %v; want in background", state, err)
	}

	fh.run = nil // the retry succeeds
	pv, state, err := p.Provision(ctx, opts(hostPathClass(nil), claim(beingDeleted), node1))
	if err != nil || pv == nil || state != controller.ProvisioningFinished {
		t.Fatalf("retry after a timeout: got %v, %q, %v; want a PV", pv, state, err)
	}
	if len(fh.ops) != 2 {
		t.Errorf("operations: %+v, want the create twice", fh.ops)
	}

	// Settled: the next attempt for the claim being deleted is refused again.
	if _, _, err := p.Provision(ctx, opts(hostPathClass(nil), claim(beingDeleted), node1)); err == nil || !strings.Contains(err.Error(), "being deleted") {
		t.Fatalf("got %v, want refused", err)
	}
	if len(fh.ops) != 2 {
		t.Errorf("operations: %+v, want no more", fh.ops)
	}
}

// provisioned returns a PV as Provision made it, for Delete tests.
func provisioned(t *testing.T, p *Provisioner, sc *storagev1.StorageClass, node *v1.Node) *v1.PersistentVolume {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	pv, _, err := p.Provision(ctx, opts(sc, claim(), node))
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name      string
		sc        *storagev1.StorageClass
		node      *v1.Node
		forge     func(pv *v1.PersistentVolume)
		result    volumeop.Result
		runErr    error
		wantOp    volumeop.Kind
		wantErr   string
		wantEvent string
	}{
		{name: "delete", sc: hostPathClass(nil), node: node1, wantOp: volumeop.Delete},
		{name: "archive", sc: nfsClass(map[string]string{"onDelete": "archive"}), wantOp: volumeop.Archive,
			result: volumeop.Result{Archive: "archived-x"}, wantEvent: "Normal VolumeArchived Directory 10.0.0.5:/exports/team-data-pvc-1234 archived as archived-x"},
		{name: "retain", sc: nfsClass(map[string]string{"onDelete": "retain"}), wantOp: volumeop.Release,
			wantEvent: "Normal VolumeRetained Directory 10.0.0.5:/exports/team-data-pvc-1234 kept (onDelete: retain)"},
		{name: "node gone", sc: hostPathClass(nil), node: node1, wantOp: volumeop.Delete, runErr: fmt.Errorf("node node1 no longer exists: %w", backend.ErrNodeGone),
			wantEvent: "Warning VolumeNodeGone Directory /var/lib/dirpv/team-data-pvc-1234 was not reclaimed: node node1 no longer exists"},
		{name: "failure reported", sc: hostPathClass(nil), node: node1, wantOp: volumeop.Delete, runErr: errors.New("permission denied"), wantErr: "permission denied"},
		{name: "forged path", sc: hostPathClass(nil), node: node1, forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnPath] = "../../etc"
			pv.Spec.HostPath.Path = "/etc"
		}, wantErr: "refusing to reclaim: annotation dirpv.io/path"},
		{name: "forged basePath", sc: hostPathClass(nil), node: node1, forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[hostpath.AnnBasePath] = "/etc"
			pv.Spec.HostPath.Path = "/etc/team-data-pvc-1234"
		}, wantErr: "basePath /etc is not within"},
		{name: "source differs from annotations", sc: hostPathClass(nil), node: node1, forge: func(pv *v1.PersistentVolume) {
			pv.Spec.HostPath.Path = "/var/lib/dirpv/other"
		}, wantErr: "does not match"},
		{name: "forged export", sc: nfsClass(nil), forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[nfs.AnnShare] = "/"
			pv.Spec.NFS.Path = "/team-data-pvc-1234"
		}, wantErr: "NFS export 10.0.0.5:/ is not mounted"},
		{name: "unknown backend", sc: nfsClass(nil), forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnBackend] = "ceph"
		}, wantErr: `"ceph" is not one of`},
		{name: "unknown onDelete", sc: nfsClass(nil), forge: func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnOnDelete] = "shred"
		}, wantErr: `"shred" is not one of`},
		{name: "not ours", sc: nfsClass(nil), forge: func(pv *v1.PersistentVolume) { pv.Annotations = nil }, wantErr: "refusing to reclaim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, fn, fh, rec := newTest(t, t.TempDir(), "")
			pv := provisioned(t, p, tt.sc, tt.node)
			if tt.forge != nil {
				tt.forge(pv)
			}
			fn.ops, fh.ops = nil, nil
			run := func(volumeop.Op) (volumeop.Result, error) { return tt.result, tt.runErr }
			fn.run, fh.run = run, run
			err := p.Delete(ctx, pv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Delete = %v, want error containing %q", err, tt.wantErr)
				}
				if tt.runErr == nil && len(fn.ops)+len(fh.ops) > 0 {
					t.Errorf("refused PV still touched disk: %+v %+v", fn.ops, fh.ops)
				}
				return
			}
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			ops := append(fn.ops, fh.ops...)
			if tt.wantOp == "" && len(ops) != 0 || tt.wantOp != "" && (len(ops) != 1 || ops[0].Kind != tt.wantOp || ops[0].Owner.PV != "pvc-1234") {
				t.Errorf("ops %+v, want %q", ops, tt.wantOp)
			}
			if (tt.wantOp == volumeop.Archive || tt.wantOp == volumeop.Release) && !ops[0].Now.Equal(testNow) {
				t.Errorf("%s time %v", tt.wantOp, ops[0].Now)
			}
			if tt.wantOp == volumeop.Release && ops[0].Why != "kept (onDelete: retain) when PV pvc-1234 was deleted" {
				t.Errorf("release reason %q", ops[0].Why)
			}
			var event string
			select {
			case event = <-rec.Events:
			default:
			}
			if !strings.HasPrefix(event, tt.wantEvent) || (tt.wantEvent == "") != (event == "") {
				t.Errorf("event %q, want %q", event, tt.wantEvent)
			}
		})
	}
}

// TestRealFilesystem runs Provision and Delete through the real backends and filesystem: the nfs
// export and the hostPath root are temporary directories.
func TestRealFilesystem(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	exportDir, localRoot := t.TempDir(), t.TempDir()
	p, fn, fh, _ := newTest(t, exportDir, localRoot)
	fn.passThrough, fh.passThrough = true, true

	hp := provisioned(t, p, hostPathClass(map[string]string{"basePath": "/var/lib/dirpv/fast", "mode": "0750"}), node1)
	dir := filepath.Join(localRoot, "fast", "team-data-pvc-1234")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o750 || !fi.IsDir() {
		t.Fatalf("hostPath directory: %v %v", fi, err)
	}
	// Retrying the same claim reuses its directory.
	if again := provisioned(t, p, hostPathClass(map[string]string{"basePath": "/var/lib/dirpv/fast", "mode": "0750"}), node1); again.Spec.HostPath.Path != hp.Spec.HostPath.Path {
		t.Fatalf("retry placed the volume at %s", again.Spec.HostPath.Path)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, hp); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory survived Delete: %v", err)
	}

	nv := provisioned(t, p, nfsClass(map[string]string{"onDelete": "archive"}), nil)
	if err := os.WriteFile(filepath.Join(exportDir, "team-data-pvc-1234", "keep"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, nv); err != nil {
		t.Fatal(err)
	}
	archived := filepath.Join(exportDir, "archived-team-data-pvc-1234-20261122T080000Z", "keep")
	if b, err := os.ReadFile(archived); err != nil || string(b) != "data" {
		t.Fatalf("archive: %q %v", b, err)
	}
}

func TestRelease(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, fn, _, rec := newTest(t, t.TempDir(), "")
	pv := provisioned(t, p, nfsClass(nil), nil)
	fn.ops = nil
	if err := p.Release(ctx, pv); err != nil {
		t.Fatal(err)
	}
	if len(fn.ops) != 1 || fn.ops[0].Kind != volumeop.Release || fn.ops[0].Owner.PV != "pvc-1234" ||
		fn.ops[0].Why != "kept (reclaimPolicy Retain) when PV pvc-1234 was deleted" || !fn.ops[0].Now.Equal(testNow) {
		t.Errorf("ops %+v", fn.ops)
	}
	if e := <-rec.Events; !strings.HasPrefix(e, "Normal VolumeRetained Directory 10.0.0.5:/exports/team-data-pvc-1234 kept (reclaimPolicy Retain)") {
		t.Errorf("event %q", e)
	}
}

// realTest is newTest with both backends working on temporary directories: the export, and
// the node's --hostpath-root.
func realTest(t *testing.T) (p *Provisioner, exportDir, hostRoot string) {
	exportDir, hostRoot = t.TempDir(), t.TempDir()
	p, fn, fh, _ := newTest(t, exportDir, hostRoot)
	fn.passThrough, fh.passThrough = true, true
	return p, exportDir, hostRoot
}

// provision runs Provision for claim name in namespace team.
func provision(ctx context.Context, p *Provisioner, sc *storagev1.StorageClass, name string) (*v1.PersistentVolume, error) {
	c := claim(func(c *v1.PersistentVolumeClaim) { c.Name, c.UID = name, types.UID("uid-"+name) })
	o := opts(sc, c, node1)
	o.PVName = "pvc-" + name
	if sc.Parameters["backend"] == "nfs" {
		o.SelectedNode = nil
	}
	pv, _, err := p.Provision(ctx, o)
	return pv, err
}

// TestNestedClasses: a class whose root lies below another class's may never have its volumes
// made inside one of that class's volumes, or the other way round, whichever is used first.
// Every class's volumes are checked from the operator's root (--hostpath-root, the export).
func TestNestedClasses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		outer      *storagev1.StorageClass // pathPattern {{.PVC.Name}}: a claim named "fast" ...
		inner      *storagev1.StorageClass // ... gets the directory that is this class's root
		root       func(exportDir, hostRoot string) string
		innerClaim string // the inner class's volume, relative to root
	}{{
		name:       "hostPath",
		outer:      hostPathClass(map[string]string{"basePath": "/var/lib/dirpv", "pathPattern": "{{.PVC.Name}}"}),
		inner:      hostPathClass(map[string]string{"basePath": "/var/lib/dirpv/fast"}),
		root:       func(_, hostRoot string) string { return hostRoot },
		innerClaim: "fast/team-b-pvc-b",
	}, {
		name:       "nfs",
		outer:      nfsClass(map[string]string{"pathPattern": "{{.PVC.Name}}"}),
		inner:      nfsClass(map[string]string{"share": "/exports/fast"}),
		root:       func(exportDir, _ string) string { return exportDir },
		innerClaim: "fast/team-b-pvc-b",
	}} {
		t.Run(tc.name+"/outer first", func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, exportDir, hostRoot := realTest(t)
			root := tc.root(exportDir, hostRoot)
			if _, err := provision(ctx, p, tc.outer, "fast"); err != nil {
				t.Fatal(err)
			}
			_, err := provision(ctx, p, tc.inner, "b")
			if !errors.Is(err, volumefs.ErrNested) {
				t.Fatalf("inner class's claim: %v, want ErrNested", err)
			}
			t.Logf("refused: %v", err)
			if names := dirNames(t, filepath.Join(root, "fast")); len(names) != 0 {
				t.Errorf("made inside the outer class's volume: %v", names)
			}
		})
		t.Run(tc.name+"/inner first", func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, exportDir, hostRoot := realTest(t)
			root := tc.root(exportDir, hostRoot)
			inner, err := provision(ctx, p, tc.inner, "b")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, tc.innerClaim, "data"), []byte("b's"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = provision(ctx, p, tc.outer, "fast")
			if !errors.Is(err, volumefs.ErrNotOwner) {
				t.Fatalf("outer class's claim named fast: %v, want ErrNotOwner", err)
			}
			t.Logf("refused: %v", err)
			// Had it been made, deleting it would take the inner class's volumes with it.
			if err := p.Delete(ctx, inner); err != nil {
				t.Fatal(err)
			}
			if names := dirNames(t, filepath.Join(root, "fast")); len(names) != 0 {
				t.Errorf("left in the inner class's root: %v", names)
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestForgedPVAfterRelease: a directory released to the operator (kept, archived, or kept by a
// deleted Retain PV) cannot be reclaimed through a later PV of the same name with onDelete
// delete (a PV restored from a backup, or made by hand).
func TestForgedPVAfterRelease(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sc      *storagev1.StorageClass
		release func(*Provisioner, context.Context, *v1.PersistentVolume) error
		forge   func(pv *v1.PersistentVolume, exportDir string) string // returns the directory it now names
	}{{
		name:    "onDelete retain",
		sc:      nfsClass(map[string]string{"onDelete": "retain"}),
		release: (*Provisioner).Delete,
	}, {
		name: "reclaimPolicy Retain, PV deleted",
		sc: func() *storagev1.StorageClass {
			sc := nfsClass(nil)
			sc.ReclaimPolicy = ptrTo(v1.PersistentVolumeReclaimRetain)
			return sc
		}(),
		release: (*Provisioner).Release,
	}, {
		name:    "archived",
		sc:      nfsClass(map[string]string{"onDelete": "archive"}),
		release: (*Provisioner).Delete,
		forge: func(pv *v1.PersistentVolume, exportDir string) string {
			arch := "archived-team-data-pvc-1234-20261122T080000Z"
			pv.Annotations[backend.AnnPath] = arch
			pv.Spec.NFS.Path = "/exports/" + arch
			return filepath.Join(exportDir, arch)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, exportDir, _ := realTest(t)
			pv := provisioned(t, p, tc.sc, nil)
			dir := filepath.Join(exportDir, "team-data-pvc-1234")
			if err := os.WriteFile(filepath.Join(dir, "data"), []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := tc.release(p, ctx, pv.DeepCopy()); err != nil {
				t.Fatal(err)
			}
			forged := pv.DeepCopy()
			forged.Annotations[backend.AnnOnDelete] = string(config.OnDeleteDelete)
			if tc.forge != nil {
				dir = tc.forge(forged, exportDir)
			}
			err := p.Delete(ctx, forged)
			if !errors.Is(err, volumefs.ErrReleased) {
				t.Fatalf("Delete of the forged PV = %v, want ErrReleased", err)
			}
			t.Logf("refused: %v", err)
			if b, err := os.ReadFile(filepath.Join(dir, "data")); err != nil || string(b) != "precious" {
				t.Errorf("released data: %q %v", b, err)
			}
		})
	}
}

// TestNodeRecreated: a node deleted and joined again (a new Node UID) gets no operation on the
// volumes it had: reclaiming them is skipped with a warning, as for a node that is gone.
func TestNodeRecreated(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, hostRoot := realTest(t)
	pv := provisioned(t, p, hostPathClass(nil), node1)
	dir := filepath.Join(hostRoot, "team-data-pvc-1234")
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fh := p.Backends.Get(hostpath.Name).(*fakeBackend)
	again := node1.DeepCopy()
	again.UID = "uid-node1-again"
	fh.Backend.(*hostpath.Backend).Client = fake.NewClientset(again)
	rec := p.Recorder.(*record.FakeRecorder)
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatal(err)
	}
	if e := <-rec.Events; !strings.Contains(e, "VolumeNodeGone") || !strings.Contains(e, "deleted and joined again") {
		t.Errorf("event %q", e)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data")); err != nil || string(b) != "x" {
		t.Errorf("data: %q %v", b, err)
	}
	// A forged PV that names the new Node UID finds the old one in the marker.
	forged := pv.DeepCopy()
	forged.Annotations[hostpath.AnnNodeUID] = "uid-node1-again"
	if err := p.Delete(ctx, forged); !errors.Is(err, volumefs.ErrNotOwner) {
		t.Errorf("Delete of the forged PV = %v, want ErrNotOwner", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data")); err != nil || string(b) != "x" {
		t.Errorf("data: %q %v", b, err)
	}
}

// TestShouldDelete: a PV already gone is not reclaimed again (the library sees it once more
// from its cache after deleting it).
func TestShouldDelete(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	now := metav1.Now()
	there := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-there"}}
	deleted := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-deleted", DeletionTimestamp: &now,
		Finalizers: []string{libraryFinalizer, "kubernetes.io/pv-protection"}}}
	done := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-done", DeletionTimestamp: &now,
		Finalizers: []string{"kubernetes.io/pv-protection"}}}
	gone := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-gone"}}
	client := fake.NewClientset(there, deleted, done)
	p := &Provisioner{PVs: client.CoreV1().PersistentVolumes()}
	for pv, want := range map[*v1.PersistentVolume]bool{there: true, deleted: true, done: false, gone: false} {
		// The library's cached copy: as it was before the library reclaimed it.
		cached := pv.DeepCopy()
		cached.DeletionTimestamp, cached.Finalizers = nil, []string{libraryFinalizer}
		cached.Status.Phase, cached.Spec.PersistentVolumeReclaimPolicy = v1.VolumeReleased, v1.PersistentVolumeReclaimDelete
		if got := p.ShouldDelete(ctx, cached); got != want {
			t.Errorf("ShouldDelete(%s) = %v, want %v", pv.Name, got, want)
		}
	}

	// What the library would refuse anyway is refused without a read.
	client.ClearActions()
	bound := there.DeepCopy()
	bound.Status.Phase, bound.Spec.PersistentVolumeReclaimPolicy = v1.VolumeBound, v1.PersistentVolumeReclaimDelete
	retained := there.DeepCopy()
	retained.Status.Phase, retained.Spec.PersistentVolumeReclaimPolicy = v1.VolumeReleased, v1.PersistentVolumeReclaimRetain
	for _, pv := range []*v1.PersistentVolume{bound, retained} {
		if p.ShouldDelete(ctx, pv) {
			t.Errorf("ShouldDelete(%s %s %s) = true", pv.Name, pv.Status.Phase, pv.Spec.PersistentVolumeReclaimPolicy)
		}
	}
	if a := client.Actions(); len(a) != 0 {
		t.Errorf("API calls for PVs the library would not reclaim: %v", a)
	}
}

// capacity: enforce carries the claim's size to the node, records it on the PV, clears the limit
// when the volume goes, and grows it on Expand; a label volume's Expand touches nothing.
func TestEnforcedCapacity(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	fh.run = func(op volumeop.Op) (volumeop.Result, error) {
		if op.Kind == volumeop.Create {
			return volumeop.Result{Quota: "project 1073741824"}, nil
		}
		return volumeop.Result{}, nil
	}
	pv := provisioned(t, p, hostPathClass(map[string]string{"capacity": "enforce"}), node1)
	if op := fh.ops[0]; op.Kind != volumeop.Create || op.Limit != 1<<30 || !op.NeedsAdmin() {
		t.Errorf("create op %+v, want Limit 1Gi", op)
	}
	if pv.Annotations[backend.AnnCapacity] != "enforce" || pv.Annotations[backend.AnnQuota] != "project 1073741824" {
		t.Errorf("annotations %v, want capacity enforce and the quota", pv.Annotations)
	}

	if err := p.Expand(ctx, pv, resource.MustParse("2Gi")); err != nil {
		t.Fatal(err)
	}
	if op := fh.ops[1]; op.Kind != volumeop.Expand || op.Limit != 2<<30 || op.Path != "team-data-pvc-1234" || op.Owner.PV != "pvc-1234" {
		t.Errorf("expand op %+v, want Limit 2Gi", op)
	}
	if err := p.Release(ctx, pv); err != nil {
		t.Fatal(err)
	}
	if op := fh.ops[2]; op.Kind != volumeop.Release || !op.Limited {
		t.Errorf("release op %+v, want Limited", op)
	}

	label := provisioned(t, p, hostPathClass(nil), node1)
	if op := fh.ops[3]; op.Limit != 0 || op.NeedsAdmin() || label.Annotations[backend.AnnCapacity] != "" {
		t.Errorf("label class: op %+v, annotations %v; want no limit", op, label.Annotations)
	}
	if err := p.Expand(ctx, label, resource.MustParse("2Gi")); err != nil || len(fh.ops) != 4 {
		t.Errorf("Expand of a label volume = %v, ops %d; want nothing run", err, len(fh.ops))
	}
	if err := p.Delete(ctx, label); err != nil || fh.ops[4].Limited {
		t.Errorf("Delete of a label volume = %v, op %+v; want no limit to clear", err, fh.ops[4])
	}

	pv.Annotations[backend.AnnCapacity] = "hard"
	if err := p.Expand(ctx, pv, resource.MustParse("3Gi")); !errors.Is(err, ErrRefused) || len(fh.ops) != 5 {
		t.Errorf("Expand with a forged annotation = %v, want ErrRefused and nothing run", err)
	}
}

// A volume the filesystem has no room for (the limits there would pass its size times the
// class's overcommit) sends its claim back to the scheduler; a resize with no room is infeasible.
func TestNoRoom(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	noRoom := false
	fh.run = func(op volumeop.Op) (volumeop.Result, error) {
		if noRoom {
			return volumeop.Result{}, fmt.Errorf("helper on node node1 failed: %w", volumeop.Outcome{Error: "btrfs has no room", NoRoom: true}.Err())
		}
		return volumeop.Result{}, nil
	}
	sc := hostPathClass(map[string]string{"capacity": "enforce", "overcommit": "1.5"})
	pv := provisioned(t, p, sc, node1)
	if op := fh.ops[0]; op.Overcommit != 1.5 || pv.Annotations[backend.AnnOvercommit] != "1.5" {
		t.Errorf("op %+v, annotations %v; want overcommit 1.5 carried and recorded", op, pv.Annotations)
	}
	noRoom = true
	if err := p.Expand(ctx, pv, resource.MustParse("2Gi")); !errors.Is(err, ErrInfeasible) || !errors.Is(err, quota.ErrNoRoom) {
		t.Errorf("Expand with no room = %v, want ErrInfeasible", err)
	}
	if op := fh.ops[1]; op.Overcommit != 1.5 {
		t.Errorf("expand op %+v, want the PV's overcommit", op)
	}
	if _, state, err := p.Provision(ctx, opts(sc, claim(), node1)); state != controller.ProvisioningReschedule || !errors.Is(err, quota.ErrNoRoom) {
		t.Errorf("Provision with no room = %v, %v; want a reschedule", state, err)
	}
	pv.Annotations[backend.AnnOvercommit] = "-1"
	if err := p.Expand(ctx, pv, resource.MustParse("2Gi")); !errors.Is(err, ErrRefused) {
		t.Errorf("Expand with a forged overcommit = %v, want ErrRefused", err)
	}
}

// A claim's size is the limit of a volume held to it, in whole bytes: a size that does not fit
// (2^64 + 1 GiB, which resource.Quantity wraps to 1 GiB; 2^63, which it makes negative) or of no
// bytes (no limit at all) is refused before anything runs, and so is an expansion to one.
func TestClaimSizes(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	enforce := hostPathClass(map[string]string{"capacity": "enforce"})
	sized := func(size string) *v1.PersistentVolumeClaim {
		return claim(func(c *v1.PersistentVolumeClaim) {
			c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse(size)
		})
	}
	for _, tt := range []struct {
		size string
		want string // the error; "": made
	}{
		{"18446744074783293440", "the claim's storage request: size 18446744074783293440 is more than the 9223372036854775807 bytes a volume can be held to"},
		{"9223372036854775808", "size 9223372036854775808 is more than"},
		{"1e19", "size 10e18 is more than"},
		{"0", "the claim's storage request: size 0: a volume held to its size needs a size above 0"},
		{"1Gi", ""},
		{"1.5", ""},
		{"9223372036854775807", ""},
	} {
		before := len(fh.ops)
		pv, state, err := p.Provision(ctx, opts(enforce, sized(tt.size), node1))
		if tt.want != "" {
			if err == nil || !strings.Contains(err.Error(), tt.want) || state != controller.ProvisioningFinished || pv != nil || len(fh.ops) != before {
				t.Errorf("claim of %s: %v, %v, ran %+v; want %q and nothing run", tt.size, state, err, fh.ops[before:], tt.want)
			}
			continue
		}
		q := resource.MustParse(tt.size)
		if err != nil || len(fh.ops) != before+1 || fh.ops[before].Limit != uint64(q.Value()) {
			t.Errorf("claim of %s: %v, ran %+v; want a create with its limit", tt.size, err, fh.ops[before:])
		}
	}
	// A size is only recorded where the class holds no volume to it.
	if _, _, err := p.Provision(ctx, opts(hostPathClass(nil), sized("18446744074783293440"), node1)); err != nil {
		t.Errorf("label claim of 2^64 + 1 GiB: %v", err)
	}

	pv := provisioned(t, p, enforce, node1)
	before := len(fh.ops)
	for _, size := range []string{"18446744074783293440", "0"} {
		if err := p.Expand(ctx, pv, resource.MustParse(size)); !errors.Is(err, ErrInfeasible) || !strings.Contains(err.Error(), "size "+size) {
			t.Errorf("Expand to %s = %v, want it infeasible", size, err)
		}
	}
	if len(fh.ops) != before {
		t.Errorf("ran %+v, want nothing", fh.ops[before:])
	}
}

// A PV's overcommit annotation is read as the class parameter is: a factor a class would refuse
// (an infinity, above 100, a hexadecimal float, not above 0) is refused, naming the annotation,
// before anything runs; so is one on a volume whose size is a label.
func TestForgedOvercommit(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	pv := provisioned(t, p, hostPathClass(map[string]string{"capacity": "enforce", "overcommit": "1.5"}), node1)
	for _, o := range []string{"+Inf", "Inf", "1e308", "101", "0x1p10", "0x1p2", "NaN", "0", "-1"} {
		pv.Annotations[backend.AnnOvercommit] = o
		err := p.Expand(ctx, pv, resource.MustParse("2Gi"))
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `annotation dirpv.io/overcommit: "`+o+`" is not a number above 0 and at most 100`) {
			t.Errorf("Expand with overcommit %q = %v, want it refused", o, err)
		}
	}
	label := provisioned(t, p, hostPathClass(nil), node1)
	label.Annotations[backend.AnnOvercommit] = "2"
	if err := p.Delete(ctx, label); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "applies only with dirpv.io/capacity: enforce") {
		t.Errorf("Delete of a label volume with an overcommit = %v, want it refused", err)
	}
	if len(fh.ops) != 2 {
		t.Errorf("ran %+v, want only the two creates", fh.ops)
	}
}

// Usage reads an enforced volume's quota on its node; a label volume, or a PV whose record is
// refused, gets an error and nothing runs.
func TestUsage(t *testing.T) {
	failed := errors.New("helper on node node1 failed: permission denied")
	tests := []struct {
		name      string
		sc        *storagev1.StorageClass
		forge     func(pv *v1.PersistentVolume)
		runErr    error
		wantUsed  uint64
		wantLimit uint64
		wantErr   error
	}{
		{name: "enforced", sc: hostPathClass(map[string]string{"capacity": "enforce"}), wantUsed: 5 << 20, wantLimit: 1 << 30},
		{name: "label", sc: hostPathClass(nil), wantErr: ErrNoQuota},
		{name: "nfs", sc: nfsClass(nil), wantErr: ErrNoQuota},
		{name: "forged capacity", sc: hostPathClass(map[string]string{"capacity": "enforce"}),
			forge: func(pv *v1.PersistentVolume) { pv.Annotations[backend.AnnCapacity] = "hard" }, wantErr: ErrRefused},
		{name: "forged path", sc: hostPathClass(map[string]string{"capacity": "enforce"}),
			forge: func(pv *v1.PersistentVolume) { pv.Annotations[backend.AnnPath] = "../etc" }, wantErr: ErrRefused},
		{name: "failed on the node", sc: hostPathClass(map[string]string{"capacity": "enforce"}), runErr: failed, wantErr: failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			p, fn, fh, _ := newTest(t, t.TempDir(), "")
			run := func(op volumeop.Op) (volumeop.Result, error) {
				if op.Kind == volumeop.Usage {
					return volumeop.Result{Used: 5 << 20, Limit: 1 << 30}, tt.runErr
				}
				return volumeop.Result{}, nil
			}
			fn.run, fh.run = run, run
			pv := provisioned(t, p, tt.sc, node1)
			if tt.forge != nil {
				tt.forge(pv)
			}
			nfsBefore, hostBefore := len(fn.ops), len(fh.ops)
			used, limit, err := p.Usage(ctx, pv)
			if !errors.Is(err, tt.wantErr) || used != tt.wantUsed || limit != tt.wantLimit {
				t.Fatalf("Usage = %d, %d, %v; want %d, %d, %v", used, limit, err, tt.wantUsed, tt.wantLimit, tt.wantErr)
			}
			ran := append(slices.Clone(fn.ops[nfsBefore:]), fh.ops[hostBefore:]...)
			switch {
			case tt.wantErr == ErrNoQuota || tt.wantErr == ErrRefused:
				if len(ran) != 0 {
					t.Errorf("ran %+v, want nothing", ran)
				}
			case len(ran) != 1:
				t.Errorf("ran %+v, want one usage op", ran)
			default:
				if op := ran[0]; op.Kind != volumeop.Usage || op.Path != "team-data-pvc-1234" || op.Owner.PV != "pvc-1234" || !op.NeedsAdmin() {
					t.Errorf("op %+v, want usage of team-data-pvc-1234 for pvc-1234", op)
				}
			}
		})
	}
}

// Enforceable probes an enforcing class's base directory on a node, and nothing else.
func TestEnforceable(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	p, _, fh, _ := newTest(t, t.TempDir(), "")
	fh.run = func(op volumeop.Op) (volumeop.Result, error) {
		if op.Kind != volumeop.Probe || !op.NeedsAdmin() {
			t.Errorf("op %+v, want a probe", op)
		}
		return volumeop.Result{Quota: "btrfs qgroup"}, nil
	}
	if kind, err := p.Enforceable(ctx, hostPathClass(map[string]string{"capacity": "enforce", "basePath": "/var/lib/dirpv/sized"}), node1); kind != "btrfs qgroup" || err != nil {
		t.Errorf("Enforceable = %q, %v; want btrfs qgroup", kind, err)
	}
	if _, err := p.Enforceable(ctx, hostPathClass(nil), node1); !errors.Is(err, ErrNoQuota) {
		t.Errorf("Enforceable of a label class = %v, want ErrNoQuota", err)
	}
	if _, err := p.Enforceable(ctx, hostPathClass(map[string]string{"capacity": "enforce", "basePath": "/etc"}), node1); err == nil {
		t.Error("Enforceable of a class outside --hostpath-root succeeded")
	}
	if len(fh.ops) != 1 {
		t.Errorf("%d operations run, want the one probe", len(fh.ops))
	}
}
