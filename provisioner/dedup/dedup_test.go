package dedup

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// hostPathPV and stsClaim are a provisioned hostPath PV and its StatefulSet claim as the API
// server serves them.
const hostPathPV = `{
  "metadata": {
    "annotations": {
      "dirpv.io/backend": "hostPath", "dirpv.io/base-path": "/var/lib/dirpv", "dirpv.io/node": "node1",
      "dirpv.io/node-uid": "45f8da81-f53e-4ffa-947e-680a2b0db6d9", "dirpv.io/on-delete": "delete",
      "dirpv.io/path": "web-data-web-%[1]d-pvc-01a58735-7409-4113-9e10-d4090%[1]07d",
      "pv.kubernetes.io/provisioned-by": "dirpv.io/provisioner"
    },
    "creationTimestamp": "2026-11-26T08:01:08Z",
    "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer", "kubernetes.io/pv-protection"],
    "managedFields": [{"manager": "dirpv", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
      "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:dirpv.io/backend": {}}}}}],
    "name": "pvc-01a58735-7409-4113-9e10-d4090%[1]07d",
    "resourceVersion": "78%[1]d",
    "uid": "b4ab8f6c-2b99-48d7-9adf-160fc%[1]07d"
  },
  "spec": {
    "accessModes": ["ReadWriteOnce"],
    "capacity": {"storage": "1Gi"},
    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": "data-web-%[1]d", "namespace": "web",
      "resourceVersion": "73%[1]d", "uid": "01a58735-7409-4113-9e10-d4090%[1]07d"},
    "hostPath": {"path": "/var/lib/dirpv/web-data-web-%[1]d-pvc-01a58735-7409-4113-9e10-d4090%[1]07d", "type": "Directory"},
    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
      {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node1"]}]}]}},
    "persistentVolumeReclaimPolicy": "Delete",
    "storageClassName": "dirpv-hostpath",
    "volumeMode": "Filesystem"
  },
  "status": {"lastPhaseTransitionTime": "2026-11-26T08:01:08Z", "phase": "Bound"}
}`

const stsClaim = `{
  "metadata": {
    "annotations": {
      "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
      "volume.beta.kubernetes.io/storage-provisioner": "dirpv.io/provisioner",
      "volume.kubernetes.io/selected-node": "node1", "volume.kubernetes.io/storage-provisioner": "dirpv.io/provisioner"
    },
    "creationTimestamp": "2026-11-26T08:00:57Z",
    "finalizers": ["kubernetes.io/pvc-protection"],
    "labels": {"app": "web"},
    "name": "data-web-%[1]d",
    "namespace": "web",
    "resourceVersion": "73%[1]d",
    "uid": "01a58735-7409-4113-9e10-d4090%[1]07d"
  },
  "spec": {
    "accessModes": ["ReadWriteOnce"],
    "resources": {"requests": {"storage": "%[2]s"}},
    "storageClassName": "dirpv-hostpath",
    "volumeMode": "Filesystem",
    "volumeName": "pvc-01a58735-7409-4113-9e10-d4090%[1]07d"
  },
  "status": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "%[2]s"}, "phase": "Bound"}
}`

