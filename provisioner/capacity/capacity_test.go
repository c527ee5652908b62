package capacity

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"
)

const (
	ns          = "dirpv"
	provisioner = "dirpv.io"
	managedBy   = provisioner
	gi          = uint64(1) << 30
)

var owner = metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "dirpv", UID: "deploy-uid", Controller: ptr.To(true)}

type roomKey struct{ class, node string }

type room struct {
	total, largest uint64
	err            error
}

// fakeSource publishes the classes of provisioner dirpv.io not turned off, and answers Room from
// a table; a (class, node) missing from it is an error.
type fakeSource struct {
	mu    sync.Mutex
	rooms map[roomKey]room
	off   map[string]bool
	asked map[roomKey]int
}

func (f *fakeSource) Publishes(sc *storagev1.StorageClass) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.off[sc.Name] // the Publisher itself leaves out classes of other provisioners
}

func (f *fakeSource) Room(_ context.Context, sc *storagev1.StorageClass, node *v1.Node) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.asked == nil {
		f.asked = map[roomKey]int{}
	}
	f.asked[roomKey{sc.Name, node.Name}]++
	r, ok := f.rooms[roomKey{sc.Name, node.Name}]
	if !ok {
		return 0, 0, fmt.Errorf("no room known for class %s on node %s", sc.Name, node.Name)
	}
	return r.total, r.largest, r.err
}

func (f *fakeSource) times(class, node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[roomKey{class, node}]
}

func (f *fakeSource) set(class, node string, r room) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rooms[roomKey{class, node}] = r
}

func newNode(name string, labels map[string]string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func hostNode(name string) *v1.Node {
	return newNode(name, map[string]string{TopologyKey: "host-" + name})
}

func newClass(name, provisioner string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner}
}

// published is the object a Publisher with owner writes for class on node, whose hostname label
// is host.
func published(class, node, host string, total, largest uint64) *storagev1.CSIStorageCapacity {
	return &storagev1.CSIStorageCapacity{
		ObjectMeta: metav1.ObjectMeta{
			Name: objectName(class, node), Namespace: ns, UID: types.UID("uid-" + class + "-" + node),
			Labels:          map[string]string{LabelManagedBy: managedBy},
			Annotations:     map[string]string{AnnClass: class, AnnNode: node},
			OwnerReferences: []metav1.OwnerReference{owner},
		},
		StorageClassName:  class,
		NodeTopology:      &metav1.LabelSelector{MatchLabels: map[string]string{TopologyKey: host}},
		Capacity:          quantity(total),
		MaximumVolumeSize: quantity(largest),
	}
}

// renamed is obj under another name (an older scheme's) and UID.
func renamed(obj *storagev1.CSIStorageCapacity, name string) *storagev1.CSIStorageCapacity {
	obj = obj.DeepCopy()
	obj.Name, obj.UID = name, types.UID("uid-"+name)
	return obj
}

// foreign is obj without our label, or with another's.
func foreign(obj *storagev1.CSIStorageCapacity, name, manager string) *storagev1.CSIStorageCapacity {
	obj = renamed(obj, name)
	obj.Labels = map[string]string{}
	if manager != "" {
		obj.Labels[LabelManagedBy] = manager
	}
	return obj
}

type fixture struct {
	client                *fake.Clientset
	src                   *fakeSource
	nodes, classes, store cache.Indexer
	reg                   *prometheus.Registry
	p                     *Publisher
}

func newIndexer() cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// newFixture has objs in the API and in the caches, and every (class, node) pair of them 10 GiB
// in all and 4 GiB at most.
func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{
		client: fake.NewClientset(objs...),
		src:    &fakeSource{rooms: map[roomKey]room{}, off: map[string]bool{}},
		nodes:  newIndexer(), classes: newIndexer(), store: newIndexer(),
		reg: prometheus.NewRegistry(),
	}
	var nodes, classes []string
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *v1.Node:
			nodes = append(nodes, o.Name)
			err = f.nodes.Add(o)
		case *storagev1.StorageClass:
			classes = append(classes, o.Name)
			err = f.classes.Add(o)
		case *storagev1.CSIStorageCapacity:
			err = f.store.Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range classes {
		for _, n := range nodes {
			f.src.set(c, n, room{total: 10 * gi, largest: 4 * gi})
		}
	}
	f.p = &Publisher{
		Client: f.client, Namespace: ns, Owner: &owner, Name: managedBy, Source: f.src,
		Classes:    storagelisters.NewStorageClassLister(f.classes),
		Nodes:      corelisters.NewNodeLister(f.nodes),
		Capacities: storagelisters.NewCSIStorageCapacityLister(f.store),
		Metrics:    NewMetrics(f.reg),
	}
	return f
}

