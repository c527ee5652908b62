package resize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
)

const (
	name   = "dirpv.io/provisioner"
	pvName = "pvc-claim-uid"
	key    = "ns/data"
)

// fakeVolumes records the sizes Expand is asked for and fails with err.
type fakeVolumes struct {
	mu    sync.Mutex
	sizes []string
	err   error
}

func (f *fakeVolumes) Expand(_ context.Context, pv *v1.PersistentVolume, size resource.Quantity) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pv.Name != pvName {
		return fmt.Errorf("expanding the wrong PV %s", pv.Name)
	}
	f.sizes = append(f.sizes, size.String())
	return f.err
}

func (f *fakeVolumes) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sizes)
}

// claim is ns/data, bound to pvName with 1Gi and asking for 2Gi; it carries a condition that is
// not a resize's, which must survive every resize.
func claim(mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "claim-uid", ResourceVersion: "1"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")}},
			VolumeName:  pvName,
		},
		Status: v1.PersistentVolumeClaimStatus{
			Phase:    v1.ClaimBound,
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			Conditions: []v1.PersistentVolumeClaimCondition{
				{Type: v1.PersistentVolumeClaimVolumeModifyingVolume, Status: v1.ConditionTrue},
			},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

// pv is dirpv's 1Gi volume bound to claim().
func pv(mutate ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
	p := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, ResourceVersion: "1", Annotations: map[string]string{backend.AnnProvisionedBy: name}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:               v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/var/lib/dirpv/ns-data"}},
			ClaimRef:               &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "claim-uid"},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// inProgress is a claim whose resize to size started: Resizing, allocated, ControllerResizeInProgress.
func inProgress(size string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Status.Conditions = append(c.Status.Conditions, v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimResizing, Status: v1.ConditionTrue})
		c.Status.AllocatedResources = v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}
		c.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{v1.ResourceStorage: v1.PersistentVolumeClaimControllerResizeInProgress}
	}
}

func request(size string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse(size)
	}
}

func pvSize(size string) func(*v1.PersistentVolume) {
	return func(p *v1.PersistentVolume) { p.Spec.Capacity[v1.ResourceStorage] = resource.MustParse(size) }
}

// apiserver makes the fake clientset's patches behave as kube-apiserver's do in what the
// controller relies on: a resourceVersion in a patch is a precondition (409 Conflict), every
// write bumps it, a claim's status subresource changes its status and metadata but never its
// spec, and a PV's patch never its status. The tracker alone checks none of this.
func apiserver(client *fake.Clientset) {
	client.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		obj, err := client.Tracker().Get(pa.GetResource(), pa.GetNamespace(), pa.GetName())
		if err != nil {
			return true, nil, err
		}
		old, err := json.Marshal(obj)
		if err != nil {
			return true, nil, err
		}
		var patched []byte
		switch pa.GetPatchType() {
		case types.StrategicMergePatchType:
			patched, err = strategicpatch.StrategicMergePatch(old, pa.GetPatch(), obj)
		case types.MergePatchType:
			patched, err = mergePatch(old, pa.GetPatch())
		default:
			err = fmt.Errorf("patch type %s not expected", pa.GetPatchType())
		}
		if err != nil {
			return true, nil, apierrors.NewBadRequest(err.Error())
		}
		var result runtime.Object
		switch o := obj.(type) {
		case *v1.PersistentVolumeClaim:
			var c v1.PersistentVolumeClaim
			err = json.Unmarshal(patched, &c)
			if pa.GetSubresource() == "status" {
				c.Spec = o.Spec
			} else {
				c.Status = o.Status
			}
			result = &c
		case *v1.PersistentVolume:
			var p v1.PersistentVolume
			err = json.Unmarshal(patched, &p)
			if pa.GetSubresource() == "status" {
				p.Spec = o.Spec
			} else {
				p.Status = o.Status
			}
			result = &p
		}
		if err != nil {
			return true, nil, err
		}
		m := result.(metav1.Object)
		oldRV := obj.(metav1.Object).GetResourceVersion()
		if m.GetResourceVersion() != oldRV {
			return true, nil, apierrors.NewConflict(pa.GetResource().GroupResource(), pa.GetName(), errors.New("the object has been modified"))
		}
		n, _ := strconv.Atoi(oldRV)
		m.SetResourceVersion(strconv.Itoa(n + 1))
		return true, result, client.Tracker().Update(pa.GetResource(), result, pa.GetNamespace())
	})
}

