package recycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumeop"
)

const name = "dirpv.io/provisioner"

// fakeBackend is the nfs backend serving export nfs:/exports, recording operations instead of
// running them.
type fakeBackend struct {
	backend.Backend
	ops []volumeop.Op
	err error
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{Backend: &nfs.Backend{Exports: config.NFSExports{{Server: "nfs", Share: "/exports", LocalPath: "/nonexistent"}}}}
}

func (f *fakeBackend) Run(_ context.Context, _ backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	f.ops = append(f.ops, op)
	res := volumeop.Result{Scrubbed: op.Kind == volumeop.Scrub}
	if op.Kind == volumeop.Archive {
		res.Archive = "archived-" + op.Path
	}
	return res, f.err
}

// releasedPV is a recycling volume released from claim ns/data with UID old-uid.
func releasedPV(mutate ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
	vol := backend.Volume{Backend: nfs.Name, Location: nfs.Location{Server: "nfs", Share: "/exports"}, Path: "ns-data", OnDelete: config.OnDeleteDelete, Recycle: true}
	ann := vol.Annotations()
	ann["pv.kubernetes.io/provisioned-by"] = name
	ann["pv.kubernetes.io/bound-by-controller"] = "yes"
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-old", Annotations: ann, Labels: map[string]string{backend.LabelReclaim: backend.LabelRecycle},
			Finalizers: []string{backend.FinalizerReclaim}, ResourceVersion: "7"},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs", Path: "/exports/ns-data"}},
			ClaimRef:                      &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "old-uid"},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeReleased},
	}
	for _, m := range mutate {
		m(pv)
	}
	return pv
}

// retained makes a recycling PV a plain Retain one.
func retained(pv *v1.PersistentVolume) {
	delete(pv.Annotations, backend.AnnReclaim)
	pv.Labels = nil
}

func claim(uid string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: types.UID(uid)}}
}

type fixture struct {
	client   *fake.Clientset
	watching chan struct{} // closed once the informer watches PVs
	ctrl     *Controller
	be       *fakeBackend
	rec      *record.FakeRecorder
	counts   map[string]int
}

func newFixture(t *testing.T, ctx context.Context, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{client: fake.NewClientset(objs...), be: newFakeBackend(), rec: record.NewFakeRecorder(10), counts: map[string]int{}}
	// The fake clientset's watch does not replay what changed before it was registered, so a
	// test that changes a PV for the informer to see waits for this first.
	f.watching = make(chan struct{})
	var once sync.Once
	f.client.PrependWatchReactor("persistentvolumes", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := f.client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err == nil {
			once.Do(func() { close(f.watching) })
		}
		return true, w, err
	})
	factory := informers.NewSharedInformerFactory(f.client, 0)
	var err error
	// The real provisioner checks each PV's record and runs the operations on the fake backend.
	prov := &provisioner.Provisioner{Backends: backend.Set{f.be}, Recorder: f.rec, Now: time.Now}
	f.ctrl, err = New(f.client, []string{name}, prov, f.rec, func(r string) { f.counts[r]++ }, factory.Core().V1().PersistentVolumes())
	if err != nil {
		t.Fatal(err)
	}
	// The informers stop with their own context: Shutdown waits for them, and the test's context
	// ends only after this cleanup has run.
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	return f
}