func decode[T any](t testing.TB, format string, args ...any) *T {
	t.Helper()
	obj := new(T)
	if err := json.Unmarshal(fmt.Appendf(nil, format, args...), obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// jsonOf is what an object is on the wire, which sharing must not change.
func jsonOf(t *testing.T, obj any) string {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestTransformKeepsContent(t *testing.T) {
	emptyMaps := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{}, Annotations: map[string]string{}}}
	emptyMaps.Spec.Resources.Requests = v1.ResourceList{}
	for _, tc := range []struct {
		name string
		obj  func() any
	}{
		{"hostPath PV", func() any { return decode[v1.PersistentVolume](t, hostPathPV, 1) }},
		{"claim", func() any { return decode[v1.PersistentVolumeClaim](t, stsClaim, 1, "1Gi") }},
		{"claim asking 1024Mi", func() any { return decode[v1.PersistentVolumeClaim](t, stsClaim, 2, "1024Mi") }},
		{"nothing set", func() any { return &v1.PersistentVolume{} }},
		{"empty, not nil", func() any { return emptyMaps.DeepCopy() }},
		{"a class", func() any { return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Provisioner: "p"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			// Twice: the second object shares what the first holds.
			for range 2 {
				obj := tc.obj()
				want := obj.(metav1.Object)
				want.SetManagedFields(nil)
				wantJSON := jsonOf(t, want)
				got, err := s.Transform(tc.obj())
				if err != nil {
					t.Fatal(err)
				}
				if gotJSON := jsonOf(t, got); gotJSON != wantJSON {
					t.Errorf("after Transform:\n%s\nwant\n%s", gotJSON, wantJSON)
				}
				if !reflect.DeepEqual(got, want) && tc.name != "claim asking 1024Mi" {
					// Quantities parsed from different strings may differ inside and still
					// be one value; every other field must be as decoded.
					t.Errorf("after Transform: %#v\nwant %#v", got, want)
				}
			}
		})
	}
}

func TestTransformShares(t *testing.T) {
	s := New()
	transform := func(obj any) {
		if _, err := s.Transform(obj); err != nil {
			t.Fatal(err)
		}
	}
	a, b := decode[v1.PersistentVolumeClaim](t, stsClaim, 1, "1Gi"), decode[v1.PersistentVolumeClaim](t, stsClaim, 2, "1Gi")
	other := decode[v1.PersistentVolumeClaim](t, stsClaim, 3, "2Gi")
	pv1, pv2 := decode[v1.PersistentVolume](t, hostPathPV, 1), decode[v1.PersistentVolume](t, hostPathPV, 2)
	for _, obj := range []any{a, b, other, pv1, pv2} {
		transform(obj)
	}

	same := func(what string, x, y any, want bool) {
		t.Helper()
		if got := reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer(); got != want {
			t.Errorf("%s: shared %v, want %v", what, got, want)
		}
	}
	same("requests", a.Spec.Resources.Requests, b.Spec.Resources.Requests, true)
	same("requests and capacity alike", a.Spec.Resources.Requests, a.Status.Capacity, true)
	same("claim and PV capacity alike", a.Status.Capacity, pv1.Spec.Capacity, true)
	same("requests of another size", a.Spec.Resources.Requests, other.Spec.Resources.Requests, false)
	same("labels", a.Labels, other.Labels, true)
	same("annotations", a.Annotations, other.Annotations, true)
	same("access modes", a.Spec.AccessModes, pv2.Spec.AccessModes, true)
	same("node affinity", pv1.Spec.NodeAffinity, pv2.Spec.NodeAffinity, true)
	same("PV finalizers", pv1.Finalizers, pv2.Finalizers, true)
	same("claim and PV finalizers", a.Finalizers, pv1.Finalizers, false)
	same("PV annotations (each has its own path)", pv1.Annotations, pv2.Annotations, false)

	sameString := func(what, x, y string, want bool) {
		t.Helper()
		if got := unsafe.StringData(x) == unsafe.StringData(y); got != want {
			t.Errorf("%s: %q and %q shared %v, want %v", what, x, y, got, want)
		}
	}
	sameString("namespace", a.Namespace, pv2.Spec.ClaimRef.Namespace, true)
	sameString("class", *a.Spec.StorageClassName, pv1.Spec.StorageClassName, true)
	sameString("node-uid annotation", pv1.Annotations["dirpv.io/node-uid"], pv2.Annotations["dirpv.io/node-uid"], true)
	sameString("UIDs", string(a.UID), string(b.UID), false)

	// Shared slices have no room to grow: an append never writes into another object's.
	_ = append(a.Finalizers, "mine")
	if cap(a.Finalizers) != len(a.Finalizers) || len(b.Finalizers) != 1 {
		t.Errorf("finalizers: len %d cap %d; the other's: %q", len(a.Finalizers), cap(a.Finalizers), b.Finalizers)
	}
}

func TestTransformTableIsBounded(t *testing.T) {
	s := New()
	for i := range maxValues + 100 {
		obj := decode[v1.PersistentVolumeClaim](t, stsClaim, i, fmt.Sprintf("%dMi", i+1))
		if _, err := s.Transform(obj); err != nil {
			t.Fatal(err)
		}
		if len(s.values) > maxValues {
			t.Fatalf("after %d claims of different sizes the table holds %d values, the bound is %d", i+1, len(s.values), maxValues)
		}
	}
	// Still sharing after it started again.
	a, b := decode[v1.PersistentVolumeClaim](t, stsClaim, 1, "3Gi"), decode[v1.PersistentVolumeClaim](t, stsClaim, 2, "3Gi")
	_, _ = s.Transform(a)
	_, _ = s.Transform(b)
	if reflect.ValueOf(a.Spec.Resources.Requests).UnsafePointer() != reflect.ValueOf(b.Spec.Resources.Requests).UnsafePointer() {
		t.Error("requests not shared once the table started again")
	}
}

// What is not an object (a tombstone, say) passes through.
func TestTransformTombstone(t *testing.T) {
	tomb := cache.DeletedFinalStateUnknown{Key: "pv", Obj: &v1.PersistentVolume{}}
	if got, err := New().Transform(tomb); err != nil || got != tomb {
		t.Fatalf("Transform(tombstone) = %+v, %v", got, err)
	}
}

// Informers call Transform from their own goroutines (run with -race).
func TestTransformConcurrently(t *testing.T) {
	s := New()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if _, err := s.Transform(decode[v1.PersistentVolume](t, hostPathPV, g*1000+i)); err != nil {
					t.Error(err)
				}
				if _, err := s.Transform(decode[v1.PersistentVolumeClaim](t, stsClaim, g*1000+i, "1Gi")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkHeld reports the heap that 10,000 provisioned hostPath PVs and their claims hold
// once decoded, as they are without Transform and with it (bytes per PV and claim pair).
func BenchmarkHeld(b *testing.B) {
	const n = 10000
	for _, tc := range []struct {
		name      string
		transform func(any) (any, error)
	}{
		{"decoded", func(obj any) (any, error) { return obj, nil }},
		{"shared", New().Transform},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var perPair float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				held := make([]any, 0, 2*n)
				for i := range n {
					pv, _ := tc.transform(decode[v1.PersistentVolume](b, hostPathPV, i))
					claim, _ := tc.transform(decode[v1.PersistentVolumeClaim](b, stsClaim, i, "1Gi"))
					held = append(held, pv, claim)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perPair = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(held)
			}
			b.ReportMetric(perPair, "B/pair")
		})
	}
}

// A Node keeps what dirpv reads of it (name, UID, labels, and whether it takes pods) and nothing
// else.
func TestTransformNode(t *testing.T) {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-1", ResourceVersion: "7",
			Labels:      map[string]string{v1.LabelHostname: "host-1"},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Spec: v1.NodeSpec{PodCIDR: "10.244.0.0/24", Unschedulable: true,
			Taints: []v1.Taint{{Key: "dedicated", Effect: v1.TaintEffectNoSchedule}}},
		Status: v1.NodeStatus{Images: []v1.ContainerImage{{Names: []string{"busybox"}, SizeBytes: 1 << 20}},
			Conditions: []v1.NodeCondition{
				{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse},
				{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()},
			}},
	}
	got, err := New().Transform(n)
	if err != nil {
		t.Fatal(err)
	}
	node := got.(*v1.Node)
	want := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-1", ResourceVersion: "7",
		Labels: map[string]string{v1.LabelHostname: "host-1"}},
		Spec:   v1.NodeSpec{Unschedulable: true, Taints: []v1.Taint{{Key: "dedicated", Effect: v1.TaintEffectNoSchedule}}},
		Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}},
	}
	if !reflect.DeepEqual(node, want) {
		t.Errorf("after Transform: %#v\nwant %#v", node, want)
	}
}
