package hostpath

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
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumeop"
)

const gib = 1 << 30

// disk is a root as a node's room operation finds it.
type disk struct {
	room, device uint64
	err          error
}

// roomRunner answers room operations from disks by node and path relative to the root, and
// records every operation.
type roomRunner struct {
	disks map[string]map[string]disk
	mu    sync.Mutex
	ops   []nodeCall
}

func (r *roomRunner) Run(_ context.Context, node, root string, op volumeop.Op) (volumeop.Result, error) {
	r.mu.Lock()
	r.ops = append(r.ops, nodeCall{node, root, op})
	r.mu.Unlock()
	if op.Kind != volumeop.Room {
		return volumeop.Result{}, nil
	}
	d, ok := r.disks[node][op.Path]
	if !ok {
		return volumeop.Result{}, fmt.Errorf("root %s is not there", op.Path)
	}
	return volumeop.Result{Room: d.room, Device: d.device}, d.err
}

func (r *roomRunner) kinds() []volumeop.Kind {
	var k []volumeop.Kind
	for _, c := range r.ops {
		k = append(k, c.op.Kind)
	}
	return k
}

func readyNode(name string, mod ...func(*v1.Node)) *v1.Node {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: "uid-" + "name", Labels: map[string]string{v1.LabelHostname: "host-" + name, "zone": "a"}},
		Status:     v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}},
	}
	for _, m := range mod {
		m(n)
	}
	return n
}

// newRoomBackend is a backend over runner r whose nodes come from a cache of nodes.
func newRoomBackend(t *testing.T, r *roomRunner, nodes ...*v1.Node) *Backend {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range nodes {
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	return &Backend{Client: fake.NewClientset(), Nodes: corelisters.NewNodeLister(idx), Root: "/mnt", Timeout: time.Minute, Node: r}
}

// parse parses a hostPath class for a backend whose --hostpath-root is /mnt.
func parse(t *testing.T, params map[string]string) *config.Class {
	t.Helper()
	b := &Backend{Root: "/mnt"}
	params = mapWith(params, "backend", Name)
	c, err := config.ParseClass(params, []config.Backend{b})
	if err != nil {
		t.Fatalf("ParseClass(%v): %v", params, err)
	}
	return c
}

func mapWith(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func sizedClaim(size string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{Spec: v1.PersistentVolumeClaimSpec{
		Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}},
	}}
}

func class(mode storagev1.VolumeBindingMode, topo ...v1.TopologySelectorTerm) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}, VolumeBindingMode: &mode, AllowedTopologies: topo}
}

// TestParseRoots: basePath takes one root or several, each checked as one, none inside
// another; requireMount and rootPolicy take their values only.
func TestParseRoots(t *testing.T) {
	for _, tc := range []struct {
		params  map[string]string
		want    []string
		wantErr string
	}{
		{params: map[string]string{"basePath": "/mnt/a"}, want: []string{"/mnt/a"}},
		{params: map[string]string{"basePath": "/mnt/a,/mnt/b, /mnt/c "}, want: []string{"/mnt/a", "/mnt/b", "/mnt/c"}},
		{params: map[string]string{"basePath": "/mnt/a,/mnt/a"}, wantErr: "/mnt/a is given twice"},
		{params: map[string]string{"basePath": "/mnt/a,/mnt/a/b"}, wantErr: "/mnt/a/b is given twice, or inside /mnt/a"},
		{params: map[string]string{"basePath": "/mnt/a/b,/mnt/a"}, wantErr: "/mnt/a/b lies inside /mnt/a"},
		{params: map[string]string{"basePath": "/mnt/a,"}, wantErr: "is not an absolute path"},
		{params: map[string]string{"basePath": "/mnt/a,mnt/b"}, wantErr: "is not an absolute path"},
		{params: map[string]string{"basePath": "/mnt/a,/mnt/../etc"}, wantErr: "basePath"},
		{params: map[string]string{"basePath": strings.Repeat("/mnt/x,", 16) + "/mnt/y"}, wantErr: "given twice"},
		{params: map[string]string{"basePath": "/mnt/a,/mnt/b", "requireMount": "yes"}, wantErr: `"yes" is not one of true, false`},
		{params: map[string]string{"basePath": "/mnt/a", "rootPolicy": "random"}, wantErr: `"random" is not one of mostRoom, leastRoom`},
		{params: map[string]string{"basePath": "/mnt,/srv/a", "requireMount": "true"}, wantErr: "basePath /mnt is --hostpath-root itself"},
		{params: map[string]string{"basePath": "/mnt", "requireMount": "false"}, want: []string{"/mnt"}},
	} {
		b := &Backend{Root: "/mnt"}
		c, err := config.ParseClass(mapWith(tc.params, "backend", Name), []config.Backend{b})
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.params, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.params, err)
		case !slices.Equal(c.Params.(Class).BasePaths, tc.want):
			t.Errorf("%v: roots %q, want %q", tc.params, c.Params.(Class).BasePaths, tc.want)
		}
	}
	var many []string
	for i := range maxRoots + 1 {
		many = append(many, fmt.Sprintf("/mnt/d%d", i))
	}
	if _, err := parseRoots(strings.Join(many, ",")); err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Errorf("17 roots: %v", err)
	}
}