func (f *fixture) pv(t *testing.T) *v1.PersistentVolume {
	t.Helper()
	pv, err := f.client.CoreV1().PersistentVolumes().Get(context.Background(), "pvc-old", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

func (f *fixture) event() string {
	select {
	case e := <-f.rec.Events:
		return e
	default:
		return ""
	}
}

func TestSync(t *testing.T) {
	tests := []struct {
		name      string
		pv        *v1.PersistentVolume
		claim     *v1.PersistentVolumeClaim
		scrubErr  error
		recycled  bool
		wantErr   bool
		wantEvent string
		wantGone  bool // the PV was deleted
	}{
		{name: "released, claim gone", pv: releasedPV(), recycled: true, wantEvent: "Normal VolumeRecycled Directory nfs:/exports/ns-data scrubbed"},
		{name: "released, a new claim of the same name", pv: releasedPV(), claim: claim("new-uid"), recycled: true, wantEvent: "Normal VolumeRecycled"},
		{name: "claim still exists", pv: releasedPV(), claim: claim("old-uid")},
		{name: "bound", pv: releasedPV(func(pv *v1.PersistentVolume) { pv.Status.Phase = v1.VolumeBound })},
		{name: "available", pv: releasedPV(func(pv *v1.PersistentVolume) { pv.Status.Phase = v1.VolumeAvailable; pv.Spec.ClaimRef = nil })},
		{name: "policy changed to Recycle: left to Kubernetes", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimRecycle
		})},
		{name: "policy changed to Delete: left to Delete", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimDelete
		})},
		{name: "another provisioner's", pv: releasedPV(func(pv *v1.PersistentVolume) { pv.Annotations["pv.kubernetes.io/provisioned-by"] = "other" })},
		{name: "not recycling", pv: releasedPV(func(pv *v1.PersistentVolume) { delete(pv.Annotations, backend.AnnReclaim) })},
		{name: "being deleted", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.DeletionTimestamp = &metav1.Time{Time: time.Now()}
			pv.Finalizers = []string{"x"}
		})},
		{name: "scrub fails: stays Released, retried", pv: releasedPV(), scrubErr: errors.New("unlinkat busy: device or resource busy"),
			wantErr: true, wantEvent: "Warning VolumeFailedRecycle scrubbing nfs:/exports/ns-data: unlinkat busy"},
		{name: "node gone: the PV is deleted", pv: releasedPV(), scrubErr: fmt.Errorf("node node2 no longer exists: %w", backend.ErrNodeGone),
			wantEvent: "Warning VolumeFailedRecycle scrubbing nfs:/exports/ns-data: node node2 no longer exists", wantGone: true},
		{name: "forged path refused", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnPath] = "../etc"
			pv.Spec.NFS.Path = "/etc"
		}), wantEvent: "Warning VolumeFailedRecycle refusing to recycle: annotation dirpv.io/path"},
		{name: "export not served refused", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.Annotations[nfs.AnnShare] = "/"
			pv.Spec.NFS.Path = "/ns-data"
		}), wantEvent: "Warning VolumeFailedRecycle refusing to recycle: NFS export nfs:/ is not mounted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			objs := []runtime.Object{tt.pv}
			if tt.claim != nil {
				objs = append(objs, tt.claim)
			}
			f := newFixture(t, ctx, objs...)
			f.be.err = tt.scrubErr
			err := f.ctrl.sync(ctx, "pvc-old")
			if (err != nil) != tt.wantErr {
				t.Fatalf("sync: %v", err)
			}
			_, err = f.client.CoreV1().PersistentVolumes().Get(ctx, "pvc-old", metav1.GetOptions{})
			if gone := apierrors.IsNotFound(err); gone != tt.wantGone {
				t.Fatalf("PV deleted: %v, want %v", gone, tt.wantGone)
			}
			if tt.wantGone {
				if e := f.event(); !strings.HasPrefix(e, tt.wantEvent) {
					t.Errorf("event %q, want %q", e, tt.wantEvent)
				}
				return
			}
			pv := f.pv(t)
			if tt.recycled {
				if len(f.be.ops) != 1 || f.be.ops[0].Kind != volumeop.Scrub || f.be.ops[0].Owner.ClaimUID != "old-uid" || f.be.ops[0].Owner.PV != "pvc-old" || f.be.ops[0].Path != "ns-data" {
					t.Errorf("ops %+v", f.be.ops)
				}
				if pv.Spec.ClaimRef != nil || pv.Annotations["pv.kubernetes.io/bound-by-controller"] != "" {
					t.Errorf("not unbound: %+v %v", pv.Spec.ClaimRef, pv.Annotations)
				}
				if f.counts["success"] != 1 {
					t.Errorf("counts %v", f.counts)
				}
			} else {
				if tt.scrubErr == nil && len(f.be.ops) != 0 {
					t.Errorf("scrubbed: %+v", f.be.ops)
				}
				if tt.pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef == nil {
					t.Error("unbound a volume that was not recycled")
				}
			}
			if e := f.event(); !strings.HasPrefix(e, tt.wantEvent) || (tt.wantEvent == "") != (e == "") {
				t.Errorf("event %q, want %q", e, tt.wantEvent)
			}
		})
	}
}