// mergePatch applies a JSON merge patch (RFC 7386).
func mergePatch(doc, patch []byte) ([]byte, error) {
	var d, p any
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, err
	}
	var merge func(d, p any) any
	merge = func(d, p any) any {
		pm, ok := p.(map[string]any)
		if !ok {
			return p
		}
		dm, ok := d.(map[string]any)
		if !ok {
			dm = map[string]any{}
		}
		for k, v := range pm {
			if v == nil {
				delete(dm, k)
			} else {
				dm[k] = merge(dm[k], v)
			}
		}
		return dm
	}
	return json.Marshal(merge(d, p))
}

type fixture struct {
	client  *fake.Clientset
	factory informers.SharedInformerFactory
	ctrl    *Controller
	vols    *fakeVolumes
	rec     *record.FakeRecorder
	counts  map[string]int
}

// newFixture serves objs from the fake clientset and puts them in the caches directly: the
// informers are not started, so a test sees exactly the cache it sets up (refresh copies the
// clientset's objects into it, as a watch would).
func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{client: fake.NewClientset(objs...), vols: &fakeVolumes{}, rec: record.NewFakeRecorder(20), counts: map[string]int{}}
	apiserver(f.client)
	f.factory = informers.NewSharedInformerFactory(f.client, 0)
	var err error
	f.ctrl, err = New(f.client, []string{name}, f.vols, f.rec, func(r string) { f.counts[r]++ },
		f.factory.Core().V1().PersistentVolumeClaims(), f.factory.Core().V1().PersistentVolumes())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		f.cache(o).Add(o)
	}
	return f
}

func (f *fixture) cache(o runtime.Object) cache.Indexer {
	if _, ok := o.(*v1.PersistentVolume); ok {
		return f.factory.Core().V1().PersistentVolumes().Informer().GetIndexer()
	}
	return f.factory.Core().V1().PersistentVolumeClaims().Informer().GetIndexer()
}

