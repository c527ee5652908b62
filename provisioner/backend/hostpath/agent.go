package hostpath

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// Agents runs each batch of operations with an exec into a helper pod that stays: an agent,
// one per node, root and privilege (operations on limits get an agent of their own, with
// CAP_SYS_ADMIN). The first batch for a node starts its agent; later ones run in it at once,
// with no pod to start and no pod status to wait for, which on a busy node take many seconds
// each. An agent is deleted KeepAlive after its last batch ended, and replaced when an exec into
// it fails. The agent is the same pod as a one-batch helper (Pod), its operations come with each
// exec instead of its arguments.
type Agents struct {
	Pods *PodRunner
	// Exec runs cmd in the helper container of the pod called name, its output to stdout: PodExec,
	// or a fake in tests.
	Exec      func(ctx context.Context, name string, cmd []string, stdout io.Writer) error
	KeepAlive time.Duration
	// StartTimeout bounds how long an agent may take to start.
	StartTimeout time.Duration

	mu     sync.Mutex
	agents map[agentKey]*agent
}

type agentKey struct {
	node, root string
	admin      bool
}

type agent struct {
	ready   chan struct{} // closed once the agent runs (name) or could not start (err)
	name    string
	err     error
	stop    context.CancelFunc // ends its start
	users   int
	batches int // run in it so far
	idle    *time.Timer
	retired bool
}

// Run implements BatchRunner: it runs ops in the agent of node, root and their privilege.
func (a *Agents) Run(ctx context.Context, node, root string, ops []volumeop.Op) ([]volumeop.Outcome, error) {
	key := agentKey{node: node, root: root, admin: slices.ContainsFunc(ops, volumeop.Op.NeedsAdmin)}
	ag := a.acquire(ctx, key)
	defer a.release(key, ag)
	select {
	case <-ag.ready:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if ag.err != nil {
		a.retire(key, ag)
		return nil, ag.err
	}
	a.mu.Lock()
	ag.batches++
	batch := ag.batches
	a.mu.Unlock()
	// The pod says what it runs, as a one-batch helper pod does; written while the batch runs.
	var recorded sync.WaitGroup
	recorded.Go(func() { a.record(ctx, ag.name, batch, ops) })
	var out bytes.Buffer
	err := a.Exec(ctx, ag.name, execCommand(ops), &out)
	recorded.Wait()
	if err != nil {
		if ctx.Err() == nil {
			a.retire(key, ag) // it may be gone: the next batch starts another
		}
		return nil, fmt.Errorf("helper pod %s/%s on node %s: %w", a.Pods.Namespace, ag.name, node, err)
	}
	return lastLine(out.Bytes(), len(ops), node, root)
}

// record writes batch, its number in the agent called name, on the agent's pod: AnnOperations
// and AnnBatch. A failure costs only the record.
func (a *Agents) record(ctx context.Context, name string, batch int, ops []volumeop.Op) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		AnnOperations: operationList(ops), AnnBatch: strconv.Itoa(batch)}}})
	if err == nil {
		_, err = a.Pods.Client.CoreV1().Pods(a.Pods.Namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	}
	if err != nil {
		klog.FromContext(ctx).Error(err, "Recording a batch on its helper agent", "pod", klog.KRef(a.Pods.Namespace, name), "batch", batch)
	}
}

// execCommand is the command an exec into an agent runs for ops: the helper, as a one-batch
// helper pod runs it; with no operation, a check that it runs.
func execCommand(ops []volumeop.Op) []string {
	return append([]string{"/dirpv", "helper", "--root=" + HelperMountPath, "--termination-log=/dev/null"}, volumeop.BatchArgs(ops)...)
}

// acquire returns the agent of key, started if there is none, with one user more.
func (a *Agents) acquire(ctx context.Context, key agentKey) *agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agents == nil {
		a.agents = map[agentKey]*agent{}
	}
	ag := a.agents[key]
	if ag == nil {
		// The agent outlives the batch that starts it.
		startCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), a.StartTimeout)
		ag = &agent{ready: make(chan struct{}), stop: stop}
		a.agents[key] = ag
		go a.start(startCtx, key, ag)
	}
	ag.users++
	if ag.idle != nil {
		ag.idle.Stop()
		ag.idle = nil
	}
	return ag
}

