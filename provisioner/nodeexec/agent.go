package nodeexec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// Agents runs each batch of operations in a helper pod that stays: an agent, one per node, root
// and privilege (operations on limits get an agent of their own, with CAP_SYS_ADMIN). The first
// batch for a node starts its agent, and one exec into it, `dirpv helper --stream`, that lasts
// as long as the agent: each batch is a line written to it and its outcomes a line read back, so
// a batch waits for no pod to start, no pod status and no process to start, which on a busy node
// take seconds each. An agent is deleted KeepAlive after its last batch ended, and replaced when
// its stream breaks. The agent is the same pod as a one-batch helper (Pod), its operations come
// through the stream instead of its arguments.
type Agents struct {
	Pods *PodRunner
	// Exec runs cmd in the helper container of the pod called name, stdin its input and stdout
	// its output, until it ends or ctx does: PodExec, or a fake in tests.
	Exec      func(ctx context.Context, name string, cmd []string, stdin io.Reader, stdout io.Writer) error
	KeepAlive time.Duration
	// StartTimeout bounds how long an agent may take to start.
	StartTimeout time.Duration

	mu     sync.Mutex
	agents map[agentKey]*agent
	// podsOnly holds, for each node and root where an agent could not run (see errNotShared),
	// when that was found: their batches run in a pod each until retryAgent has passed.
	podsOnly map[agentKey]time.Time
}

// errNotShared: the container runtime refused an agent because --hostpath-root is not on a
// shared mount, which HostToContainer propagation needs. A helper pod per batch needs no
// propagation (it sees the node's mounts at its start), so such a node's batches run that way.
var errNotShared = errors.New("not a shared mount")

// notShared is how containerd (and Docker) word it, in the container's waiting message.
const notShared = "is not a shared or slave mount"

// retryAgent is how long a node whose root was not a shared mount runs its batches in a pod
// each before an agent is tried again: an operator may have made it one since.
const retryAgent = 10 * time.Minute

type agentKey struct {
	node, root string
	admin      bool
}

type agent struct {
	ready   chan struct{} // closed once its stream is ready (name, stream) or it could not start (err)
	name    string
	stream  *stream
	err     error
	stop    context.CancelFunc // ends its start and its stream
	users   int
	batches int // run in it so far
	idle    *time.Timer
	retired bool
}

// streamCommand is the exec into an agent that runs its batches.
var streamCommand = []string{"/dirpv", "helper", "--root=" + HelperMountPath, "--stream"}

// Run implements BatchRunner: it runs ops in the agent of node, root and their privilege, or, on
// a node where no agent could run lately (errNotShared), in a pod of their own.
func (a *Agents) Run(ctx context.Context, node, root string, ops []volumeop.Op) ([]volumeop.Outcome, error) {
	key := agentKey{node: node, root: root, admin: slices.ContainsFunc(ops, volumeop.Op.NeedsAdmin)}
	a.mu.Lock()
	agentless := a.agentless(node, root)
	a.mu.Unlock()
	if agentless {
		return a.Pods.Run(ctx, node, root, ops)
	}
	ag := a.acquire(ctx, key)
	defer a.release(key, ag)
	select {
	case <-ag.ready:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if errors.Is(ag.err, errNotShared) {
		a.retire(key, ag)
		a.podsFrom(ctx, node, root, ag.err)
		return a.Pods.Run(ctx, node, root, ops)
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
	reply, err := ag.stream.call(ctx, volumeop.BatchArgs(ops))
	recorded.Wait()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			a.retire(key, ag) // its stream is gone: the next batch starts another agent
		}
	case reply.Error != "":
		err = fmt.Errorf("batch refused: %s", reply.Error)
	case len(reply.Outcomes) != len(ops):
		err = fmt.Errorf("%d outcomes for %d operations", len(reply.Outcomes), len(ops))
	}
	if err != nil {
		return nil, fmt.Errorf("helper pod %s/%s on node %s: %w", a.Pods.Namespace, ag.name, node, err)
	}
	return fromNode(reply.Outcomes, root), nil
}