// sync syncs node with the actions cleared before, so that writes shows this sync's alone.
func (f *fixture) sync(t *testing.T, node string) error {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	f.client.ClearActions()
	return f.p.sync(ctx, node)
}

// refresh makes the cache of objects what the API holds, as the informer would.
func (f *fixture) refresh(t *testing.T) {
	t.Helper()
	var items []any
	for _, o := range f.api(t) {
		items = append(items, o)
	}
	if err := f.store.Replace(items, ""); err != nil {
		t.Fatal(err)
	}
}

// api lists the objects the API holds in the namespace, by name.
func (f *fixture) api(t *testing.T) []*storagev1.CSIStorageCapacity {
	t.Helper()
	list, err := f.client.StorageV1().CSIStorageCapacities(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*storagev1.CSIStorageCapacity
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	slices.SortFunc(out, func(a, b *storagev1.CSIStorageCapacity) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// writes are the writes sent since the last sync: "create|update|delete name".
func (f *fixture) writes() []string {
	var w []string
	for _, a := range f.client.Actions() {
		switch a.GetVerb() {
		case "create", "update":
			w = append(w, a.GetVerb()+" "+a.(k8stesting.CreateAction).GetObject().(metav1.Object).GetName())
		case "delete":
			w = append(w, "delete "+a.(k8stesting.DeleteAction).GetName())
		}
	}
	return w
}

// summary says what an object publishes, for comparisons.
func summary(o *storagev1.CSIStorageCapacity) string {
	var owners []string
	for _, r := range o.OwnerReferences {
		owners = append(owners, fmt.Sprintf("%s/%s/%s/%s/controller=%v/block=%v", r.APIVersion, r.Kind, r.Name, r.UID,
			ptr.Deref(r.Controller, false), r.BlockOwnerDeletion != nil))
	}
	q := func(q *resource.Quantity) string {
		if q == nil {
			return "nil"
		}
		return q.String()
	}
	topology := "nil"
	if o.NodeTopology != nil {
		topology = fmt.Sprint(o.NodeTopology.MatchLabels, o.NodeTopology.MatchExpressions)
	}
	return fmt.Sprintf("%s labels=%v class=%s(%s) node=%s topology=%s capacity=%s max=%s owners=%v", o.Name, o.Labels,
		o.StorageClassName, o.Annotations[AnnClass], o.Annotations[AnnNode], topology, q(o.Capacity), q(o.MaximumVolumeSize), owners)
}

func summaries(objs []*storagev1.CSIStorageCapacity) []string {
	var s []string
	for _, o := range objs {
		s = append(s, summary(o))
	}
	return s
}

func checkAPI(t *testing.T, f *fixture, want ...*storagev1.CSIStorageCapacity) {
	t.Helper()
	slices.SortFunc(want, func(a, b *storagev1.CSIStorageCapacity) int { return strings.Compare(a.Name, b.Name) })
	got, wanted := summaries(f.api(t)), summaries(want)
	if !slices.Equal(got, wanted) {
		t.Errorf("objects in the API:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(wanted, "\n  "))
	}
}

func checkWrites(t *testing.T, f *fixture, want ...string) {
	t.Helper()
	if got := f.writes(); !slices.Equal(got, want) {
		t.Errorf("writes = %q; want %q", got, want)
	}
}

// TestObjectName: names are stable across versions, or an upgrade would publish every object
// twice until the duplicates were cleaned up.
func TestObjectName(t *testing.T) {
	if got, want := objectName("fast", "n1"), "dirpv-85bee6a1bbe84904"; got != want {
		t.Errorf("objectName(fast, n1) = %s; want %s", got, want)
	}
	if objectName("a", "bc") == objectName("ab", "c") {
		t.Error("class and node are not kept apart in the name")
	}
}

// TestSyncCreates: the first sync creates one object per publishing class with every field
// set, and none for other classes.
func TestSyncCreates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		node  *v1.Node
		rooms map[string]room
		owner *metav1.OwnerReference
		want  []*storagev1.CSIStorageCapacity
	}{{
		name:  "hostname label",
		node:  hostNode("n1"),
		owner: &owner,
		want: []*storagev1.CSIStorageCapacity{
			published("fast", "n1", "host-n1", 10*gi, 4*gi), published("slow", "n1", "host-n1", 10*gi, 4*gi),
		},
	}, {
		name:  "no hostname label: the node's name",
		node:  newNode("n2", map[string]string{"zone": "a"}),
		rooms: map[string]room{"fast": {total: 3 * gi, largest: 0}, "slow": {total: 0, largest: 0}},
		owner: &owner,
		want: []*storagev1.CSIStorageCapacity{
			published("fast", "n2", "n2", 3*gi, 0), published("slow", "n2", "n2", 0, 0),
		},
	}, {
		name:  "room beyond a quantity's range",
		node:  hostNode("n1"),
		rooms: map[string]room{"fast": {total: math.MaxUint64, largest: math.MaxInt64 + 1}, "slow": {total: 1, largest: 1}},
		owner: &owner,
		want: []*storagev1.CSIStorageCapacity{
			published("fast", "n1", "host-n1", math.MaxInt64, math.MaxInt64), published("slow", "n1", "host-n1", 1, 1),
		},
	}, {
		name: "no owner",
		node: hostNode("n1"),
		want: func() []*storagev1.CSIStorageCapacity {
			a, b := published("fast", "n1", "host-n1", 10*gi, 4*gi), published("slow", "n1", "host-n1", 10*gi, 4*gi)
			a.OwnerReferences, b.OwnerReferences = nil, nil
			return []*storagev1.CSIStorageCapacity{a, b}
		}(),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.node, newClass("fast", provisioner), newClass("slow", provisioner),
				newClass("other", "other.io/provisioner"))
			f.p.Owner = tc.owner
			for class, r := range tc.rooms {
				f.src.set(class, tc.node.Name, r)
			}
			if err := f.sync(t, tc.node.Name); err != nil {
				t.Fatal(err)
			}
			checkAPI(t, f, tc.want...)
			var creates []string
			for _, o := range tc.want {
				creates = append(creates, "create "+o.Name)
			}
			slices.Sort(creates)
			checkWrites(t, f, creates...)
		})
	}
}

