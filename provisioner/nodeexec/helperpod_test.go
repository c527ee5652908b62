package nodeexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

var createOp = volumeop.Op{Kind: volumeop.Create, Path: "team-data-pvc-1", Mode: 0o750, UID: -1, GID: 1000,
	Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "1", ClaimNamespace: "team", ClaimName: "data"}}

func TestHelperPodSpec(t *testing.T) {
	r := &PodRunner{Namespace: "dirpv", Image: "dirpv.io/dirpv:v1", PullPolicy: v1.PullNever}
	pod := r.Pod("node1", "/var/lib/dirpv", []volumeop.Op{createOp})
	spec := pod.Spec
	if pod.Namespace != "dirpv" || !strings.HasPrefix(pod.GenerateName, "dirpv-create-") || pod.Annotations[AnnOperations] != "create pvc-1" || pod.OwnerReferences != nil {
		t.Errorf("meta %+v", pod.ObjectMeta)
	}
	// With dirpv's own pod known, it controls its helper pods.
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "dirpv-0", UID: "u1", Controller: ptr.To(true)}
	owned := (&PodRunner{Namespace: "dirpv", Owner: &owner}).Pod("node1", "/var/lib/dirpv", []volumeop.Op{createOp})
	if got := metav1.GetControllerOf(owned); got == nil || got.UID != owner.UID || len(owned.OwnerReferences) != 1 {
		t.Errorf("owners %+v, want %+v", owned.OwnerReferences, owner)
	}
	if spec.NodeName != "node1" || spec.RestartPolicy != v1.RestartPolicyNever || *spec.AutomountServiceAccountToken {
		t.Errorf("spec %+v", spec)
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].HostPath == nil || spec.Volumes[0].HostPath.Path != "/var/lib/dirpv" {
		t.Fatalf("volumes %+v: only basePath may be mounted", spec.Volumes)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("containers %+v", spec.Containers)
	}
	c := spec.Containers[0]
	if c.Image != "dirpv.io/dirpv:v1" || c.ImagePullPolicy != v1.PullNever || !slices.Equal(c.Command, []string{"/dirpv"}) {
		t.Errorf("image %q %q command %v", c.Image, c.ImagePullPolicy, c.Command)
	}
	// The arguments round-trip to the same operation: the helper does exactly what was asked.
	if c.Args[0] != "helper" || c.Args[1] != "--root="+HelperMountPath {
		t.Fatalf("args %v", c.Args)
	}
	if got, err := volumeop.ParseBatchArgs(c.Args[2:]); err != nil || fmt.Sprint(got) != fmt.Sprint([]volumeop.Op{createOp}) {
		t.Errorf("args decode to %+v, %v; want %+v", got, err, createOp)
	}
	// A batch of several kinds lists each operation and is named for none.
	archive := volumeop.Op{Kind: volumeop.Archive, Path: "b", Owner: volumefs.Marker{PV: "pvc-2"}}
	mixed := r.Pod("node1", "/var/lib/dirpv", []volumeop.Op{createOp, archive})
	if mixed.GenerateName != "dirpv-ops-" || mixed.Annotations[AnnOperations] != "create pvc-1\narchive pvc-2" {
		t.Errorf("batch meta %+v", mixed.ObjectMeta)
	}
	if got, err := volumeop.ParseBatchArgs(mixed.Spec.Containers[0].Args[2:]); err != nil || len(got) != 2 || got[1].Owner.PV != "pvc-2" {
		t.Errorf("batch args decode to %+v, %v", got, err)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != HelperMountPath {
		t.Errorf("mounts %+v", c.VolumeMounts)
	}
	sc := c.SecurityContext
	if *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || sc.Privileged != nil ||
		!slices.Equal(sc.Capabilities.Drop, []v1.Capability{"ALL"}) || slices.Contains(sc.Capabilities.Add, "SYS_ADMIN") {
		t.Errorf("security context %+v", sc)
	}
	// Setting limits takes CAP_SYS_ADMIN (quotactl, btrfs qgroups); only such pods get it.
	limited := createOp
	limited.Limit = 1 << 30
	if add := r.Pod("node1", "/var/lib/dirpv", []volumeop.Op{limited}).Spec.Containers[0].SecurityContext.Capabilities.Add; !slices.Contains(add, "SYS_ADMIN") {
		t.Errorf("capabilities of a pod that sets a limit: %v, want SYS_ADMIN too", add)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() {
		t.Errorf("no resource limits: %+v", c.Resources)
	}
	tolerated := map[string]bool{}
	for _, tol := range spec.Tolerations {
		tolerated[tol.Key] = true
	}
	for _, taint := range []string{v1.TaintNodeDiskPressure, v1.TaintNodeMemoryPressure, v1.TaintNodePIDPressure} {
		if !tolerated[taint] {
			t.Errorf("taint %s not tolerated", taint)
		}
	}
}

// fakeKubelet plays the kubelet for helper pods: it names generated pods and ends each with
// status (nil: the pod never starts). The fake clientset's watch drops events made between a
// List and the Watch that follows it, so the status is set where the runner cannot miss it: in
// the pod as created, so that the runner's first List sees it ended, or, if late, once the
// runner's watch is registered, so that the watch delivers it.
func fakeKubelet(objects []runtime.Object, status *v1.PodStatus, late bool) (*fake.Clientset, *atomic.Int32) {
	client := fake.NewClientset(objects...)
	var n, created atomic.Int32
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*v1.Pod)
		if pod.Name == "" {
			pod.Name = fmt.Sprintf("%s%d", pod.GenerateName, n.Add(1))
		}
		if status != nil && !late {
			pod.Status = *status
		}
		created.Add(1)
		return false, nil, nil // the tracker stores the pod
	})
	if late && status != nil {
		client.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
			gvr, ns := a.GetResource(), a.GetNamespace()
			w, err := client.Tracker().Watch(gvr, ns)
			if err != nil {
				return true, nil, err
			}
			// This runs under the clientset's lock, so it goes to the tracker directly.
			list, err := client.Tracker().List(gvr, v1.SchemeGroupVersion.WithKind("Pod"), ns)
			if err != nil {
				return true, nil, err
			}
			for _, pod := range list.(*v1.PodList).Items {
				if pod.Status.Phase == "" {
					pod.Status = *status
					if err := client.Tracker().Update(gvr, &pod, ns); err != nil {
						return true, nil, err
					}
				}
			}
			return true, w, nil
		})
	}
	return client, &created
}

