package hostpath

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

var nodeA = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-a"}}

var createOp = volumeop.Op{Kind: volumeop.Create, Path: "team-data-pvc-1", Mode: 0o750, UID: -1, GID: 1000,
	Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "1", ClaimNamespace: "team", ClaimName: "data"}}

// nodeRunner is a nodeexec.Runner that records what reached the node and succeeds.
type nodeRunner struct {
	calls []nodeCall
}

type nodeCall struct {
	node, root string
	op         volumeop.Op
}

func (r *nodeRunner) Run(_ context.Context, node, root string, op volumeop.Op) (volumeop.Result, error) {
	r.calls = append(r.calls, nodeCall{node, root, op})
	return volumeop.Result{}, nil
}

// TestRunInOperatorRoot: whatever the class's basePath, an operation runs in --hostpath-root
// with the volume's path relative to it, and carries the UID of the Node it runs on.
func TestRunInOperatorRoot(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	vol := backend.Volume{Backend: Name, Location: Location{Node: "node1", NodeUID: "uid-a", BasePath: "/var/lib/dirpv/fast"}}
	r := &nodeRunner{}
	b := &Backend{Client: fake.NewClientset(nodeA), Root: "/var/lib/dirpv", Timeout: time.Minute, Node: r}
	if _, err := b.Run(ctx, vol, createOp); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 1 {
		t.Fatalf("%d operations on nodes", len(r.calls))
	}
	c := r.calls[0]
	if c.node != "node1" || c.root != "/var/lib/dirpv" {
		t.Errorf("ran on node %q in %q, want node1's --hostpath-root", c.node, c.root)
	}
	if op := c.op; op.Path != "fast/"+createOp.Path || op.Owner.NodeUID != "uid-a" || op.Owner.PV != createOp.Owner.PV {
		t.Errorf("operation %+v", op)
	}
}

// TestRunRefused: an operation whose node is gone, or whose basePath is not one, never reaches a
// node.
func TestRunRefused(t *testing.T) {
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := nodes.Add(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rejoined", UID: "uid-2"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		loc  Location
		// cached: Nodes come from a cache, and the API is never asked for one.
		cached   bool
		nodeGone bool
		wantErr  string
	}{
		// A Node deleted and registered again has a new UID; the volumes made on the old one
		// are left alone as those of a node that is gone.
		{name: "node recreated", loc: Location{Node: "node1", NodeUID: "uid-before", BasePath: "/var/lib/dirpv"},
			nodeGone: true, wantErr: "deleted and joined again"},
		{name: "node gone", loc: Location{Node: "gone", BasePath: "/var/lib/dirpv"}, nodeGone: true},
		{name: "node gone from the cache", loc: Location{Node: "gone", BasePath: "/var/lib/dirpv"}, cached: true, nodeGone: true},
		{name: "node rejoined in the cache", loc: Location{Node: "rejoined", NodeUID: "uid-1", BasePath: "/var/lib/dirpv"}, cached: true, nodeGone: true},
		{name: "basePath outside the root", loc: Location{Node: "node1", BasePath: "/etc"}, wantErr: "not within"},
		// Base directories are volume paths too; dirpv's own names (a leading ".") cannot be one.
		{name: "hidden basePath", loc: Location{Node: "node1", BasePath: "/var/lib/dirpv/.x.dirpv"}, wantErr: "basePath /var/lib/dirpv/.x.dirpv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			client := fake.NewClientset(nodeA)
			r := &nodeRunner{}
			b := &Backend{Client: client, Root: "/var/lib/dirpv", Timeout: time.Minute, Node: r}
			if tc.cached {
				b.Nodes = corelisters.NewNodeLister(nodes)
			}
			_, err := b.Run(ctx, backend.Volume{Backend: Name, Location: tc.loc}, createOp)
			if err == nil || errors.Is(err, backend.ErrNodeGone) != tc.nodeGone || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want one containing %q (node gone: %v)", err, tc.wantErr, tc.nodeGone)
			}
			if len(r.calls) != 0 {
				t.Errorf("%d operations reached a node", len(r.calls))
			}
			if tc.cached {
				for _, a := range client.Actions() {
					if a.GetResource().Resource == "nodes" {
						t.Errorf("the API was asked for a node: %v", a)
					}
				}
			}
		})
	}
}