// TestSyncSteadyState: a sync that finds what it would write writes nothing, whatever form the
// API keeps the quantities in.
func TestSyncSteadyState(t *testing.T) {
	f := newFixture(t, hostNode("n1"), newClass("fast", provisioner), newClass("other", "other.io"))
	if err := f.sync(t, "n1"); err != nil {
		t.Fatal(err)
	}
	f.refresh(t)
	if err := f.sync(t, "n1"); err != nil {
		t.Fatal(err)
	}
	checkWrites(t, f)

	// The same numbers in decimal form are the same room.
	obj := f.api(t)[0].DeepCopy()
	obj.Capacity = resource.NewQuantity(int64(10*gi), resource.DecimalSI)
	obj.MaximumVolumeSize = resource.NewQuantity(int64(4*gi), resource.DecimalSI)
	if err := f.store.Update(obj); err != nil {
		t.Fatal(err)
	}
	if err := f.sync(t, "n1"); err != nil {
		t.Fatal(err)
	}
	checkWrites(t, f)
}

// TestSyncUpdates: a change in what an object says updates that object once, and keeps what
// others added to it.
func TestSyncUpdates(t *testing.T) {
	fast := published("fast", "n1", "host-n1", 10*gi, 4*gi)
	fast2 := published("fast", "n2", "host-n2", 10*gi, 4*gi)
	for _, tc := range []struct {
		name   string
		change func(f *fixture, fast *storagev1.CSIStorageCapacity)
	}{
		{"total", func(f *fixture, _ *storagev1.CSIStorageCapacity) {
			f.src.set("fast", "n1", room{total: 9 * gi, largest: 4 * gi})
		}},
		{"largest", func(f *fixture, _ *storagev1.CSIStorageCapacity) {
			f.src.set("fast", "n1", room{total: 10 * gi, largest: 3 * gi})
		}},
		{"owner", func(f *fixture, _ *storagev1.CSIStorageCapacity) {
			f.p.Owner = &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "dirpv", UID: "new-uid", Controller: ptr.To(true)}
		}},
		{"no maximumVolumeSize", func(_ *fixture, fast *storagev1.CSIStorageCapacity) { fast.MaximumVolumeSize = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have := fast.DeepCopy()
			have.Labels["team"] = "storage"
			have.Annotations["note"] = "kept"
			f := newFixture(t, hostNode("n1"), hostNode("n2"), newClass("fast", provisioner), have, fast2)
			tc.change(f, have)
			if err := f.store.Update(have); err != nil {
				t.Fatal(err)
			}
			if err := f.sync(t, "n1"); err != nil {
				t.Fatal(err)
			}
			checkWrites(t, f, "update "+fast.Name)
			want := published("fast", "n1", "host-n1", 10*gi, 4*gi)
			want.Labels["team"] = "storage"
			r := f.src.rooms[roomKey{"fast", "n1"}]
			want.Capacity, want.MaximumVolumeSize = quantity(r.total), quantity(r.largest)
			want.OwnerReferences = []metav1.OwnerReference{*f.p.Owner}
			checkAPI(t, f, want, fast2)
			got, err := f.client.StorageV1().CSIStorageCapacities(ns).Get(context.Background(), fast.Name, metav1.GetOptions{})
			if err != nil || got.Annotations["note"] != "kept" {
				t.Errorf("an annotation of someone else's was lost: %v, %v", got, err)
			}
		})
	}
}