// release drops a user of ag; the last one leaves it KeepAlive to live.
func (a *Agents) release(key agentKey, ag *agent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ag.users--; ag.users > 0 || ag.retired {
		return
	}
	var idle *time.Timer
	idle = time.AfterFunc(a.KeepAlive, func() {
		a.mu.Lock()
		expired := ag.idle == idle && ag.users == 0
		a.mu.Unlock()
		if expired {
			a.retire(key, ag)
		}
	})
	ag.idle = idle
}

// retire forgets ag and deletes its pod; batches still running in it fail and are retried.
func (a *Agents) retire(key agentKey, ag *agent) {
	a.mu.Lock()
	if ag.retired {
		a.mu.Unlock()
		return
	}
	ag.retired = true
	if a.agents[key] == ag {
		delete(a.agents, key)
	}
	a.mu.Unlock()
	ag.stop()
	go func() {
		<-ag.ready
		if ag.name == "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := a.Pods.Client.CoreV1().Pods(a.Pods.Namespace).Delete(ctx, ag.name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		if err != nil {
			klog.Background().Error(err, "Deleting helper pod", "pod", klog.KRef(a.Pods.Namespace, ag.name))
		}
	}()
}

// start creates the agent's pod and waits until an exec into it works.
func (a *Agents) start(ctx context.Context, key agentKey, ag *agent) {
	defer close(ag.ready)
	pods := a.Pods.Client.CoreV1().Pods(a.Pods.Namespace)
	spec := a.Pods.pod(key.node, key.root, "dirpv-agent-", []string{"helper", "--serve"}, key.admin)
	spec.Annotations = map[string]string{AnnAgent: map[bool]string{true: "limits", false: "directories"}[key.admin]}
	// Up to podsPerLane batches of each of two lanes run in it side by side, each a process.
	spec.Spec.Containers[0].Resources.Limits[v1.ResourceMemory] = resource.MustParse("256Mi")
	pod, err := pods.Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		ag.err = fmt.Errorf("creating helper pod on node %s: %w", key.node, err)
		return
	}
	ag.name = pod.Name
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(pod), "node", key.node)
	// The kubelet runs an exec once it has started the container, before it posts that it has.
	ping := execCommand(nil)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err = a.Exec(ctx, ag.name, ping, io.Discard)
		if err == nil {
			logger.V(4).Info("Helper agent started")
			return
		}
		// A pod that cannot start says so in its status: no need to wait for StartTimeout.
		if p, gerr := pods.Get(ctx, ag.name, metav1.GetOptions{}); gerr == nil {
			serr := stuck(p)
			if serr == nil && (p.Status.Phase == v1.PodFailed || p.Status.Phase == v1.PodSucceeded) {
				serr = fmt.Errorf("ended %s", p.Status.Phase)
			}
			if serr != nil {
				ag.err = fmt.Errorf("helper pod %s/%s on node %s: %w", a.Pods.Namespace, ag.name, key.node, serr)
				return
			}
		}
		select {
		case <-ctx.Done():
			ag.err = fmt.Errorf("helper pod %s/%s on node %s did not start: %w (%v)", a.Pods.Namespace, ag.name, key.node, context.Cause(ctx), err)
			return
		case <-time.After(wait):
		}
	}
}

// PodExec returns an Exec for the helper container of pods in namespace, through the API
// server as `kubectl exec` does (WebSocket, or SPDY from servers without it).
func PodExec(cfg *rest.Config, client kubernetes.Interface, namespace string) func(ctx context.Context, name string, cmd []string, stdout io.Writer) error {
	return func(ctx context.Context, name string, cmd []string, stdout io.Writer) error {
		req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(name).SubResource("exec").
			VersionedParams(&v1.PodExecOptions{Container: helperContainer, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
		ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
		if err != nil {
			return err
		}
		spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
		if err != nil {
			return err
		}
		exec, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
		if err != nil {
			return err
		}
		var stderr bytes.Buffer
		if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: stdout, Stderr: &stderr}); err != nil {
			if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
				return fmt.Errorf("%w: %s", err, msg)
			}
			return err
		}
		return nil
	}
}