// refresh puts the clientset's claim and PV into the caches.
func (f *fixture) refresh(t *testing.T) {
	t.Helper()
	for _, o := range []runtime.Object{f.claim(t), f.pv(t)} {
		if err := f.cache(o).Update(o); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) claim(t *testing.T) *v1.PersistentVolumeClaim {
	t.Helper()
	c, err := f.client.CoreV1().PersistentVolumeClaims("ns").Get(context.Background(), "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) pv(t *testing.T) *v1.PersistentVolume {
	t.Helper()
	p, err := f.client.CoreV1().PersistentVolumes().Get(context.Background(), pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writes are the patches sent so far, as "resource[/subresource]".
func (f *fixture) writes() []string {
	var w []string
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "get" || a.GetVerb() == "list" || a.GetVerb() == "watch" {
			continue
		}
		r := a.GetResource().Resource
		if a.GetSubresource() != "" {
			r += "/" + a.GetSubresource()
		}
		w = append(w, a.GetVerb()+" "+r)
	}
	return w
}

func (f *fixture) events() []string {
	var e []string
	for {
		select {
		case ev := <-f.rec.Events:
			e = append(e, ev)
		default:
			return e
		}
	}
}

// conditions are the claim's condition types, sorted.
func conditions(c *v1.PersistentVolumeClaim) []string {
	var types []string
	for _, cond := range c.Status.Conditions {
		types = append(types, string(cond.Type))
	}
	slices.Sort(types)
	return types
}

func storage(list v1.ResourceList) string {
	q, ok := list[v1.ResourceStorage]
	if !ok {
		return ""
	}
	return q.String()
}

// eventsMatch: each event starts with the wanted prefix, in order.
func eventsMatch(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

func TestSync(t *testing.T) {
	const (
		resizing = "Normal Resizing dirpv is resizing volume pvc-claim-uid to 2Gi"
		success  = "Normal VolumeResizeSuccessful Volume pvc-claim-uid resized to 2Gi"
	)
	finishedWrites := []string{"patch persistentvolumeclaims/status", "patch persistentvolumes", "patch persistentvolumeclaims/status"}
	tests := []struct {
		name      string
		claim     *v1.PersistentVolumeClaim
		pv        *v1.PersistentVolume
		expandErr error
		wantErr   bool
		// after the sync
		wantExpand    []string // sizes Expand was called with
		wantEvents    []string // prefixes
		wantWrites    []string
		wantCapacity  string // claim status.capacity
		wantAllocated string
		wantStatus    v1.ClaimResourceStatus
		wantConds     []string // besides ModifyingVolume
		wantPV        string   // PV spec.capacity
		wantCounts    map[string]int
	}{
		{
			name: "grow", claim: claim(), pv: pv(),
			wantExpand: []string{"2Gi"}, wantEvents: []string{resizing, success}, wantWrites: finishedWrites,
			wantCapacity: "2Gi", wantAllocated: "2Gi", wantPV: "2Gi", wantCounts: map[string]int{"success": 1},
		},
		{
			name: "another provisioner's", claim: claim(), pv: pv(func(p *v1.PersistentVolume) { p.Annotations[backend.AnnProvisionedBy] = "other" }),
			wantCapacity: "1Gi", wantPV: "1Gi",
		},
		{
			name: "pending claim", claim: claim(func(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimPending }), pv: pv(),
			wantCapacity: "1Gi", wantPV: "1Gi",
		},
		{
			name: "PV bound to another claim of the same name", claim: claim(), pv: pv(func(p *v1.PersistentVolume) { p.Spec.ClaimRef.UID = "old-uid" }),
			wantCapacity: "1Gi", wantPV: "1Gi",
		},
		{
			name: "PV not cached", claim: claim(func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName = "pvc-gone" }), pv: pv(),
			wantCapacity: "1Gi", wantPV: "1Gi",
		},
		{
			name: "already done: nothing written", claim: claim(request("1Gi")), pv: pv(),
			wantCapacity: "1Gi", wantPV: "1Gi",
		},
		{
			name: "shrink below what the PV holds: refused", claim: claim(inProgress("10Gi"), request("5Gi")), pv: pv(pvSize("10Gi")),
			wantEvents:   []string{"Warning VolumeResizeFailed Requested 5Gi is less than the 10Gi volume pvc-claim-uid already holds, and volumes cannot shrink"},
			wantWrites:   []string{"patch persistentvolumeclaims/status"},
			wantCapacity: "1Gi", wantAllocated: "10Gi", wantStatus: v1.PersistentVolumeClaimControllerResizeInfeasible,
			wantConds: []string{"ControllerResizeError", "Resizing"}, wantPV: "10Gi", wantCounts: map[string]int{"error": 1},
		},
		{
			name: "Expand fails: marked, retried", claim: claim(), pv: pv(), expandErr: errors.New("setting the project quota: device busy"), wantErr: true,
			wantExpand:   []string{"2Gi"},
			wantEvents:   []string{resizing, "Warning VolumeResizeFailed resizing volume pvc-claim-uid to 2Gi: setting the project quota: device busy"},
			wantWrites:   []string{"patch persistentvolumeclaims/status", "patch persistentvolumeclaims/status"},
			wantCapacity: "1Gi", wantAllocated: "2Gi", wantStatus: v1.PersistentVolumeClaimControllerResizeInProgress,
			wantConds: []string{"ControllerResizeError", "Resizing"}, wantPV: "1Gi", wantCounts: map[string]int{"error": 1},
		},
		{
			name: "Expand infeasible: marked, not retried", claim: claim(), pv: pv(), expandErr: fmt.Errorf("2Gi do not fit in 1.5Gi free: %w", provisioner.ErrInfeasible),
			wantExpand:   []string{"2Gi"},
			wantEvents:   []string{resizing, "Warning VolumeResizeFailed resizing volume pvc-claim-uid to 2Gi: 2Gi do not fit"},
			wantWrites:   []string{"patch persistentvolumeclaims/status", "patch persistentvolumeclaims/status"},
			wantCapacity: "1Gi", wantAllocated: "2Gi", wantStatus: v1.PersistentVolumeClaimControllerResizeInfeasible,
			wantConds: []string{"ControllerResizeError", "Resizing"}, wantPV: "1Gi", wantCounts: map[string]int{"error": 1},
		},
		{
			name: "resumed after the start was marked", claim: claim(inProgress("2Gi")), pv: pv(),
			wantExpand: []string{"2Gi"}, wantEvents: []string{success},
			wantWrites:   []string{"patch persistentvolumes", "patch persistentvolumeclaims/status"},
			wantCapacity: "2Gi", wantAllocated: "2Gi", wantPV: "2Gi", wantCounts: map[string]int{"success": 1},
		},
		{
			name: "resumed after the PV was updated", claim: claim(inProgress("2Gi")), pv: pv(pvSize("2Gi")),
			wantExpand: []string{"2Gi"}, wantEvents: []string{success},
			wantWrites:   []string{"patch persistentvolumeclaims/status"},
			wantCapacity: "2Gi", wantAllocated: "2Gi", wantPV: "2Gi", wantCounts: map[string]int{"success": 1},
		},
		{
			name: "request lowered after an infeasible resize: the new size is tried", pv: pv(),
			claim: claim(inProgress("10Gi"), request("2Gi"), func(c *v1.PersistentVolumeClaim) {
				c.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimControllerResizeInfeasible
				c.Status.Conditions = append(c.Status.Conditions, v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimControllerResizeError, Status: v1.ConditionTrue, Message: "no room"})
			}),
			wantExpand: []string{"2Gi"}, wantEvents: []string{resizing, success}, wantWrites: finishedWrites,
			wantCapacity: "2Gi", wantAllocated: "2Gi", wantPV: "2Gi", wantCounts: map[string]int{"success": 1},
		},
		{
			name: "left waiting for the node by other software: finished here", pv: pv(pvSize("2Gi")),
			claim: claim(inProgress("2Gi"), func(c *v1.PersistentVolumeClaim) {
				c.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimNodeResizePending
				c.Status.Conditions = []v1.PersistentVolumeClaimCondition{
					c.Status.Conditions[0], {Type: v1.PersistentVolumeClaimFileSystemResizePending, Status: v1.ConditionTrue},
				}
			}),
			wantExpand: []string{"2Gi"}, wantEvents: []string{resizing, success},
			wantWrites:   []string{"patch persistentvolumeclaims/status", "patch persistentvolumeclaims/status"},
			wantCapacity: "2Gi", wantAllocated: "2Gi", wantPV: "2Gi", wantCounts: map[string]int{"success": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			f := newFixture(t, tt.claim, tt.pv)
			f.vols.err = tt.expandErr
			if err := f.ctrl.sync(ctx, key); (err != nil) != tt.wantErr {
				t.Fatalf("sync: %v, want error: %v", err, tt.wantErr)
			}
			if got := f.vols.calls(); !slices.Equal(got, tt.wantExpand) {
				t.Errorf("Expand called with %v, want %v", got, tt.wantExpand)
			}
			if got := f.events(); !eventsMatch(got, tt.wantEvents) {
				t.Errorf("events %q, want %q", got, tt.wantEvents)
			}
			if got := f.writes(); !slices.Equal(got, tt.wantWrites) {
				t.Errorf("writes %v, want %v", got, tt.wantWrites)
			}
			c := f.claim(t)
			if got := storage(c.Status.Capacity); got != tt.wantCapacity {
				t.Errorf("claim capacity %s, want %s", got, tt.wantCapacity)
			}
			if got := storage(c.Status.AllocatedResources); got != tt.wantAllocated {
				t.Errorf("allocatedResources %s, want %s", got, tt.wantAllocated)
			}
			if got := c.Status.AllocatedResourceStatuses[v1.ResourceStorage]; got != tt.wantStatus {
				t.Errorf("allocatedResourceStatuses %v, want storage %q", c.Status.AllocatedResourceStatuses, tt.wantStatus)
			}
			if _, ok := c.Status.AllocatedResourceStatuses[v1.ResourceStorage]; !ok && len(c.Status.AllocatedResourceStatuses) != 0 {
				t.Errorf("allocatedResourceStatuses %v", c.Status.AllocatedResourceStatuses)
			}
			want := append([]string{string(v1.PersistentVolumeClaimVolumeModifyingVolume)}, tt.wantConds...)
			slices.Sort(want)
			if got := conditions(c); !slices.Equal(got, want) {
				t.Errorf("conditions %v, want %v", got, want)
			}
			done := tt.wantCounts["success"] > 0
			if got := c.Annotations[annNodeExpansionNotRequired] == "true"; got != done {
				t.Errorf("annotation %s: %v, want %v", annNodeExpansionNotRequired, got, done)
			}
			if got := storage(c.Spec.Resources.Requests); got != storage(tt.claim.Spec.Resources.Requests) {
				t.Errorf("request changed to %s", got)
			}
			if got := storage(f.pv(t).Spec.Capacity); got != tt.wantPV {
				t.Errorf("PV capacity %s, want %s", got, tt.wantPV)
			}
			if tt.wantCounts == nil {
				tt.wantCounts = map[string]int{}
			}
			if fmt.Sprint(f.counts) != fmt.Sprint(tt.wantCounts) {
				t.Errorf("results %v, want %v", f.counts, tt.wantCounts)
			}
			// Whatever the outcome, a second look at the same objects adds no event on its own
			// (a retry after an error may, and is expected to try again).
			if !tt.wantErr {
				f.refresh(t)
				n := len(f.writes())
				if err := f.ctrl.sync(ctx, key); err != nil {
					t.Fatalf("second sync: %v", err)
				}
				if e := f.events(); len(e) != 0 {
					t.Errorf("second sync: events %q", e)
				}
				if w := f.writes(); len(w) != n {
					t.Errorf("second sync wrote %v", w[n:])
				}
			}
		})
	}
}

// TestRetryAfterError: a failed resize is retried at the same size; the error condition stays
// until it succeeds, and the resize is not announced a second time.
func TestRetryAfterError(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFixture(t, claim(), pv())
	f.vols.err = errors.New("device busy")
	if err := f.ctrl.sync(ctx, key); err == nil {
		t.Fatal("first sync succeeded")
	}
	f.events()
	f.refresh(t)
	f.vols.err = nil
	if err := f.ctrl.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got := f.vols.calls(); !slices.Equal(got, []string{"2Gi", "2Gi"}) {
		t.Errorf("Expand calls %v", got)
	}
	if e := f.events(); !eventsMatch(e, []string{"Normal VolumeResizeSuccessful"}) {
		t.Errorf("events %q", e)
	}
	c := f.claim(t)
	if storage(c.Status.Capacity) != "2Gi" || c.Status.AllocatedResourceStatuses != nil || !slices.Equal(conditions(c), []string{"ModifyingVolume"}) {
		t.Errorf("claim status %+v", c.Status)
	}
}

// TestInfeasibleWaitsForNewRequest: after an infeasible resize the claim is left alone until its
// request changes; then the new size is tried.
func TestInfeasibleWaitsForNewRequest(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFixture(t, claim(request("10Gi")), pv())
	f.vols.err = fmt.Errorf("no room: %w", provisioner.ErrInfeasible)
	if err := f.ctrl.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	f.events()
	f.refresh(t)
	if err := f.ctrl.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got := f.vols.calls(); len(got) != 1 {
		t.Fatalf("Expand retried: %v", got)
	}
	// The user lowers the request (still above the capacity, as API validation requires).
	c := f.claim(t)
	c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("3Gi")
	if _, err := f.client.CoreV1().PersistentVolumeClaims("ns").Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.refresh(t)
	f.vols.err = nil
	if err := f.ctrl.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got := f.vols.calls(); !slices.Equal(got, []string{"10Gi", "3Gi"}) {
		t.Errorf("Expand calls %v", got)
	}
	c = f.claim(t)
	if storage(c.Status.Capacity) != "3Gi" || storage(c.Status.AllocatedResources) != "3Gi" || c.Status.AllocatedResourceStatuses != nil {
		t.Errorf("claim status %+v", c.Status)
	}
	if got := storage(f.pv(t).Spec.Capacity); got != "3Gi" {
		t.Errorf("PV capacity %s", got)
	}
}

// TestRefusedThenRaised: a refused shrink resumes once the request is raised to what the PV
// holds.
func TestRefusedThenRaised(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFixture(t, claim(inProgress("10Gi"), request("5Gi")), pv(pvSize("10Gi")))
	if err := f.ctrl.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	f.events()
	f.refresh(t)
	c := f.claim(t)
	c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("10Gi")
	if _, err := f.client.CoreV1().PersistentVolumeClaims("ns").Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.refresh(t)
	if err := f.ctrl.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got := f.vols.calls(); !slices.Equal(got, []string{"10Gi"}) {
		t.Errorf("Expand calls %v", got)
	}
	c = f.claim(t)
	if storage(c.Status.Capacity) != "10Gi" || c.Status.AllocatedResourceStatuses != nil || !slices.Equal(conditions(c), []string{"ModifyingVolume"}) {
		t.Errorf("claim status %+v", c.Status)
	}
}

// TestStaleCache: a claim that changed since the cache saw it is not acted on; the conflict sends
// it back for a retry.
func TestStaleCache(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFixture(t, claim(), pv())
	server := claim(func(c *v1.PersistentVolumeClaim) { c.ResourceVersion = "2" })
	if err := f.client.Tracker().Update(v1.SchemeGroupVersion.WithResource("persistentvolumeclaims"), server, "ns"); err != nil {
		t.Fatal(err)
	}
	err := f.ctrl.sync(ctx, key)
	if !apierrors.IsConflict(errors.Unwrap(err)) {
		t.Fatalf("sync: %v, want a conflict", err)
	}
	if got := f.vols.calls(); len(got) != 0 {
		t.Errorf("Expand called: %v", got)
	}
	if e := f.events(); len(e) != 0 {
		t.Errorf("events %q", e)
	}
}

// TestStatusPatch: the patches delete what they mean to on a server that applies them as
// kube-apiserver does (strategic merge: conditions by type, null deletes a map key), and carry
// the resourceVersion.
func TestStatusPatch(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	old := claim(inProgress("2Gi"), func(c *v1.PersistentVolumeClaim) {
		c.Status.AllocatedResourceStatuses["example.com/other"] = v1.PersistentVolumeClaimControllerResizeInProgress
		c.Status.Conditions = append(c.Status.Conditions, v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimControllerResizeError, Status: v1.ConditionTrue})
		c.Annotations = map[string]string{"keep": "me"}
	})
	f := newFixture(t, old, pv())
	got, err := f.ctrl.patchClaim(ctx, old, finished(old, resource.MustParse("2Gi")), true)
	if err != nil {
		t.Fatal(err)
	}
	var patch string
	for _, a := range f.client.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok {
			patch = string(pa.GetPatch())
		}
	}
	for _, want := range []string{`"resourceVersion":"1"`, `"storage":null`, `"$patch":"delete"`} {
		if !strings.Contains(patch, want) {
			t.Errorf("patch %s lacks %s", patch, want)
		}
	}
	if _, ok := got.Status.AllocatedResourceStatuses[v1.ResourceStorage]; ok || len(got.Status.AllocatedResourceStatuses) != 1 {
		t.Errorf("allocatedResourceStatuses %v", got.Status.AllocatedResourceStatuses)
	}
	if !slices.Equal(conditions(got), []string{"ModifyingVolume"}) || got.Annotations["keep"] != "me" || got.Annotations[annNodeExpansionNotRequired] != "true" {
		t.Errorf("conditions %v annotations %v", conditions(got), got.Annotations)
	}
	if _, err := f.ctrl.patchClaim(ctx, old, started(old, resource.MustParse("3Gi")), true); !apierrors.IsConflict(err) {
		t.Errorf("patch with an old resourceVersion: %v, want a conflict", err)
	}
}