// TestChooseRoot: the policy picks among the roots with room for the volume; the class's order
// breaks ties; a root that is gone or unusable is passed over; nothing that fits is an error
// matching quota.ErrNoRoom that says why of each root.
func TestChooseRoot(t *testing.T) {
	gone := errors.New("root d2 is not there")
	for _, tc := range []struct {
		name    string
		policy  RootPolicy
		rooms   []measure
		bytes   uint64
		want    string
		wantErr []string
	}{
		{name: "most room", policy: MostRoom, bytes: gib,
			rooms: []measure{{root: "/mnt/d1", room: 2 * gib}, {root: "/mnt/d2", room: 5 * gib}, {root: "/mnt/d3", room: 3 * gib}}, want: "/mnt/d2"},
		{name: "tie goes to the first listed", policy: MostRoom, bytes: gib,
			rooms: []measure{{root: "/mnt/d1", room: 5 * gib}, {root: "/mnt/d2", room: 5 * gib}}, want: "/mnt/d1"},
		{name: "least room that fits packs", policy: LeastRoom, bytes: 2 * gib,
			rooms: []measure{{root: "/mnt/d1", room: gib}, {root: "/mnt/d2", room: 5 * gib}, {root: "/mnt/d3", room: 3 * gib}}, want: "/mnt/d3"},
		{name: "least room tie goes to the first listed", policy: LeastRoom, bytes: gib,
			rooms: []measure{{root: "/mnt/d1", room: 3 * gib}, {root: "/mnt/d2", room: 3 * gib}}, want: "/mnt/d1"},
		{name: "exactly fits", policy: MostRoom, bytes: 3 * gib,
			rooms: []measure{{root: "/mnt/d1", room: 3 * gib}}, want: "/mnt/d1"},
		{name: "a vanished root is passed over", policy: MostRoom, bytes: gib,
			rooms: []measure{{root: "/mnt/d1", room: 2 * gib}, {root: "/mnt/d2", room: 9 * gib, err: gone}}, want: "/mnt/d1"},
		{name: "nothing fits", policy: MostRoom, bytes: 4 * gib,
			rooms:   []measure{{root: "/mnt/d1", room: 2 * gib}, {root: "/mnt/d2", err: gone}},
			wantErr: []string{"no root of the class can take 4 GiB", "/mnt/d1: 2 GiB free", "/mnt/d2: root d2 is not there"}},
		{name: "no root at all", policy: LeastRoom, bytes: 0,
			rooms:   []measure{{root: "/mnt/d1", err: gone}},
			wantErr: []string{"no root of the class is usable here (/mnt/d1: root d2 is not there)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := want{class: &config.Class{Capacity: config.CapacityLabel}, c: Class{RootPolicy: tc.policy}, bytes: tc.bytes}
			got, err := (&Backend{}).chooseRoot(tc.rooms, w)
			if tc.wantErr != nil {
				if !errors.Is(err, quota.ErrNoRoom) {
					t.Fatalf("err %v, want one matching ErrNoRoom", err)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("err %q, want it to say %q", err, s)
					}
				}
				return
			}
			if err != nil || got.root != tc.want {
				t.Errorf("chose %q (%v), want %q", got.root, err, tc.want)
			}
		})
	}
}