// TestSyncTopologyChanged: a node's new hostname label cannot be written into its object
// (nodeTopology is immutable): the object is replaced.
func TestSyncTopologyChanged(t *testing.T) {
	old := published("fast", "n1", "old-host", 10*gi, 4*gi)
	f := newFixture(t, hostNode("n1"), newClass("fast", provisioner), old)
	if err := f.sync(t, "n1"); err != nil {
		t.Fatal(err)
	}
	checkWrites(t, f, "delete "+old.Name, "create "+old.Name)
	checkAPI(t, f, published("fast", "n1", "host-n1", 10*gi, 4*gi))
}

// TestSyncDeletes: objects go with their node, their class, or the class's publishing, and
// nothing else goes with them.
func TestSyncDeletes(t *testing.T) {
	fast1, slow1 := published("fast", "n1", "host-n1", 10*gi, 4*gi), published("slow", "n1", "host-n1", 10*gi, 4*gi)
	fast2, slow2 := published("fast", "n2", "host-n2", 10*gi, 4*gi), published("slow", "n2", "host-n2", 10*gi, 4*gi)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, f *fixture)
		want   []*storagev1.CSIStorageCapacity
		writes []string
	}{{
		name:   "node removed",
		change: func(t *testing.T, f *fixture) { mustDelete(t, f.nodes, hostNode("n1")) },
		want:   []*storagev1.CSIStorageCapacity{fast2, slow2},
		writes: sorted("delete "+fast1.Name, "delete "+slow1.Name),
	}, {
		name:   "class deleted",
		change: func(t *testing.T, f *fixture) { mustDelete(t, f.classes, newClass("slow", provisioner)) },
		want:   []*storagev1.CSIStorageCapacity{fast1, fast2, slow2},
		writes: []string{"delete " + slow1.Name},
	}, {
		name:   "class no longer publishes",
		change: func(_ *testing.T, f *fixture) { f.src.off["slow"] = true },
		want:   []*storagev1.CSIStorageCapacity{fast1, fast2, slow2},
		writes: []string{"delete " + slow1.Name},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, hostNode("n1"), hostNode("n2"), newClass("fast", provisioner), newClass("slow", provisioner),
				fast1, slow1, fast2, slow2)
			tc.change(t, f)
			if err := f.sync(t, "n1"); err != nil {
				t.Fatal(err)
			}
			checkWrites(t, f, tc.writes...)
			checkAPI(t, f, tc.want...)
		})
	}
}

func mustDelete(t *testing.T, store cache.Store, obj any) {
	t.Helper()
	if err := store.Delete(obj); err != nil {
		t.Fatal(err)
	}
}

// sorted is the writes of a sync in its order: objects by name.
func sorted(s ...string) []string {
	slices.SortFunc(s, func(a, b string) int {
		return strings.Compare(a[strings.IndexByte(a, ' '):], b[strings.IndexByte(b, ' '):])
	})
	return s
}

// TestSyncRoomError: a class whose room cannot be measured keeps its object as it is, the other
// classes are still published, and the sync fails so that the node is retried.
func TestSyncRoomError(t *testing.T) {
	fast := published("fast", "n1", "host-n1", 10*gi, 4*gi)
	f := newFixture(t, hostNode("n1"), newClass("fast", provisioner), newClass("slow", provisioner), fast)
	f.src.set("fast", "n1", room{err: errors.New("agent unreachable")})
	f.src.set("slow", "n1", room{total: 2 * gi, largest: gi})
	err := f.sync(t, "n1")
	if err == nil || !strings.Contains(err.Error(), "fast") {
		t.Errorf("sync = %v; want an error naming class fast", err)
	}
	slow := published("slow", "n1", "host-n1", 2*gi, gi)
	checkWrites(t, f, "create "+slow.Name)
	checkAPI(t, f, fast, slow)
}