// podsFrom has the batches for node and root run in a pod each for retryAgent, as err says no
// agent can run there.
func (a *Agents) podsFrom(ctx context.Context, node, root string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agentless(node, root) {
		return // said already, by a batch that waited for the same agent
	}
	if a.podsOnly == nil {
		a.podsOnly = map[agentKey]time.Time{}
	}
	a.podsOnly[agentKey{node: node, root: root}] = time.Now()
	klog.FromContext(ctx).Error(err, "No helper agent can run on this node: a helper pod per batch instead, which is slower. Make the root a shared mount to have agents", "node", node, "root", root, "retryAfter", retryAgent)
}

// agentless tells whether an agent for node and root could not run less than retryAgent ago;
// a.mu is held.
func (a *Agents) agentless(node, root string) bool {
	since, ok := a.podsOnly[agentKey{node: node, root: root}]
	return ok && time.Since(since) < retryAgent
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

// acquire returns the agent of key, started if there is none, with one user more.
func (a *Agents) acquire(ctx context.Context, key agentKey) *agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agents == nil {
		a.agents = map[agentKey]*agent{}
	}
	ag := a.agents[key]
	if ag == nil {
		// The agent and its stream outlive the batch that starts them.
		life, stop := context.WithCancel(context.WithoutCancel(ctx))
		ag = &agent{ready: make(chan struct{}), stop: stop}
		a.agents[key] = ag
		go a.start(life, key, ag)
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

// start creates the agent's pod and opens its stream, within StartTimeout; the stream lasts
// as long as life.
func (a *Agents) start(life context.Context, key agentKey, ag *agent) {
	defer close(ag.ready)
	ctx, cancel := context.WithTimeout(life, a.StartTimeout)
	defer cancel()
	pods := a.Pods.Client.CoreV1().Pods(a.Pods.Namespace)
	spec := a.Pods.pod(key.node, key.root, "dirpv-agent-", []string{"helper", "--serve"}, key.admin)
	spec.Annotations = map[string]string{AnnAgent: map[bool]string{true: "limits", false: "directories"}[key.admin]}
	c := &spec.Spec.Containers[0]
	// Up to two batches of each of its lanes run in it side by side.
	c.Resources.Limits[v1.ResourceMemory] = resource.MustParse("256Mi")
	// It outlives the mounts of its node at its start: a filesystem mounted below root later
	// (a class's new disk) must reach it, or it would make volumes in the directory beneath.
	c.VolumeMounts[0].MountPropagation = ptr.To(v1.MountPropagationHostToContainer)
	pod, err := pods.Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		ag.err = fmt.Errorf("creating helper pod on node %s: %w", key.node, err)
		return
	}
	ag.name = pod.Name
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(pod), "node", key.node)
	// The kubelet runs an exec once it has started the container, before it posts that it has.
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		ag.stream, err = a.open(life, ctx, ag.name)
		if err == nil {
			logger.V(4).Info("Helper agent started")
			// A stream that breaks (the pod evicted, the kubelet restarted) ends its agent now,
			// rather than failing the next batch.
			go func() {
				<-ag.stream.ended
				a.retire(key, ag)
			}()
			return
		}
		// A pod that cannot start says so in its status: no need to wait for StartTimeout.
		if p, gerr := pods.Get(ctx, ag.name, metav1.GetOptions{}); gerr == nil {
			serr := stuck(p)
			if serr == nil && (p.Status.Phase == v1.PodFailed || p.Status.Phase == v1.PodSucceeded) {
				serr = fmt.Errorf("ended %s", p.Status.Phase)
			}
			if serr != nil && strings.Contains(serr.Error(), notShared) {
				serr = fmt.Errorf("%w: %w", errNotShared, serr)
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