// TestPlaceOnSelectedNode: a class of several roots measures each on the claim's node, as the
// class's capacity says, and places the volume in the one with most room; a class of one root
// that need not be a mount places it there without asking the node.
func TestPlaceOnSelectedNode(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	node := readyNode("node1")
	r := &roomRunner{disks: map[string]map[string]disk{"node1": {
		"d1": {room: 3 * gib, device: 1}, "d2": {room: 7 * gib, device: 2}, "plain": {err: errors.New("plain is not a mounted filesystem")},
	}}}
	b := newRoomBackend(t, r, node)
	c := parse(t, map[string]string{"basePath": "/mnt/d1,/mnt/plain,/mnt/d2", "requireMount": "true", "capacity": "enforce", "overcommit": "1.5"})
	opts := controller.ProvisionOptions{StorageClass: class(storagev1.VolumeBindingWaitForFirstConsumer), SelectedNode: node, PVC: sizedClaim("2Gi")}
	loc, err := b.Place(ctx, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if l := loc.(Location); l.BasePath != "/mnt/d2" || l.Node != "node1" || l.Hostname != "host-node1" {
		t.Errorf("placed at %+v, want /mnt/d2 on node1", l)
	}
	for _, c := range r.ops {
		if op := c.op; op.Kind != volumeop.Room || !op.MustExist || !op.MustMount || !op.Limited || op.Overcommit != 1.5 || c.root != "/mnt" || c.node != "node1" {
			t.Errorf("measured with %+v on %s in %s", op, c.node, c.root)
		}
	}
	if len(r.ops) != 3 {
		t.Errorf("%d roots measured, want 3", len(r.ops))
	}

	// Larger than any root: the scheduler had better pick another node.
	opts.PVC = sizedClaim("8Gi")
	if _, err := b.Place(ctx, c, opts); !errors.Is(err, quota.ErrNoRoom) || !strings.Contains(err.Error(), "/mnt/d2: 7 GiB not yet promised to volumes") {
		t.Errorf("8Gi: %v, want ErrNoRoom naming each root's room", err)
	}

	r.ops = nil
	one := parse(t, map[string]string{"basePath": "/mnt/solo"})
	loc, err = b.Place(ctx, one, controller.ProvisionOptions{StorageClass: opts.StorageClass, SelectedNode: node, PVC: sizedClaim("100Ti")})
	if err != nil || loc.(Location).BasePath != "/mnt/solo" || len(r.ops) != 0 {
		t.Errorf("one root: %+v, %v, and %v reached the node; want it placed unmeasured", loc, err, r.kinds())
	}
}

// TestPlaceImmediate: with Immediate binding dirpv picks the node, among the Ready nodes that
// take pods and that the class's topologies allow, whose best root has most room for the volume.
func TestPlaceImmediate(t *testing.T) {
	zone := func(z string) func(*v1.Node) { return func(n *v1.Node) { n.Labels["zone"] = z } }
	nodes := []*v1.Node{
		readyNode("small"),
		readyNode("big"),
		readyNode("cordoned", func(n *v1.Node) { n.Spec.Unschedulable = true }),
		readyNode("tainted", func(n *v1.Node) {
			n.Spec.Taints = []v1.Taint{{Key: "dedicated", Value: "db", Effect: v1.TaintEffectNoSchedule}}
		}),
		readyNode("notready", func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse }),
		readyNode("elsewhere", zone("b")),
		readyNode("preferred", func(n *v1.Node) {
			n.Spec.Taints = []v1.Taint{{Key: "soft", Effect: v1.TaintEffectPreferNoSchedule}}
		}),
	}
	// Every node but the two plain ones has more room than "big".
	disks := map[string]map[string]disk{}
	for _, n := range nodes {
		disks[n.Name] = map[string]disk{"d1": {room: 100 * gib, device: 1}}
	}
	disks["small"]["d1"] = disk{room: 2 * gib, device: 1}
	disks["big"]["d1"] = disk{room: 4 * gib, device: 1}
	disks["preferred"]["d1"] = disk{room: 3 * gib, device: 1}
	inZoneA := v1.TopologySelectorTerm{MatchLabelExpressions: []v1.TopologySelectorLabelRequirement{{Key: "zone", Values: []string{"a"}}}}

	for _, tc := range []struct {
		name    string
		sc      *storagev1.StorageClass
		size    string
		want    string
		wantErr string
	}{
		{name: "most room wins", sc: class(storagev1.VolumeBindingImmediate, inZoneA), size: "1Gi", want: "big"},
		{name: "unset binding mode is Immediate", sc: &storagev1.StorageClass{AllowedTopologies: []v1.TopologySelectorTerm{inZoneA}}, size: "1Gi", want: "big"},
		{name: "without topologies every node that takes pods counts", sc: class(storagev1.VolumeBindingImmediate), size: "1Gi", want: "elsewhere"},
		{name: "only one fits", sc: class(storagev1.VolumeBindingImmediate, inZoneA), size: "3.5Gi", want: "big"},
		{name: "none fits", sc: class(storagev1.VolumeBindingImmediate, inZoneA), size: "5Gi",
			wantErr: "no node can take the volume: node big: no root of the class can take 5 GiB (/mnt/d1: 4 GiB free)"},
		{name: "no node allowed", sc: class(storagev1.VolumeBindingImmediate, v1.TopologySelectorTerm{
			MatchLabelExpressions: []v1.TopologySelectorLabelRequirement{{Key: "zone", Values: []string{"z"}}}}), size: "1Gi",
			wantErr: "StorageClass  : no Ready, schedulable node matches its allowedTopologies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			r := &roomRunner{disks: disks}
			b := newRoomBackend(t, r, nodes...)
			c := parse(t, map[string]string{"basePath": "/mnt/d1"})
			loc, err := b.Place(ctx, c, controller.ProvisionOptions{StorageClass: tc.sc, PVC: sizedClaim(tc.size)})
			if tc.wantErr != "" {
				want := strings.ReplaceAll(tc.wantErr, "StorageClass  :", "StorageClass "+tc.sc.Name+":")
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := loc.(Location); l.Node != tc.want || l.Hostname != "host-"+tc.want || l.BasePath != "/mnt/d1" {
				t.Errorf("placed at %+v, want node %s", l, tc.want)
			}
			for _, c := range r.ops {
				if slices.Contains([]string{"cordoned", "tainted", "notready"}, c.node) {
					t.Errorf("node %s was measured", c.node)
				}
				if c.op.MustExist {
					t.Errorf("a class of one root was measured as if it had to be there: %+v", c.op)
				}
			}
		})
	}
}