// TestFinalizer: recycling PVs carry dirpv's finalizer, so that deleting one reclaims its
// directory by its onDelete (its Kubernetes policy, Retain, would leave it behind).
func TestFinalizer(t *testing.T) {
	deleting := func(phase v1.PersistentVolumePhase) func(*v1.PersistentVolume) {
		return func(pv *v1.PersistentVolume) {
			pv.DeletionTimestamp = &metav1.Time{Time: time.Now()}
			pv.Status.Phase = phase
			if phase == v1.VolumeAvailable {
				pv.Spec.ClaimRef = nil
			}
		}
	}
	tests := []struct {
		name          string
		pv            *v1.PersistentVolume
		runErr        error
		wantOp        volumeop.Kind
		wantFinalizer bool
		wantErr       bool
		wantEvent     string
	}{
		{name: "added to a PV that lacks it", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.Finalizers, pv.Status.Phase = nil, v1.VolumeBound
		}), wantFinalizer: true},
		{name: "deleted while bound: waits", pv: releasedPV(deleting(v1.VolumeBound)), wantFinalizer: true},
		{name: "deleted, released: reclaimed", pv: releasedPV(deleting(v1.VolumeReleased)), wantOp: volumeop.Delete},
		{name: "deleted, available: reclaimed", pv: releasedPV(deleting(v1.VolumeAvailable)), wantOp: volumeop.Delete},
		{name: "deleted, onDelete archive", pv: releasedPV(deleting(v1.VolumeAvailable), func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnOnDelete] = string(config.OnDeleteArchive)
		}), wantOp: volumeop.Archive, wantEvent: "Normal VolumeArchived"},
		{name: "reclaim fails: kept, retried", pv: releasedPV(deleting(v1.VolumeReleased)), runErr: errors.New("device or resource busy"),
			wantOp: volumeop.Delete, wantFinalizer: true, wantErr: true, wantEvent: "Warning VolumeFailedDelete delete nfs:/exports/ns-data: device or resource busy"},
		{name: "forged: refused, kept", pv: releasedPV(deleting(v1.VolumeReleased), func(pv *v1.PersistentVolume) {
			pv.Annotations[backend.AnnPath] = "../etc"
			pv.Spec.NFS.Path = "/etc"
		}), wantFinalizer: true, wantEvent: "Warning VolumeFailedDelete refusing to reclaim: annotation dirpv.io/path"},
		{name: "policy changed to Delete: released to the provisioner", pv: releasedPV(func(pv *v1.PersistentVolume) {
			pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimDelete
		})},
		{name: "another provisioner's: untouched", pv: releasedPV(deleting(v1.VolumeReleased), func(pv *v1.PersistentVolume) {
			pv.Annotations["pv.kubernetes.io/provisioned-by"] = "other"
		}), wantFinalizer: true},
		// Plain Retain PVs: the directory stays, released to the operator when the PV goes.
		{name: "Retain: added to a PV that lacks it", pv: releasedPV(retained, func(pv *v1.PersistentVolume) {
			pv.Finalizers, pv.Status.Phase = nil, v1.VolumeBound
		}), wantFinalizer: true},
		{name: "Retain: released, not deleted: nothing", pv: releasedPV(retained), wantFinalizer: true},
		// A PV of a provisioner dirpv adopts, not taken over: no finalizer that could hold it.
		{name: "Retain, no dirpv record: not protected", pv: releasedPV(retained, func(pv *v1.PersistentVolume) {
			pv.Finalizers, pv.Status.Phase = nil, v1.VolumeBound
			delete(pv.Annotations, backend.AnnBackend)
		})},
		{name: "Retain: deleted while bound: waits", pv: releasedPV(retained, deleting(v1.VolumeBound)), wantFinalizer: true},
		{name: "Retain: deleted: directory released", pv: releasedPV(retained, deleting(v1.VolumeReleased)),
			wantOp: volumeop.Release, wantEvent: "Normal VolumeRetained Directory nfs:/exports/ns-data kept (reclaimPolicy Retain)"},
		{name: "Retain: deleted, node gone: let go with a warning", pv: releasedPV(retained, deleting(v1.VolumeReleased)),
			runErr: backend.ErrNodeGone, wantOp: volumeop.Release, wantEvent: "Warning VolumeNodeGone"},
		{name: "Retain: release fails: kept, retried", pv: releasedPV(retained, deleting(v1.VolumeReleased)), runErr: errors.New("read-only file system"),
			wantOp: volumeop.Release, wantFinalizer: true, wantErr: true, wantEvent: "Warning VolumeFailedDelete release nfs:/exports/ns-data: read-only file system"},
		{name: "Retain changed to Delete: stands back", pv: releasedPV(retained, func(pv *v1.PersistentVolume) {
			pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimDelete
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			f := newFixture(t, ctx, tt.pv)
			f.be.err = tt.runErr
			if err := f.ctrl.sync(ctx, "pvc-old"); (err != nil) != tt.wantErr {
				t.Fatalf("sync: %v", err)
			}
			var kinds []volumeop.Kind
			for _, op := range f.be.ops {
				kinds = append(kinds, op.Kind)
			}
			if want := []volumeop.Kind{tt.wantOp}; tt.wantOp == "" && len(kinds) != 0 || tt.wantOp != "" && !slices.Equal(kinds, want) {
				t.Errorf("operations %v, want %q", kinds, tt.wantOp)
			}
			pv := f.pv(t)
			if got := slices.Contains(pv.Finalizers, backend.FinalizerReclaim); got != tt.wantFinalizer {
				t.Errorf("finalizers %v, want ours: %v", pv.Finalizers, tt.wantFinalizer)
			}
			if (pv.Spec.ClaimRef == nil) != (tt.pv.Spec.ClaimRef == nil) {
				t.Errorf("claimRef changed to %+v", pv.Spec.ClaimRef)
			}
			if e := f.event(); !strings.HasPrefix(e, tt.wantEvent) || (tt.wantEvent == "") != (e == "") {
				t.Errorf("event %q, want %q", e, tt.wantEvent)
			}
		})
	}
}