func terminated(phase v1.PodPhase, code int32, msg string) *v1.PodStatus {
	return &v1.PodStatus{Phase: phase, ContainerStatuses: []v1.ContainerStatus{{
		Name: helperContainer, State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: code, Message: msg}},
	}}}
}

func TestHelperRun(t *testing.T) {
	tests := []struct {
		name    string
		status  *v1.PodStatus
		late    bool // the pod ends only after the runner watches it, as a real one does
		timeout time.Duration
		want    volumeop.Result
		wantErr string
	}{
		{name: "success", status: terminated(v1.PodSucceeded, 0, `[{"archive":"archived-x"}]`), want: volumeop.Result{Archive: "archived-x"}},
		{name: "success seen by the watch", status: terminated(v1.PodSucceeded, 0, `[{"archive":"archived-x"}]`), late: true,
			want: volumeop.Result{Archive: "archived-x"}},
		{name: "the operation's failure reaches the caller", status: terminated(v1.PodSucceeded, 0, `[{"error":"create team-data: directory belongs to another PV"}]`),
			wantErr: "helper on node node1 failed: create team-data: directory belongs to another PV"},
		{name: "the helper's failure reaches the caller", status: terminated(v1.PodFailed, 2, "helper: operation 1: unknown operation"),
			wantErr: "helper on node node1 failed: helper: operation 1: unknown operation"},
		{name: "unreadable outcomes", status: terminated(v1.PodSucceeded, 0, `{}`), wantErr: "unreadable outcomes"},
		{name: "image pull failure is reported at once", timeout: time.Hour, status: &v1.PodStatus{Phase: v1.PodPending, ContainerStatuses: []v1.ContainerStatus{{
			Name: helperContainer, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}},
		}}}, wantErr: "cannot start: ErrImagePull: not found"},
		{name: "timeout", timeout: 300 * time.Millisecond, wantErr: "took longer than 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}
			client, created := fakeKubelet([]runtime.Object{node}, tt.status, tt.late)
			timeout := tt.timeout
			if timeout == 0 {
				timeout = time.Minute
			}
			b := runCreate(ctx, t, &PodRunner{Client: client, Namespace: "dirpv", Image: "img"}, timeout, tt.want, tt.wantErr)
			if created.Load() != 1 {
				t.Errorf("%d helper pods created, want 1", created.Load())
			}
			b.draining.Wait() // a caller that gave up does not wait for its pod's deletion
			pods, _ := client.CoreV1().Pods("dirpv").List(ctx, metav1.ListOptions{})
			if len(pods.Items) != 0 {
				t.Errorf("helper pod left behind: %s", pods.Items[0].Name)
			}
		})
	}
}

