package nodeexec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

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

// transport is a Transport of a pod per batch through client, in-process for every node when
// localRoot is set.
func transport(client *fake.Clientset, localRoot string) *Transport {
	return New(nil, Pods{Client: client, Namespace: "dirpv", Image: "img"},
		&config.Options{HelperBatchSize: 64, LocalRoot: localRoot}, nil)
}

// TestTransport: an operation runs in a helper pod that mounts the node's root, or in-process
// where this process has that root mounted (--local-root), except operations on limits.
func TestTransport(t *testing.T) {
	op := createOp
	op.Path = "fast/" + createOp.Path
	op.Owner.NodeUID = "uid-a"

	t.Run("helper pod", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		client, pods := finishingClient()
		if _, err := transport(client, "").Run(ctx, "node1", "/var/lib/dirpv", op); err != nil {
			t.Fatal(err)
		}
		if len(*pods) != 1 {
			t.Fatalf("%d helper pods", len(*pods))
		}
		spec := (*pods)[0].Spec
		if spec.NodeName != "node1" || len(spec.Volumes) != 1 || spec.Volumes[0].HostPath.Path != "/var/lib/dirpv" {
			t.Errorf("node %q, volumes %+v, want only --hostpath-root on node1", spec.NodeName, spec.Volumes)
		}
		ops, err := volumeop.ParseBatchArgs(spec.Containers[0].Args[2:])
		if err != nil || len(ops) != 1 {
			t.Fatalf("helper's operations %+v, %v", ops, err)
		}
		if got := ops[0]; got.Path != op.Path || got.Owner.NodeUID != "uid-a" || got.Owner.PV != op.Owner.PV {
			t.Errorf("helper's operation %+v", got)
		}
	})

	t.Run("in-process", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		local := t.TempDir()
		client, pods := finishingClient()
		if _, err := transport(client, local).Run(ctx, "node1", "/var/lib/dirpv", op); err != nil {
			t.Fatal(err)
		}
		if len(*pods) != 0 {
			t.Errorf("%d helper pods, want none", len(*pods))
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
		client, pods := finishingClient()
		op := op
		op.Limit = 1 << 20
		if _, err := transport(client, local).Run(ctx, "node1", "/var/lib/dirpv", op); err != nil {
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

// TestHelperPods: helper pods run this pod's image unless --helper-image names one, and this
// pod, when it is known, is their controller.
func TestHelperPods(t *testing.T) {
	self := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "dirpv-1", Namespace: "dirpv", UID: "u1"},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "dirpv", Image: "dirpv:v1", ImagePullPolicy: v1.PullNever}}}}
	for _, tc := range []struct {
		name, podName, helperImage string
		wantImage                  string
		wantPull                   v1.PullPolicy
		wantOwner                  bool
		wantErr                    bool
	}{
		{name: "own pod", podName: "dirpv-1", wantImage: "dirpv:v1", wantPull: v1.PullNever, wantOwner: true},
		{name: "image named", podName: "dirpv-1", helperImage: "other:v2", wantImage: "other:v2", wantPull: v1.PullIfNotPresent, wantOwner: true},
		{name: "no pod", helperImage: "other:v2", wantImage: "other:v2", wantPull: v1.PullIfNotPresent},
		{name: "pod not found", podName: "dirpv-2", helperImage: "other:v2", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := &config.Options{Namespace: "dirpv", PodName: tc.podName, HelperImage: tc.helperImage}
			p, err := HelperPods(context.Background(), fake.NewClientset(self), opts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if p.Image != tc.wantImage || p.PullPolicy != tc.wantPull || p.Namespace != "dirpv" {
				t.Errorf("image %q %q in %q, want %q %q", p.Image, p.PullPolicy, p.Namespace, tc.wantImage, tc.wantPull)
			}
			owner := p.Owner
			if (owner != nil) != tc.wantOwner || owner != nil && (owner.UID != "u1" || owner.Kind != "Pod" || !*owner.Controller || owner.BlockOwnerDeletion != nil) {
				t.Errorf("owner %+v, want this pod's: %v", owner, tc.wantOwner)
			}
		})
	}
}