// TestFinalizerConflict: when the PV changed while its directory was reclaimed, the finalizer
// is removed from a fresh read; the directory is not reclaimed a second time.
func TestFinalizerConflict(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pv := releasedPV(func(pv *v1.PersistentVolume) {
		pv.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		pv.Finalizers = append(pv.Finalizers, "kubernetes.io/pv-protection")
	})
	f := newFixture(t, ctx, pv)
	conflicts := 1
	f.client.PrependReactor("update", "persistentvolumes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "persistentvolumes"}, "pvc-old", errors.New("changed"))
		}
		return false, nil, nil
	})
	if err := f.ctrl.sync(ctx, "pvc-old"); err != nil {
		t.Fatal(err)
	}
	if len(f.be.ops) != 1 || f.be.ops[0].Kind != volumeop.Delete {
		t.Errorf("operations %+v, want one delete", f.be.ops)
	}
	if got := f.pv(t).Finalizers; slices.Contains(got, backend.FinalizerReclaim) || !slices.Contains(got, "kubernetes.io/pv-protection") {
		t.Errorf("finalizers %v", got)
	}
}

// TestUnbindConflict: when the PV changed between the fresh read and the unbind, nothing is
// unbound; the retry reads again and scrubs again (a no-op for the same claim) before unbinding.
func TestUnbindConflict(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFixture(t, ctx, releasedPV())
	conflicts := 1
	f.client.PrependReactor("update", "persistentvolumes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "persistentvolumes"}, "pvc-old", errors.New("changed"))
		}
		return false, nil, nil
	})
	if err := f.ctrl.sync(ctx, "pvc-old"); !apierrors.IsConflict(errors.Unwrap(err)) {
		t.Fatalf("first sync: %v", err)
	}
	if f.pv(t).Spec.ClaimRef == nil {
		t.Fatal("unbound despite the conflict")
	}
	if err := f.ctrl.sync(ctx, "pvc-old"); err != nil {
		t.Fatal(err)
	}
	if f.pv(t).Spec.ClaimRef != nil || len(f.be.ops) != 2 || f.be.ops[1].Owner.ClaimUID != "old-uid" {
		t.Fatalf("claimRef %+v ops %+v", f.pv(t).Spec.ClaimRef, f.be.ops)
	}
}

// TestRun: the controller picks up a volume as it becomes Released.
func TestRun(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	f := newFixture(t, ctx, releasedPV(func(pv *v1.PersistentVolume) { pv.Status.Phase = v1.VolumeBound }))
	done := make(chan struct{})
	go func() { defer close(done); f.ctrl.Run(ctx, 2) }()
	select {
	case <-f.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the informer does not watch PVs")
	}
	pv := f.pv(t)
	pv.Status.Phase = v1.VolumeReleased
	if _, err := f.client.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return f.pv(t).Spec.ClaimRef == nil, nil
	})
	if err != nil {
		t.Fatalf("not recycled: %v", err)
	}
	cancel()
	<-done
}