// TestRunReadsLog: the outcomes are taken from the helper container's log when it ends with
// them, complete, while the pod's end is not posted; a log that does not is ignored, and the
// status is waited for (posted here once the log was read twice, so the log had its chance).
func TestRunReadsLog(t *testing.T) {
	const fromStatus = `[{"archive":"from-status"}]`
	tests := []struct {
		name    string
		logs    []string      // one per read of the log; "" refuses it (not started); the last repeats
		status  *v1.PodStatus // posted at the second read of the log
		want    volumeop.Result
		wantErr string
	}{
		{name: "outcomes in the log, the pod's end not posted", logs: []string{"a line of the helper's own\n" + `[{"archive":"from-log"}]` + "\n"},
			want: volumeop.Result{Archive: "from-log"}},
		{name: "refused until the container starts", logs: []string{"", `[{"archive":"from-log"}]` + "\n"},
			want: volumeop.Result{Archive: "from-log"}},
		{name: "an operation's error names the node's path", logs: []string{`[{"error":"mkdir /data/x: EEXIST"}]` + "\n"},
			wantErr: "helper on node node1 failed: mkdir /var/lib/dirpv/x: EEXIST"},
		{name: "a line cut short is not taken", logs: []string{`[{"archive":"from-log"}]`},
			status: terminated(v1.PodSucceeded, 0, fromStatus), want: volumeop.Result{Archive: "from-status"}},
		{name: "outcomes not on the last line are not taken", logs: []string{`[{"archive":"from-log"}]` + "\nfatal error\n"},
			status: terminated(v1.PodSucceeded, 0, fromStatus), want: volumeop.Result{Archive: "from-status"}},
		{name: "a helper that failed", logs: []string{"helper: operation 1: unknown operation\n"},
			status: terminated(v1.PodFailed, 2, "helper: operation 1: unknown operation"), wantErr: "helper: operation 1: unknown operation"},
		{name: "outcomes for another number of operations", logs: []string{`[{},{}]` + "\n"},
			status: terminated(v1.PodSucceeded, 0, fromStatus), want: volumeop.Result{Archive: "from-status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}
			client, _ := fakeKubelet([]runtime.Object{node}, nil, false)
			// The status is posted once the runner watches, or the fake's watch could miss it.
			watching := make(chan struct{})
			watched := sync.OnceFunc(func() { close(watching) })
			client.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
				w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
				if err == nil {
					watched()
				}
				return true, w, err
			})
			var reads atomic.Int32
			var from []string
			r := &PodRunner{Client: client, Namespace: "dirpv", Image: "img", Outcomes: func(f string) { from = append(from, f) }, logs: func(ctx context.Context, pod string) (io.ReadCloser, error) {
				n := int(reads.Add(1))
				if n == 2 && tt.status != nil {
					<-watching
					p, err := client.CoreV1().Pods("dirpv").Get(ctx, pod, metav1.GetOptions{})
					if err != nil {
						return nil, err
					}
					p.Status = *tt.status
					if _, err := client.CoreV1().Pods("dirpv").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
						return nil, err
					}
				}
				log := tt.logs[min(n, len(tt.logs))-1]
				if log == "" {
					return nil, errors.New(`container "helper" in pod "` + pod + `" is waiting to start: ContainerCreating`)
				}
				return io.NopCloser(strings.NewReader(log)), nil
			}}
			b := runCreate(ctx, t, r, time.Minute, tt.want, tt.wantErr)
			b.draining.Wait()
			if want := map[bool]string{true: "status", false: "log"}[tt.status != nil]; !slices.Equal(from, []string{want}) {
				t.Errorf("outcomes read from %q, want %q", from, want)
			}
			if pods, _ := client.CoreV1().Pods("dirpv").List(ctx, metav1.ListOptions{}); len(pods.Items) != 0 {
				t.Errorf("helper pod left behind: %s", pods.Items[0].Name)
			}
		})
	}
}