// TestSyncAlreadyExists: an object the cache does not show yet (a sync before a restart made
// it) is found by its name and brought in line, never duplicated.
func TestSyncAlreadyExists(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inAPI  *storagev1.CSIStorageCapacity
		writes []string
	}{{
		name:   "stale",
		inAPI:  published("fast", "n1", "host-n1", 1*gi, 1*gi),
		writes: []string{"create " + objectName("fast", "n1"), "update " + objectName("fast", "n1")},
	}, {
		name:   "current",
		inAPI:  published("fast", "n1", "host-n1", 10*gi, 4*gi),
		writes: []string{"create " + objectName("fast", "n1")},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, hostNode("n1"), newClass("fast", provisioner), tc.inAPI)
			mustDelete(t, f.store, tc.inAPI)
			if err := f.sync(t, "n1"); err != nil {
				t.Fatal(err)
			}
			checkWrites(t, f, tc.writes...)
			checkAPI(t, f, published("fast", "n1", "host-n1", 10*gi, 4*gi))
		})
	}
}

// TestSyncConflict: an update refused because the cache lagged behind is made again once, on
// the API's copy, and not at all if that copy says it already.
func TestSyncConflict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inAPI  uint64 // what the API's copy says, the cache's says 1 GiB
		writes []string
	}{
		{"stale", 2 * gi, []string{"update " + objectName("fast", "n1"), "update " + objectName("fast", "n1")}},
		{"current", 10 * gi, []string{"update " + objectName("fast", "n1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inAPI := published("fast", "n1", "host-n1", tc.inAPI, 4*gi)
			f := newFixture(t, hostNode("n1"), newClass("fast", provisioner), inAPI)
			if err := f.store.Update(published("fast", "n1", "host-n1", gi, 4*gi)); err != nil {
				t.Fatal(err)
			}
			conflicts := 1
			f.client.PrependReactor("update", "csistoragecapacities", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if conflicts == 0 {
					return false, nil, nil
				}
				conflicts--
				return true, nil, apierrors.NewConflict(storagev1.Resource("csistoragecapacities"), inAPI.Name, errors.New("stale"))
			})
			if err := f.sync(t, "n1"); err != nil {
				t.Fatal(err)
			}
			checkWrites(t, f, tc.writes...)
			checkAPI(t, f, published("fast", "n1", "host-n1", 10*gi, 4*gi))
		})
	}
}

// TestSyncDuplicates: several objects of ours for one class and node (an older name scheme's)
// become one, the one with today's name if there is one.
func TestSyncDuplicates(t *testing.T) {
	fast := published("fast", "n1", "host-n1", 10*gi, 4*gi)
	old := renamed(published("fast", "n1", "host-n1", 1*gi, 1*gi), "fast-n1")
	older := renamed(old, "capacity-fast-n1")
	for _, tc := range []struct {
		name   string
		have   []runtime.Object
		writes []string
		want   *storagev1.CSIStorageCapacity
	}{{
		name:   "today's name kept",
		have:   []runtime.Object{old, fast, older},
		writes: sorted("delete "+old.Name, "delete "+older.Name),
		want:   fast,
	}, {
		name:   "an old name kept and updated",
		have:   []runtime.Object{old, older},
		writes: []string{"delete " + old.Name, "update " + older.Name},
		want:   renamed(fast, older.Name),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, append(tc.have, hostNode("n1"), newClass("fast", provisioner))...)
			if err := f.sync(t, "n1"); err != nil {
				t.Fatal(err)
			}
			checkWrites(t, f, tc.writes...)
			checkAPI(t, f, tc.want)
		})
	}
}

// TestSyncLeavesOthersAlone: objects without our label, or with another's, are never written,
// whatever their annotations say, even under the name ours would have.
func TestSyncLeavesOthersAlone(t *testing.T) {
	fast := published("fast", "n1", "host-n1", 1*gi, 1*gi)
	unlabelled := foreign(fast, "unlabelled", "")
	another := foreign(fast, "another", "other-provisioner")
	gone := foreign(published("gone", "n2", "host-n2", gi, gi), "gone", "")
	f := newFixture(t, hostNode("n1"), newClass("fast", provisioner), unlabelled, another, gone)
	for _, node := range []string{"n1", "n2"} {
		if err := f.sync(t, node); err != nil {
			t.Fatal(err)
		}
	}
	ours := published("fast", "n1", "host-n1", 10*gi, 4*gi)
	checkAPI(t, f, unlabelled, another, gone, ours)

	// An object of another's under our name is left as it is, and the sync fails.
	squatter := foreign(fast, fast.Name, "other-provisioner")
	f = newFixture(t, hostNode("n1"), newClass("fast", provisioner), squatter)
	mustDelete(t, f.store, squatter)
	if err := f.sync(t, "n1"); err == nil {
		t.Error("sync succeeded beside an object of another's under our name")
	}
	checkWrites(t, f, "create "+fast.Name)
	checkAPI(t, f, squatter)
}

