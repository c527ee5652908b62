package hostpath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

var nodeA = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-a"}}

// finishingClient is a fake clientset whose helper pods are finished, successfully, the moment
// they are created, and which records them.
func finishingClient(objects ...runtime.Object) (*fake.Clientset, *[]*v1.Pod) {
	client := fake.NewClientset(objects...)
	var pods []*v1.Pod
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*v1.Pod)
		pod.Name = fmt.Sprintf("%s%d", pod.GenerateName, len(pods))
		pod.Status = *terminated(v1.PodSucceeded, 0, "[{}]")
		pods = append(pods, pod.DeepCopy())
		return false, nil, nil
	})
	return client, &pods
}

// TestRunInOperatorRoot: whatever the class's basePath, an operation runs in --hostpath-root
// with the volume's path relative to it, and carries the UID of the Node it runs on.
func TestRunInOperatorRoot(t *testing.T) {
	vol := backend.Volume{Backend: Name, Location: Location{Node: "node1", NodeUID: "uid-a", BasePath: "/var/lib/dirpv/fast"}}

	t.Run("helper pod", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		client, pods := finishingClient(nodeA)
		b := &Backend{Client: client, Root: "/var/lib/dirpv", Timeout: time.Minute, Helper: NewBatcher(&PodRunner{Client: client, Namespace: "dirpv", Image: "img"}, 64, 0, nil)}
		if _, err := b.Run(ctx, vol, createOp); err != nil {
			t.Fatal(err)
		}
		if len(*pods) != 1 {
			t.Fatalf("%d helper pods", len(*pods))
		}
		spec := (*pods)[0].Spec
		if len(spec.Volumes) != 1 || spec.Volumes[0].HostPath.Path != "/var/lib/dirpv" {
			t.Errorf("volumes %+v, want only --hostpath-root", spec.Volumes)
		}
		ops, err := volumeop.ParseBatchArgs(spec.Containers[0].Args[2:])
		if err != nil || len(ops) != 1 {
			t.Fatalf("helper's operations %+v, %v", ops, err)
		}
		if op := ops[0]; op.Path != "fast/"+createOp.Path || op.Owner.NodeUID != "uid-a" || op.Owner.PV != createOp.Owner.PV {
			t.Errorf("helper's operation %+v", op)
		}
	})

	t.Run("in-process", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		local := t.TempDir()
		b := &Backend{Client: fake.NewClientset(nodeA), Root: "/var/lib/dirpv", LocalRoot: local, Timeout: time.Minute}
		if _, err := b.Run(ctx, vol, createOp); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(local, "fast", createOp.Path)); err != nil || !fi.IsDir() {
			t.Fatalf("volume directory: %v %v", fi, err)
		}
		r, err := fsys.OpenLocal(local)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if m, err := volumefs.ReadMarker(r, "fast/"+createOp.Path); err != nil || m == nil || m.NodeUID != "uid-a" {
			t.Errorf("marker %+v, %v", m, err)
		}
	})

	// dirpv's own container has no CAP_SYS_ADMIN: operations on limits go to helper pods.
	t.Run("in a helper pod with a limit", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		local := t.TempDir()
		client, pods := finishingClient(nodeA)
		b := &Backend{Client: client, Root: "/var/lib/dirpv", LocalRoot: local, Timeout: time.Minute,
			Helper: NewBatcher(&PodRunner{Client: client, Namespace: "dirpv", Image: "img"}, 64, 0, nil)}
		op := createOp
		op.Limit = 1 << 20
		if _, err := b.Run(ctx, vol, op); err != nil {
			t.Fatal(err)
		}
		if len(*pods) != 1 || !slices.Contains((*pods)[0].Spec.Containers[0].SecurityContext.Capabilities.Add, "SYS_ADMIN") {
			t.Fatalf("helper pods %d, want one with SYS_ADMIN", len(*pods))
		}
		if _, err := os.Stat(filepath.Join(local, "fast", createOp.Path)); !os.IsNotExist(err) {
			t.Errorf("the volume was made in-process too: %v", err)
		}
	})
}

// TestRunNodeRecreated: a Node deleted and registered again has a new UID; the volumes made on
// the old one are left alone as those of a node that is gone.
func TestRunNodeRecreated(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client, pods := finishingClient(nodeA)
	b := &Backend{Client: client, Root: "/var/lib/dirpv", Timeout: time.Minute, Helper: NewBatcher(&PodRunner{Client: client, Namespace: "dirpv"}, 64, 0, nil)}
	vol := backend.Volume{Backend: Name, Location: Location{Node: "node1", NodeUID: "uid-before", BasePath: "/var/lib/dirpv"}}
	_, err := b.Run(ctx, vol, volumeop.Op{Kind: volumeop.Delete, Path: "x", Owner: volumefs.Marker{PV: "pvc-1"}})
	if !errors.Is(err, backend.ErrNodeGone) || !strings.Contains(err.Error(), "deleted and joined again") || len(*pods) != 0 {
		t.Fatalf("err %v, %d helper pods", err, len(*pods))
	}
}

// TestRunRefusesHiddenBasePath: base directories are volume paths too; dirpv's own names (a
// leading ".") cannot be one.
func TestRunRefusesHiddenBasePath(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client, pods := finishingClient(nodeA)
	b := &Backend{Client: client, Root: "/var/lib/dirpv", Timeout: time.Minute, Helper: NewBatcher(&PodRunner{Client: client, Namespace: "dirpv"}, 64, 0, nil)}
	_, err := b.Run(ctx, backend.Volume{Location: Location{Node: "node1", BasePath: "/var/lib/dirpv/.x.dirpv"}}, createOp)
	if err == nil || !strings.Contains(err.Error(), "basePath /var/lib/dirpv/.x.dirpv") || len(*pods) != 0 {
		t.Fatalf("err %v, %d helper pods", err, len(*pods))
	}
}
