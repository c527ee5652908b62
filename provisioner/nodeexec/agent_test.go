package nodeexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// fakeAgents is Agents over a fake clientset whose exec runs a stream in-process (volumeop.Serve)
// that does nothing: a pod's container "starts" at its first exec after started is closed (unless
// its status says it cannot), and each batch's outcomes are an archive named after the pod. An
// agent for which failing says so breaks its stream at its next batch.
type fakeAgents struct {
	*Agents
	client  *fake.Clientset
	started chan struct{}
	deleted chan string
	failing func(pod string) bool
	// holding and cancelled report a batch of an operation of PV "held", which runs until it is
	// cancelled: its pod, then why it ended.
	holding   chan string
	cancelled chan error

	mu     sync.Mutex
	execs  []string          // "POD stream" or "POD N" (a batch of N operations)
	breaks map[string]func() // by pod: breaks its stream
}

func newFakeAgents(t *testing.T, keepAlive time.Duration) *fakeAgents {
	client := fake.NewClientset()
	n := 0
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*v1.Pod)
		n++
		pod.Name = fmt.Sprintf("%s%d", pod.GenerateName, n)
		return false, nil, nil
	})
	f := &fakeAgents{client: client, started: make(chan struct{}), deleted: make(chan string, 10), failing: func(string) bool { return false },
		holding: make(chan string, 1), cancelled: make(chan error, 1), breaks: map[string]func(){}}
	client.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.deleted <- a.(k8stesting.DeleteAction).GetName()
		return false, nil, nil
	})
	// The fake clientset ignores field selectors: a helper pod's list and watch (PodRunner) see
	// only that pod, as they do from an API server. These run under the clientset's lock, so
	// they go to the tracker directly.
	named := func(pod runtime.Object, name string) bool {
		p, ok := pod.(*v1.Pod)
		return ok && (name == "" || p.Name == name)
	}
	client.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name, _ := a.(k8stesting.ListAction).GetListRestrictions().Fields.RequiresExactMatch("metadata.name")
		list, err := client.Tracker().List(a.GetResource(), v1.SchemeGroupVersion.WithKind("Pod"), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		pods := list.(*v1.PodList)
		pods.Items = slices.DeleteFunc(pods.Items, func(p v1.Pod) bool { return !named(&p, name) })
		return true, pods, nil
	})
	client.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		name, _ := a.(k8stesting.WatchAction).GetWatchRestrictions().Fields.RequiresExactMatch("metadata.name")
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		return true, watch.Filter(w, func(e watch.Event) (watch.Event, bool) { return e, named(e.Object, name) }), nil
	})
	f.Agents = &Agents{
		Pods: &PodRunner{Client: client, Namespace: "dirpv", Image: "img"}, KeepAlive: keepAlive, StartTimeout: time.Minute,
		Exec: func(ctx context.Context, pod string, cmd []string, stdin io.Reader, stdout io.Writer) error {
			if !slices.Equal(cmd, streamCommand) {
				return fmt.Errorf("exec of %q", cmd)
			}
			select {
			case <-f.started:
			default:
				return errors.New(`container not found ("helper")`)
			}
			if p, err := f.client.CoreV1().Pods("dirpv").Get(ctx, pod, metav1.GetOptions{}); err == nil && stuck(p) != nil {
				return errors.New(`container not found ("helper")`) // its container cannot start
			}
			f.record(pod + " stream")
			broken := make(chan struct{})
			var breaking sync.Once
			f.mu.Lock()
			f.breaks[pod] = func() { breaking.Do(func() { close(broken) }) }
			f.mu.Unlock()
			served := make(chan error, 1)
			go func() {
				served <- volumeop.Serve(ctx, stdin, stdout, func(ctx context.Context, ops []volumeop.Op) []volumeop.Outcome {
					if f.failing(pod) {
						breaking.Do(func() { close(broken) })
						<-ctx.Done() // no reply: the stream breaks first
					}
					if ops[0].Owner.PV == "held" {
						f.holding <- pod
						<-ctx.Done() // until its caller cancels it
						f.cancelled <- context.Cause(ctx)
					}
					f.record(fmt.Sprintf("%s %d", pod, len(ops)))
					outs := make([]volumeop.Outcome, len(ops))
					for i := range outs {
						outs[i].Archive = pod
					}
					return outs
				})
			}()
			select {
			case err := <-served:
				return err
			case <-broken:
				return errors.New("pod gone")
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	return f
}

func (f *fakeAgents) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.execs = append(f.execs, s)
}

func (f *fakeAgents) pods(t *testing.T) []v1.Pod {
	t.Helper()
	list, err := f.client.CoreV1().Pods("dirpv").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (f *fakeAgents) run(ctx context.Context, t *testing.T, ops ...volumeop.Op) (string, error) {
	t.Helper()
	outs, err := f.Run(ctx, "node1", "/var/lib/dirpv", ops)
	if err != nil {
		return "", err
	}
	if len(outs) != len(ops) {
		t.Fatalf("%d outcomes for %d operations", len(outs), len(ops))
	}
	return outs[0].Archive, nil
}

// TestAgents: the first batch starts an agent and waits until it runs; later batches run in it,
// with no pod more; it goes KeepAlive after its last batch, and the next batch starts another.
func TestAgents(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFakeAgents(t, time.Hour)
	close(f.started)
	first, err := f.run(ctx, t, createOp, createOp)
	if err != nil || !strings.HasPrefix(first, "dirpv-agent-") {
		t.Fatalf("first batch ran in %q, %v", first, err)
	}
	second, err := f.run(ctx, t, createOp)
	if err != nil || second != first {
		t.Fatalf("second batch ran in %q, %v; want the agent %s", second, err, first)
	}
	pods := f.pods(t)
	if len(pods) != 1 || pods[0].Spec.Containers[0].Args[1] != "--serve" || pods[0].Spec.NodeName != "node1" {
		t.Fatalf("pods %+v, want one agent on node1", pods)
	}
	if mem := pods[0].Spec.Containers[0].Resources.Limits[v1.ResourceMemory]; mem.String() != "256Mi" {
		t.Errorf("agent's memory limit %s, want 256Mi: its batches run side by side", mem.String())
	}
	if mp := pods[0].Spec.Containers[0].VolumeMounts[0].MountPropagation; mp == nil || *mp != v1.MountPropagationHostToContainer {
		t.Errorf("agent's mount propagation %v, want HostToContainer: it must see what its node mounts later", mp)
	}
	if got, want := f.execs, []string{first + " stream", first + " 2", first + " 1"}; !slices.Equal(got, want) {
		t.Errorf("execs %q, want %q", got, want)
	}
	// The pod says which batch it ran last, and its operations.
	if a := pods[0].Annotations; a[AnnBatch] != "2" || a[AnnOperations] != "create pvc-1" || a[AnnAgent] != "directories" {
		t.Errorf("agent's annotations %v, want its second batch's record", a)
	}

	// Operations on limits get an agent of their own, with CAP_SYS_ADMIN.
	limited := createOp
	limited.Limit = 1 << 20
	admin, err := f.run(ctx, t, limited)
	if err != nil || admin == first {
		t.Fatalf("an operation on limits ran in %q, %v", admin, err)
	}
	for _, p := range f.pods(t) {
		if got := slices.Contains(p.Spec.Containers[0].SecurityContext.Capabilities.Add, "SYS_ADMIN"); got != (p.Name == admin) {
			t.Errorf("pod %s has SYS_ADMIN: %v", p.Name, got)
		}
	}

	// Idle for KeepAlive: deleted. Here, as if its time were up.
	f.KeepAlive = 0
	third, err := f.run(ctx, t, createOp)
	if err != nil || third != first {
		t.Fatalf("third batch ran in %q, %v", third, err)
	}
	if gone := <-f.deleted; gone != first {
		t.Fatalf("deleted %s, want the idle agent %s", gone, first)
	}
	fourth, err := f.run(ctx, t, createOp)
	if err != nil || fourth == first {
		t.Fatalf("a batch after the agent went ran in %q, %v; want a new agent", fourth, err)
	}
}

// TestAgentFails: a stream that breaks fails the batch that waits on it and deletes its agent;
// the next batch starts another agent.
func TestAgentFails(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFakeAgents(t, time.Hour)
	close(f.started)
	first, err := f.run(ctx, t, createOp)
	if err != nil {
		t.Fatal(err)
	}
	f.failing = func(pod string) bool { return pod == first }
	if _, err := f.run(ctx, t, createOp); err == nil || !strings.Contains(err.Error(), "pod gone") || !strings.Contains(err.Error(), first) {
		t.Fatalf("batch in a failing agent: %v", err)
	}
	if gone := <-f.deleted; gone != first {
		t.Fatalf("deleted %s, want the failed agent %s", gone, first)
	}
	next, err := f.run(ctx, t, createOp)
	if err != nil || next == first {
		t.Fatalf("next batch ran in %q, %v; want a new agent", next, err)
	}
	// A stream that breaks while its agent is idle deletes the agent at once, and the next batch
	// runs in a new one.
	f.mu.Lock()
	f.breaks[next]()
	f.mu.Unlock()
	if gone := <-f.deleted; gone != next {
		t.Fatalf("deleted %s, want the idle agent whose stream broke, %s", gone, next)
	}
	if last, err := f.run(ctx, t, createOp); err != nil || last == next || last == first {
		t.Fatalf("batch after the stream broke ran in %q, %v; want a new agent", last, err)
	}
}

// TestAgentCancel: a batch whose callers all gave up is cancelled in its agent, so that it starts
// none of its operations that have not started; the agent stays, and runs the next batch.
func TestAgentCancel(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFakeAgents(t, time.Hour)
	close(f.started)
	held := createOp
	held.Owner.PV = "held"
	short, cancel := context.WithCancel(ctx)
	failed := make(chan error, 1)
	go func() {
		_, err := f.Run(short, "node1", "/var/lib/dirpv", []volumeop.Op{held})
		failed <- err
	}()
	pod := <-f.holding
	cancel()
	if err := <-failed; !errors.Is(err, context.Canceled) {
		t.Fatalf("batch whose caller gave up: %v", err)
	}
	select {
	case why := <-f.cancelled:
		if why == nil || !strings.Contains(why.Error(), "gave up") {
			t.Errorf("the batch in the agent ended by %v, want its caller's cancel", why)
		}
	case <-time.After(time.Minute):
		t.Fatal("the batch still runs in the agent a minute after its caller gave up")
	}
	if next, err := f.run(ctx, t, createOp); err != nil || next != pod {
		t.Fatalf("next batch ran in %q, %v; want the agent %s", next, err, pod)
	}
}

// TestAgentNotShared: where the runtime refuses an agent because the root is not a shared mount,
// the batch runs in a helper pod of its own, as do the node's later batches, with no agent tried
// again until retryAgent has passed; other nodes keep their agents.
func TestAgentNotShared(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFakeAgents(t, time.Hour)
	close(f.started)
	created := map[string]int{} // by GenerateName
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*v1.Pod)
		created[pod.GenerateName]++
		switch {
		case pod.Spec.NodeName != "private":
		case pod.GenerateName == "dirpv-agent-":
			pod.Status = v1.PodStatus{Phase: v1.PodPending, ContainerStatuses: []v1.ContainerStatus{{
				Name: helperContainer, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerError",
					Message: `failed to generate container spec: path "/var/lib/dirpv" is mounted on "/" but it is not a shared or slave mount`}},
			}}}
		default:
			pod.Status = *terminated(v1.PodSucceeded, 0, `[{"archive":"own pod"}]`)
		}
		return false, nil, nil
	})
	for i := range 2 {
		outs, err := f.Run(ctx, "private", "/var/lib/dirpv", []volumeop.Op{createOp})
		if err != nil || len(outs) != 1 || outs[0].Archive != "own pod" {
			t.Fatalf("batch %d on a node without shared mounts: %+v, %v; want it run in a pod of its own", i, outs, err)
		}
	}
	if created["dirpv-agent-"] != 1 || created["dirpv-create-"] != 2 {
		t.Errorf("pods created %v, want one agent tried, then a pod per batch", created)
	}
	if gone := <-f.deleted; !strings.HasPrefix(gone, "dirpv-agent-") {
		t.Errorf("deleted %s, want the agent that could not start", gone)
	}
	// Once retryAgent has passed (here, as if it had), an agent is tried again.
	f.Agents.mu.Lock()
	f.podsOnly[agentKey{node: "private", root: "/var/lib/dirpv"}] = time.Now().Add(-retryAgent)
	f.Agents.mu.Unlock()
	if outs, err := f.Run(ctx, "private", "/var/lib/dirpv", []volumeop.Op{createOp}); err != nil || outs[0].Archive != "own pod" {
		t.Fatalf("batch after the retry: %+v, %v; want it run in a pod of its own", outs, err)
	}
	if created["dirpv-agent-"] != 2 || created["dirpv-create-"] != 3 {
		t.Errorf("pods created %v, want a second agent tried after retryAgent", created)
	}
	if name, err := f.run(ctx, t, createOp); err != nil || !strings.HasPrefix(name, "dirpv-agent-") {
		t.Errorf("a batch on another node ran in %q, %v; want an agent", name, err)
	}
}