// TestMetrics: writes are counted by verb, and the objects gauge is what the cache holds.
func TestMetrics(t *testing.T) {
	f := newFixture(t, hostNode("n1"), hostNode("n2"), newClass("fast", provisioner), newClass("slow", provisioner),
		published("fast", "n9", "host-n9", gi, gi))
	for _, node := range []string{"n1", "n2", "n9"} {
		if err := f.sync(t, node); err != nil {
			t.Fatal(err)
		}
	}
	f.src.set("fast", "n1", room{total: gi, largest: gi})
	f.refresh(t)
	if err := f.sync(t, "n1"); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += " " + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"dirpv_capacity_writes_total create": 4, "dirpv_capacity_writes_total update": 1,
		"dirpv_capacity_writes_total delete": 1, "dirpv_capacity_objects": 4,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("metrics = %v; want %v", got, want)
	}
	NewMetrics(nil) // no registry: not registered, no panic
}

// TestOwner: the objects' owner is the Deployment above dirpv's pod, or what stands for it.
func TestOwner(t *testing.T) {
	controller := func(apiVersion, kind, name, uid string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	}
	pod := func(owners []metav1.OwnerReference) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "dirpv-abc-xyz", Namespace: ns, UID: "pod-uid", OwnerReferences: owners}}
	}
	rs := func(owners []metav1.OwnerReference) *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "dirpv-abc", Namespace: ns, UID: "rs-uid", OwnerReferences: owners}}
	}
	ref := func(apiVersion, kind, name, uid string) *metav1.OwnerReference {
		return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: ptr.To(true)}
	}
	for _, tc := range []struct {
		name    string
		pod     string
		objs    []runtime.Object
		want    *metav1.OwnerReference
		wantErr bool
	}{{
		name: "pod, ReplicaSet, Deployment",
		pod:  "dirpv-abc-xyz",
		objs: []runtime.Object{
			pod(controller("apps/v1", "ReplicaSet", "dirpv-abc", "rs-uid")),
			rs(controller("apps/v1", "Deployment", "dirpv", "deploy-uid")),
		},
		want: ref("apps/v1", "Deployment", "dirpv", "deploy-uid"),
	}, {
		name: "a ReplicaSet of its own",
		pod:  "dirpv-abc-xyz",
		objs: []runtime.Object{pod(controller("apps/v1", "ReplicaSet", "dirpv-abc", "rs-uid")), rs(nil)},
		want: ref("apps/v1", "ReplicaSet", "dirpv-abc", "rs-uid"),
	}, {
		name: "a StatefulSet",
		pod:  "dirpv-abc-xyz",
		objs: []runtime.Object{pod(controller("apps/v1", "StatefulSet", "dirpv", "sts-uid"))},
		want: ref("apps/v1", "StatefulSet", "dirpv", "sts-uid"),
	}, {
		name: "no controller",
		pod:  "dirpv-abc-xyz",
		objs: []runtime.Object{pod([]metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "cm"}})},
		want: ref("v1", "Pod", "dirpv-abc-xyz", "pod-uid"),
	}, {
		name: "not in a pod",
	}, {
		name:    "no such pod",
		pod:     "dirpv-abc-xyz",
		wantErr: true,
	}, {
		name:    "ReplicaSet gone",
		pod:     "dirpv-abc-xyz",
		objs:    []runtime.Object{pod(controller("apps/v1", "ReplicaSet", "dirpv-abc", "rs-uid"))},
		wantErr: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			got, err := Owner(ctx, fake.NewClientset(tc.objs...), ns, tc.pod)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Owner: %v; want error %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Owner = %+v; want %+v", got, tc.want)
			}
		})
	}
}

