// Package nodeexec is how dirpv's work reaches a node: it runs volume operations (package
// volumeop) in --hostpath-root of a node, and chooses how.
//
//   - batch.go: a Batcher gathers each node's operations into batches, in lanes that keep short
//     operations clear of tree walks and operations on limits apart.
//   - helperpod.go: a PodRunner runs a batch in a helper pod of its own (dirpv's image,
//     `dirpv helper OP...`) and reads its outcomes from its log or its status.
//   - agent.go, stream.go: Agents run batches in a helper pod per node that stays, through one exec stream
//     (`dirpv helper --stream`, served by volumeop.Serve), falling back to a pod per batch where
//     the node's root is not a shared mount.
//   - this file: the Transport that puts them together, and runs in-process where dirpv has the
//     node's root mounted (--local-root).
//
// The other end of the wire, what runs on the node, is volumeop (RunBatch, Serve) and
// `dirpv helper` in cmd/dirpv.
package nodeexec

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Runner runs one operation on node, its path relative to root there.
type Runner interface {
	Run(ctx context.Context, node, root string, op volumeop.Op) (volumeop.Result, error)
}

// Transport runs operations on nodes: in-process on the node whose root this process has
// mounted (--local-root), and otherwise in batches, in helper pods or agents.
type Transport struct {
	batcher *Batcher
	pods    *PodRunner
	// localRoot and localNode: see config.Options.LocalRoot and NodeName.
	localRoot, localNode string
}

var _ Runner = (*Transport)(nil)

// Pods are where helper pods go and what they run.
type Pods struct {
	Client    kubernetes.Interface
	Namespace string
	Image     string
	// PullPolicy is the image's pull policy; IfNotPresent when empty.
	PullPolicy v1.PullPolicy
	// Owner, when set, is the controller of every helper pod (see PodRunner.Owner).
	Owner *metav1.OwnerReference
}

// New returns the transport opts configure: agents when --helper-keep-alive is set, a helper
// pod per batch otherwise. cfg reaches the agents' exec; reg, when set, gets the transport's
// metrics.
func New(cfg *rest.Config, pods Pods, opts *config.Options, reg prometheus.Registerer) *Transport {
	m := newMetrics(reg)
	runner := &PodRunner{Client: pods.Client, Namespace: pods.Namespace, Image: pods.Image,
		PullPolicy: pods.PullPolicy, Owner: pods.Owner, Outcomes: m.outcome}
	if runner.PullPolicy == "" {
		runner.PullPolicy = v1.PullIfNotPresent
	}
	var batches BatchRunner = runner
	if opts.HelperKeepAlive > 0 {
		batches = &Agents{Pods: runner, Exec: PodExec(cfg, pods.Client, pods.Namespace),
			KeepAlive: opts.HelperKeepAlive, StartTimeout: opts.OperationTimeout}
	}
	return &Transport{
		batcher:   NewBatcher(batches, opts.HelperBatchSize, opts.HelperBatchWait, m.batch),
		pods:      runner,
		localRoot: opts.LocalRoot, localNode: opts.NodeName,
	}
}

// Run implements Runner.
func (t *Transport) Run(ctx context.Context, node, root string, op volumeop.Op) (volumeop.Result, error) {
	// Operations on limits need CAP_SYS_ADMIN: they run in helper pods of their own even here,
	// rather than dirpv's long-running container, which holds API credentials, having it.
	if t.localRoot != "" && (t.localNode == "" || t.localNode == node) && !op.NeedsAdmin() {
		return volumeop.RunLocal(ctx, t.localRoot, op)
	}
	return t.batcher.Run(ctx, node, root, op)
}

// StartTerm deletes the helper pods a previous leader left, as a leader's term begins.
func (t *Transport) StartTerm(ctx context.Context) {
	logger := klog.FromContext(ctx)
	if n, err := t.pods.DeleteLeftovers(ctx); err != nil {
		logger.Error(err, "Deleting helper pods left by a previous leader")
	} else if n > 0 {
		logger.Info("Deleted helper pods left by a previous leader", "count", n)
	}
}

// HelperPods returns what helper pods run and who owns them: this pod's (--pod-name) dirpv
// container's image, so helper pods run exactly the same build even when an operator renamed the
// image with kustomize, unless --helper-image names one; and this pod, their controller. With no
// --pod-name, --helper-image (config.Options.Validate requires one of them) and no owner.
func HelperPods(ctx context.Context, client kubernetes.Interface, opts *config.Options) (Pods, error) {
	namespace, podName := opts.Namespace, opts.PodName
	p := Pods{Client: client, Namespace: namespace, Image: opts.HelperImage, PullPolicy: v1.PullIfNotPresent}
	if podName == "" {
		return p, nil
	}
	pod, err := client.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return Pods{}, fmt.Errorf("reading own pod %s/%s (its helper pods' image and owner): %w", namespace, podName, err)
	}
	// No blockOwnerDeletion: it needs the right to update this pod's finalizers.
	p.Owner = &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true)}
	if opts.HelperImage != "" {
		return p, nil
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "dirpv" {
			p.Image, p.PullPolicy = c.Image, c.ImagePullPolicy
			return p, nil
		}
	}
	return Pods{}, fmt.Errorf("own pod %s/%s has no container named dirpv (or set --helper-image)", pod.Namespace, pod.Name)
}

// metrics are the transport's: how full its batches are, and where helper pods' outcomes were
// read from.
type metrics struct {
	batches  prometheus.Histogram
	outcomes *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "dirpv", Name: "helper_pod_operations",
			Help:    "Operations in each batch run in a helper pod of its own or in an agent (its count is the batches).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dirpv", Name: "helper_pod_outcomes_total",
			Help: "Helper pods whose outcomes were read, from the container's log (before the kubelet posted the pod's end) or from the pod's status.",
		}, []string{"from"}),
	}
	if reg != nil {
		reg.MustRegister(m.batches, m.outcomes)
	}
	return m
}

func (m *metrics) batch(ops int)       { m.batches.Observe(float64(ops)) }
func (m *metrics) outcome(from string) { m.outcomes.WithLabelValues(from).Inc() }