// TestEnqueue: claims are queued when they may need a resize, directly or through their PV.
func TestEnqueue(t *testing.T) {
	tests := []struct {
		name  string
		claim *v1.PersistentVolumeClaim
		pv    *v1.PersistentVolume
		want  int
	}{
		{name: "asks for more", claim: claim(), pv: pv(), want: 1},
		{name: "resize marker left", claim: claim(request("1Gi"), inProgress("1Gi")), pv: pv(), want: 1},
		{name: "has what it asks", claim: claim(request("1Gi")), pv: pv()},
		{name: "pending", claim: claim(func(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimPending }), pv: pv()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.claim, tt.pv)
			f.ctrl.enqueueClaim(tt.claim)
			f.ctrl.enqueueVolume(tt.pv)
			f.ctrl.enqueueVolume(pv(func(p *v1.PersistentVolume) { p.Annotations[backend.AnnProvisionedBy] = "other" }))
			f.ctrl.enqueueVolume(pv(func(p *v1.PersistentVolume) { p.Spec.ClaimRef = nil }))
			if got := f.ctrl.queue.Len(); got != tt.want {
				t.Fatalf("queued %d, want %d", got, tt.want)
			}
			if tt.want > 0 {
				if k, _ := f.ctrl.queue.Get(); k != key {
					t.Errorf("queued %q", k)
				}
			}
		})
	}
}