// runCreate runs createOp on node1 in /var/lib/dirpv through r, giving up after timeout as a
// backend does, checks its result against want or wantErr, and returns the batcher it ran in.
func runCreate(ctx context.Context, t *testing.T, r *PodRunner, timeout time.Duration, want volumeop.Result, wantErr string) *Batcher {
	t.Helper()
	b := NewBatcher(r, 64, 0, nil)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("create on node node1 took longer than %v", timeout))
	defer cancel()
	res, err := b.Run(ctx, "node1", "/var/lib/dirpv", createOp)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Run = %+v, %v; want error containing %q", res, err, wantErr)
		}
	} else if err != nil || res != want {
		t.Fatalf("Run = %+v, %v; want %+v", res, err, want)
	}
	return b
}

func TestDeleteLeftovers(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	r := &PodRunner{Namespace: "dirpv", Image: "img"}
	leftover := r.Pod("node1", "/var/lib/dirpv", []volumeop.Op{createOp})
	leftover.Name = "dirpv-create-abcde"
	elsewhere := leftover.DeepCopy()
	elsewhere.Namespace = "team"
	provisioner := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "dirpv-7d9f-x", Namespace: "dirpv",
		Labels: map[string]string{"app.kubernetes.io/name": "dirpv", LabelComponent: "provisioner"}}}
	r.Client = fake.NewClientset(leftover, elsewhere, provisioner)

	n, err := r.DeleteLeftovers(ctx)
	if err != nil || n != 1 {
		t.Fatalf("DeleteLeftovers = %d, %v; want 1 deleted", n, err)
	}
	var left []string
	for _, ns := range []string{"dirpv", "team"} {
		pods, err := r.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			left = append(left, p.Namespace+"/"+p.Name)
		}
	}
	slices.Sort(left)
	if want := []string{"dirpv/dirpv-7d9f-x", "team/dirpv-create-abcde"}; !slices.Equal(left, want) {
		t.Errorf("pods left %v, want %v", left, want)
	}
	if n, err := r.DeleteLeftovers(ctx); err != nil || n != 0 {
		t.Errorf("second DeleteLeftovers = %d, %v; want 0", n, err)
	}
}

func TestNodePaths(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{`ext4 at /data/noquota has no project quotas`, `ext4 at /var/lib/dirpv/noquota has no project quotas`},
		{`tmpfs at /data cannot enforce sizes`, `tmpfs at /var/lib/dirpv cannot enforce sizes`},
		{`open /data: permission denied`, `open /var/lib/dirpv: permission denied`},
		{`create volume "data/x": mkdir /database/x: EEXIST`, `create volume "data/x": mkdir /database/x: EEXIST`},
		{`/data/a and "/data/b"`, `/var/lib/dirpv/a and "/var/lib/dirpv/b"`},
	} {
		if got := nodePaths(tc.msg, "/var/lib/dirpv"); got != tc.want {
			t.Errorf("nodePaths(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}