// TestRoom: the room published for a class on a node counts each filesystem once, its largest
// volume is the largest room of one root, unusable roots count nothing, and a class of one
// root that cannot be measured keeps what was known (an error).
func TestRoom(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	node := readyNode("node1")
	r := &roomRunner{disks: map[string]map[string]disk{"node1": {
		"a": {room: 3 * gib, device: 7}, "b": {room: 3 * gib, device: 7}, "c": {room: 5 * gib, device: 8},
		"broken": {err: errors.New("helper pod failed")},
	}}}
	b := newRoomBackend(t, r, node)
	for _, tc := range []struct {
		basePath         string
		total, largest   uint64
		wantErr          bool
		params           map[string]string
		wantMustExist    bool
		wantMeasuredOnce bool
	}{
		{basePath: "/mnt/a,/mnt/b,/mnt/c", total: 8 * gib, largest: 5 * gib},
		{basePath: "/mnt/a,/mnt/gone", total: 3 * gib, largest: 3 * gib},
		{basePath: "/mnt/gone,/mnt/broken", total: 0, largest: 0},
		{basePath: "/mnt/broken", wantErr: true},
		{basePath: "/mnt/c", total: 5 * gib, largest: 5 * gib},
	} {
		c := parse(t, map[string]string{"basePath": tc.basePath})
		total, largest, err := b.Room(ctx, c, node)
		if (err != nil) != tc.wantErr || total != tc.total || largest != tc.largest {
			t.Errorf("%s: %s in all, %s at most (%v); want %s, %s (error: %v)", tc.basePath,
				bytesOf(total), bytesOf(largest), err, bytesOf(tc.total), bytesOf(tc.largest), tc.wantErr)
		}
	}
}

// TestChangedNodes: operations that change the room on a node are reported, measuring is not.
func TestChangedNodes(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	var changed []string
	b := &Backend{Client: fake.NewClientset(nodeA), Root: "/var/lib/dirpv", Timeout: time.Minute, Node: &nodeRunner{},
		Changed: func(node string) { changed = append(changed, node) }}
	vol := backend.Volume{Backend: Name, Location: Location{Node: "node1", NodeUID: "uid-a", BasePath: "/var/lib/dirpv"}}
	for _, k := range []volumeop.Kind{volumeop.Create, volumeop.Usage, volumeop.Delete, volumeop.Probe, volumeop.Expand} {
		op := createOp
		op.Kind = k
		if _, err := b.Run(ctx, vol, op); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(changed, []string{"node1", "node1", "node1"}) {
		t.Errorf("changed %v, want node1 for create, delete and expand", changed)
	}
}