// queued drains q: the nodes it held.
func queued(q workqueue.TypedRateLimitingInterface[string]) []string {
	var nodes []string
	for q.Len() > 0 {
		n, _ := q.Get()
		q.Done(n)
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return nodes
}

// TestHandlers: which events sync which nodes.
func TestHandlers(t *testing.T) {
	obj := published("fast", "n1", "host-n1", 10*gi, 4*gi)
	obj.ResourceVersion = "1"
	gone := published("fast", "n9", "host-n9", 10*gi, 4*gi)
	labelled := func(n *v1.Node, k, v string) *v1.Node {
		n = n.DeepCopy()
		n.Labels[k] = v
		return n
	}
	changed := func(o *storagev1.CSIStorageCapacity, rv string, change func(o *storagev1.CSIStorageCapacity)) *storagev1.CSIStorageCapacity {
		o = o.DeepCopy()
		o.ResourceVersion = rv
		change(o)
		return o
	}
	fast, other := newClass("fast", provisioner), newClass("other", "other.io")
	for _, tc := range []struct {
		name  string
		event func(p *Publisher)
		want  []string
	}{
		{"node added", func(p *Publisher) { p.NodeHandler().OnAdd(hostNode("n3"), false) }, []string{"n3"}},
		{"node deleted", func(p *Publisher) { p.NodeHandler().OnDelete(hostNode("n3")) }, []string{"n3"}},
		{"node tombstone", func(p *Publisher) {
			p.NodeHandler().OnDelete(cache.DeletedFinalStateUnknown{Key: "n3", Obj: hostNode("n3")})
		}, []string{"n3"}},
		{"node tombstone without object", func(p *Publisher) {
			p.NodeHandler().OnDelete(cache.DeletedFinalStateUnknown{Key: "n3"})
		}, []string{"n3"}},
		{"node labels changed", func(p *Publisher) {
			p.NodeHandler().OnUpdate(hostNode("n1"), labelled(hostNode("n1"), TopologyKey, "new"))
		}, []string{"n1"}},
		{"node status changed", func(p *Publisher) {
			n := hostNode("n1")
			n.Status.Phase = v1.NodeRunning
			p.NodeHandler().OnUpdate(hostNode("n1"), n)
		}, nil},
		{"publishing class added", func(p *Publisher) { p.ClassHandler().OnAdd(fast, false) }, []string{"n1", "n2", "n9"}},
		{"publishing class deleted", func(p *Publisher) {
			p.ClassHandler().OnDelete(cache.DeletedFinalStateUnknown{Key: "fast", Obj: fast})
		}, []string{"n1", "n2", "n9"}},
		{"publishing class updated", func(p *Publisher) {
			a, b := fast.DeepCopy(), fast.DeepCopy()
			a.ResourceVersion, b.ResourceVersion = "1", "2"
			p.ClassHandler().OnUpdate(a, b)
		}, []string{"n1", "n2", "n9"}},
		{"class resync", func(p *Publisher) { p.ClassHandler().OnUpdate(fast, fast) }, nil},
		{"another provisioner's class", func(p *Publisher) { p.ClassHandler().OnAdd(other, false) }, nil},
		{"class that stopped publishing but has objects", func(p *Publisher) {
			p.Source.(*fakeSource).off["fast"] = true
			p.ClassHandler().OnDelete(fast)
		}, []string{"n1", "n2", "n9"}},
		{"our own update", func(p *Publisher) {
			sent := changed(obj, "2", func(o *storagev1.CSIStorageCapacity) { o.Capacity = quantity(gi) })
			p.own.sending(sent)
			p.CapacityHandler().OnUpdate(obj, sent)
		}, nil},
		{"someone else's update", func(p *Publisher) {
			p.CapacityHandler().OnUpdate(obj, changed(obj, "2", func(o *storagev1.CSIStorageCapacity) { o.Capacity = quantity(gi) }))
		}, []string{"n1"}},
		{"our label removed", func(p *Publisher) {
			p.CapacityHandler().OnUpdate(obj, changed(obj, "2", func(o *storagev1.CSIStorageCapacity) { o.Labels = nil }))
		}, []string{"n1"}},
		{"capacity resync", func(p *Publisher) { p.CapacityHandler().OnUpdate(obj, obj) }, nil},
		{"our own delete", func(p *Publisher) {
			p.own.deleting(obj.UID)
			p.CapacityHandler().OnDelete(obj)
		}, nil},
		{"someone else's delete", func(p *Publisher) {
			p.CapacityHandler().OnDelete(cache.DeletedFinalStateUnknown{Key: ns + "/" + obj.Name, Obj: obj})
		}, []string{"n1"}},
		{"another's object deleted", func(p *Publisher) {
			p.CapacityHandler().OnDelete(foreign(obj, "x", "someone"))
		}, nil},
		{"Refresh", func(p *Publisher) { p.Refresh("n2") }, []string{"n2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, hostNode("n1"), hostNode("n2"), fast, other, obj, gone)
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
			defer q.ShutDown()
			f.p.setQueue(q)
			tc.event(f.p)
			if got := queued(q); !slices.Equal(got, tc.want) {
				t.Errorf("queued %q; want %q", got, tc.want)
			}
		})
	}
}

// TestNotRunning: handlers and Refresh do nothing, and do not panic, before Run and after it.
func TestNotRunning(t *testing.T) {
	f := newFixture(t, hostNode("n1"), newClass("fast", provisioner))
	f.p.Refresh("n1")
	f.p.NodeHandler().OnAdd(hostNode("n2"), false)
	f.p.ClassHandler().OnAdd(newClass("fast", provisioner), false)
	f.p.CapacityHandler().OnDelete(published("fast", "n1", "host-n1", gi, gi))
	if f.p.queue != nil {
		t.Error("a queue exists before Run")
	}
}

// TestRun: Run publishes through real informers on a fake API, measures a node again on
// Refresh, and runs again in a later term with a fresh queue.
func TestRun(t *testing.T) {
	client := fake.NewClientset(hostNode("n1"), newClass("fast", provisioner), newClass("flaky", provisioner),
		newClass("other", "other.io"))
	src := &fakeSource{rooms: map[roomKey]room{{"fast", "n1"}: {total: 10 * gi, largest: 4 * gi}}, off: map[string]bool{}}
	factory := informers.NewSharedInformerFactory(client, 0)
	caps := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	nodes, classes := factory.Core().V1().Nodes(), factory.Storage().V1().StorageClasses()
	capacities := caps.Storage().V1().CSIStorageCapacities()
	p := &Publisher{
		Client: client, Namespace: ns, Owner: &owner, Name: managedBy, Source: src,
		Classes: classes.Lister(), Nodes: nodes.Lister(), Capacities: capacities.Lister(),
		Synced: []cache.InformerSynced{
			nodes.Informer().HasSynced, classes.Informer().HasSynced, capacities.Informer().HasSynced,
		},
		Interval: time.Hour, Workers: 2, Delay: time.Millisecond,
	}
	p.Refresh("n1") // before Run: nothing, no panic
	for inf, h := range map[cache.SharedIndexInformer]cache.ResourceEventHandler{
		nodes.Informer(): p.NodeHandler(), classes.Informer(): p.ClassHandler(), capacities.Informer(): p.CapacityHandler(),
	} {
		if _, err := inf.AddEventHandler(h); err != nil {
			t.Fatal(err)
		}
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, stop := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	caps.Start(ctx.Done())
	defer func() {
		stop()
		factory.Shutdown()
		caps.Shutdown()
	}()

	// published waits until the API holds total for class on n1, calling Refresh meanwhile if
	// refresh is set.
	published := func(class string, total uint64, refresh bool) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			if refresh {
				p.Refresh("n1")
			}
			got, err := client.StorageV1().CSIStorageCapacities(ns).Get(ctx, objectName(class, "n1"), metav1.GetOptions{})
			return err == nil && got.Capacity != nil && got.Capacity.Cmp(*quantity(total)) == 0, nil
		})
		if err != nil {
			t.Fatalf("capacity %d of class %s not published: %v", total, class, err)
		}
	}
	run := func() (end func()) {
		termCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.Run(termCtx)
		}()
		return func() {
			cancel()
			<-done
		}
	}

	end := run()
	published("fast", 10*gi, false) // the first sync of every node
	// The room of flaky could not be measured so far: n1 is retried with backoff until it is.
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return src.times("flaky", "n1") > 0, nil
	}); err != nil {
		t.Fatal("the room of flaky was never asked for")
	}
	src.set("flaky", "n1", room{total: 3 * gi, largest: gi})
	published("flaky", 3*gi, false)
	src.set("fast", "n1", room{total: 7 * gi, largest: gi})
	published("fast", 7*gi, true) // Refresh (the interval is an hour)
	end()

	p.Refresh("n1") // between terms: nothing, no panic
	src.set("fast", "n1", room{total: 5 * gi, largest: gi})
	end = run()
	published("fast", 5*gi, false) // a new term syncs every node again
	end()

	list, err := client.StorageV1().CSIStorageCapacities(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Errorf("%d objects published; want 2", len(list.Items))
	}
}

// The room is published in whole MiB, rounded down: never more than there is, and bytes written
// on a node do not make writes here.
func TestQuantityRoundsDown(t *testing.T) {
	for _, tt := range []struct {
		n    uint64
		want string
	}{
		{0, "0"}, {mib - 1, "0"}, {10*mib + 5, "10Mi"}, {1 << 40, "1Ti"}, {math.MaxUint64, "8796093022207Mi"},
	} {
		if got := quantity(tt.n); got.String() != tt.want {
			t.Errorf("quantity(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
}