// TestRun: the controller resizes a volume once its claim asks for more.
func TestRun(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := fake.NewClientset(claim(request("1Gi")), pv())
	apiserver(client)
	// The fake's watch does not replay what changed before it was registered: the claim is
	// changed only once the informer watches claims.
	watching := make(chan struct{})
	var once sync.Once
	client.PrependWatchReactor("persistentvolumeclaims", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err == nil {
			once.Do(func() { close(watching) })
		}
		return true, w, err
	})
	factory := informers.NewSharedInformerFactory(client, 0)
	vols := &fakeVolumes{}
	var mu sync.Mutex
	counts := map[string]int{}
	c, err := New(client, []string{name}, vols, record.NewFakeRecorder(20), func(r string) { mu.Lock(); counts[r]++; mu.Unlock() },
		factory.Core().V1().PersistentVolumeClaims(), factory.Core().V1().PersistentVolumes())
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, 2) }()
	select {
	case <-watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the informer does not watch claims")
	}
	cl, err := client.CoreV1().PersistentVolumeClaims("ns").Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("2Gi")
	if _, err := client.CoreV1().PersistentVolumeClaims("ns").Update(ctx, cl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		cl, err := client.CoreV1().PersistentVolumeClaims("ns").Get(ctx, "data", metav1.GetOptions{})
		return err == nil && storage(cl.Status.Capacity) == "2Gi", nil
	})
	if err != nil {
		t.Fatalf("claim not resized: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if got := vols.calls(); len(got) == 0 || got[len(got)-1] != "2Gi" {
		t.Errorf("Expand calls %v", got)
	}
}