// TestAgentStarting: batches that arrive while the agent starts wait for it, and give up with
// their context; the agent starts all the same and serves the next batch.
func TestAgentStarting(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFakeAgents(t, time.Hour)
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.run(short, t, createOp); !errors.Is(err, context.Canceled) {
		t.Fatalf("batch whose caller gave up: %v", err)
	}
	close(f.started)
	name, err := f.run(ctx, t, createOp)
	if err != nil || len(f.pods(t)) != 1 || name != f.pods(t)[0].Name {
		t.Fatalf("batch ran in %q, %v; pods %d", name, err, len(f.pods(t)))
	}
}

// TestAgentCannotStart: an agent whose pod cannot start fails its batches with why, at once, and
// is deleted.
func TestAgentCannotStart(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newFakeAgents(t, time.Hour)
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*v1.Pod)
		pod.Status = v1.PodStatus{Phase: v1.PodPending, ContainerStatuses: []v1.ContainerStatus{{
			Name: helperContainer, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}},
		}}}
		return false, nil, nil
	})
	_, err := f.run(ctx, t, createOp)
	if err == nil || !strings.Contains(err.Error(), "cannot start: ErrImagePull: not found") {
		t.Fatalf("batch in an agent that cannot start: %v", err)
	}
	if gone := <-f.deleted; !strings.HasPrefix(gone, "dirpv-agent-") {
		t.Errorf("deleted %s, want the agent", gone)
	}
}
