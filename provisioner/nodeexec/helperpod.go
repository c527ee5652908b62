package nodeexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// Helper pod layout.
const (
	HelperMountPath = "/data"
	helperContainer = "helper"
	LabelComponent  = "app.kubernetes.io/component"
	ComponentHelper = "helper"
	// AnnOperations lists a helper pod's operations, one "KIND PV" per line.
	AnnOperations = "dirpv.io/operations"
	// AnnAgent marks a helper pod that stays and runs batches through a stream
	// (--helper-keep-alive): "limits" for operations on limits (with CAP_SYS_ADMIN),
	// "directories" for the others.
	// AnnOperations is then its latest batch's, and AnnBatch that batch's number (from 1).
	AnnAgent = "dirpv.io/agent"
	AnnBatch = "dirpv.io/batch"
)

// PodRunner runs a batch of volume operations in a helper pod on a node and waits for it with a
// watch, and reads its outcomes from its container's log or its status, whichever has them first.
type PodRunner struct {
	Client     kubernetes.Interface
	Namespace  string
	Image      string
	PullPolicy v1.PullPolicy
	// Owner, when set, is the controller of every helper pod: dirpv's own pod. The garbage
	// collector then deletes the pods of a replica that is gone, and kubectl drain evicts them
	// as it does any managed pod (it refuses, without --force, a pod with no controller).
	Owner *metav1.OwnerReference
	// Outcomes, when set, is called with where each pod's outcomes were read from: "log" or
	// "status".
	Outcomes func(from string)
	// logs, in tests, stands in for the API server's pods/log (followed): see readLog.
	logs func(ctx context.Context, pod string) (io.ReadCloser, error)
}

// Pod builds the helper pod for ops on node: dirpv's own image, no shell, only root (the
// node's --hostpath-root, which every class's basePath lies within) mounted, and root with
// just the capabilities that mkdir, chown, chmod and delete of tenant files need, and
// CAP_SYS_ADMIN as well when they set, clear or read limits (quotactl and btrfs qgroups). It mounts
// root rather than the class's basePath because the checks for volumes nested in other
// volumes look at every directory from root down to the volume.
func (r *PodRunner) Pod(node, root string, ops []volumeop.Op) *v1.Pod {
	args := append([]string{"helper", "--root=" + HelperMountPath}, volumeop.BatchArgs(ops)...)
	name := "dirpv-" + string(ops[0].Kind) + "-"
	if slices.ContainsFunc(ops, func(op volumeop.Op) bool { return op.Kind != ops[0].Kind }) {
		name = "dirpv-ops-"
	}
	pod := r.pod(node, root, name, args, slices.ContainsFunc(ops, volumeop.Op.NeedsAdmin))
	pod.Annotations = map[string]string{AnnOperations: operationList(ops)}
	return pod
}

// operationList is AnnOperations for ops: a line "KIND PV" per operation.
func operationList(ops []volumeop.Op) string {
	list := make([]string, len(ops))
	for i, op := range ops {
		list[i] = string(op.Kind) + " " + op.Owner.PV
	}
	return strings.Join(list, "\n")
}

// pod builds a helper pod called name (a prefix) on node, with root mounted, running dirpv
// with args; admin adds CAP_SYS_ADMIN.
func (r *PodRunner) pod(node, root, name string, args []string, admin bool) *v1.Pod {
	dirOrCreate := v1.HostPathDirectoryOrCreate
	caps := []v1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"}
	if admin {
		caps = append(caps, "SYS_ADMIN")
	}
	var owners []metav1.OwnerReference
	if r.Owner != nil {
		owners = []metav1.OwnerReference{*r.Owner}
	}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    name,
			Namespace:       r.Namespace,
			OwnerReferences: owners,
			Labels: map[string]string{
				"app.kubernetes.io/name": "dirpv",
				LabelComponent:           ComponentHelper,
			},
		},
		Spec: v1.PodSpec{
			NodeName:                     node,
			RestartPolicy:                v1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			// A node under pressure must still get its volumes made and reclaimed.
			Tolerations: []v1.Toleration{
				{Key: v1.TaintNodeDiskPressure, Operator: v1.TolerationOpExists},
				{Key: v1.TaintNodeMemoryPressure, Operator: v1.TolerationOpExists},
				{Key: v1.TaintNodePIDPressure, Operator: v1.TolerationOpExists},
				{Key: v1.TaintNodeUnschedulable, Operator: v1.TolerationOpExists},
				{Key: v1.TaintNodeNetworkUnavailable, Operator: v1.TolerationOpExists},
			},
			SecurityContext: &v1.PodSecurityContext{SeccompProfile: &v1.SeccompProfile{Type: v1.SeccompProfileTypeRuntimeDefault}},
			Volumes: []v1.Volume{{
				Name:         "data",
				VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: root, Type: &dirOrCreate}},
			}},
			Containers: []v1.Container{{
				Name:                     helperContainer,
				Image:                    r.Image,
				ImagePullPolicy:          r.PullPolicy,
				Command:                  []string{"/dirpv"},
				Args:                     args,
				VolumeMounts:             []v1.VolumeMount{{Name: "data", MountPath: HelperMountPath}},
				TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError,
				Resources: v1.ResourceRequirements{
					Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("10m"), v1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("500m"), v1.ResourceMemory: resource.MustParse("128Mi")},
				},
				SecurityContext: &v1.SecurityContext{
					RunAsUser:                ptr.To[int64](0),
					RunAsGroup:               ptr.To[int64](0),
					RunAsNonRoot:             ptr.To(false),
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities: &v1.Capabilities{
						Drop: []v1.Capability{"ALL"},
						Add:  caps,
					},
				},
			}},
		},
	}
}

// helperSelector selects every helper pod in the namespace.
const helperSelector = "app.kubernetes.io/name=dirpv," + LabelComponent + "=" + ComponentHelper

// DeleteLeftovers deletes the helper pods a previous leader left behind (it crashed, or lost
// its Lease, before deleting them), and returns how many. Call it when a term begins, before
// this replica runs helpers of its own: only the leader runs them. A leftover still at work is
// safe to stop, as every operation is idempotent and its volume's claim or PV is retried.
func (r *PodRunner) DeleteLeftovers(ctx context.Context) (int, error) {
	pods := r.Client.CoreV1().Pods(r.Namespace)
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: helperSelector})
	if err != nil {
		return 0, fmt.Errorf("listing helper pods: %w", err)
	}
	n := 0
	var errs []error
	for _, p := range list.Items {
		err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		switch {
		case err == nil:
			n++
		case !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("deleting helper pod %s: %w", p.Name, err))
		}
	}
	return n, errors.Join(errs...)
}

// Run creates a helper pod for ops (packed by volumeop.Pack), waits until it ends (or ctx
// does), returns each operation's outcome and deletes it. An error means no operation has an
// outcome: each may or may not have run.
//
// The outcomes come from the container's log when it has them before the pod's status does: a
// kubelet that is busy posts a pod's end late (seen: 15 s after the helper exited, while the
// node tore down a StatefulSet's pods), but serves a container's log from the node at once.
func (r *PodRunner) Run(ctx context.Context, node, root string, ops []volumeop.Op) ([]volumeop.Outcome, error) {
	logger := klog.FromContext(ctx)
	pods := r.Client.CoreV1().Pods(r.Namespace)
	pod, err := pods.Create(ctx, r.Pod(node, root, ops), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating helper pod on node %s: %w", node, err)
	}
	logger.V(4).Info("Helper pod started", "pod", klog.KObj(pod), "node", node, "operations", len(ops))
	defer func() {
		// The pod is ours alone; delete it even when ctx is already over.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := pods.Delete(dctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			logger.Error(err, "Deleting helper pod", "pod", klog.KObj(pod))
		}
	}()

	// The log's reader and the watch race; the loser stops when Run returns.
	raceCtx, stop := context.WithCancel(ctx)
	defer stop()
	logged, ended := make(chan []volumeop.Outcome, 1), make(chan error, 1)
	go r.readLog(raceCtx, pod, len(ops), logged)
	last := pod // the watch's last view of the pod: read only once ended has its result
	go func() { ended <- r.watch(raceCtx, pod.Name, &last) }()
	select {
	case outs := <-logged:
		logger.V(4).Info("Helper pod's outcomes read from its log", "pod", klog.KObj(pod))
		r.count("log")
		return outs, nil
	case err = <-ended:
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (helper pod %s: %s)", context.Cause(ctx), pod.Name, describe(last))
		}
		return nil, fmt.Errorf("helper pod %s/%s on node %s: %w", r.Namespace, pod.Name, node, err)
	}
	r.count("status")
	return outcomes(last, len(ops))
}

func (r *PodRunner) count(from string) {
	if r.Outcomes != nil {
		r.Outcomes(from)
	}
}

// watch waits until the pod called name has ended, keeping the last view of it in last.
func (r *PodRunner) watch(ctx context.Context, name string, last **v1.Pod) error {
	pods := r.Client.CoreV1().Pods(r.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return pods.List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return pods.Watch(ctx, o)
		},
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &v1.Pod{}, nil, func(e watch.Event) (bool, error) {
		p, ok := e.Object.(*v1.Pod)
		if !ok {
			return false, nil
		}
		*last = p
		if e.Type == watch.Deleted {
			return false, errors.New("helper pod was deleted before it finished")
		}
		if p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			return true, nil
		}
		return false, stuck(p)
	})
	return err
}

// readLog reads the outcomes of the pod's n operations from its container's log (LogOutcomes)
// and sends them to out. Until the container has started the API server refuses the log, and
// until it has ended the log has no outcomes: readLog tries again, at most every two seconds,
// until ctx ends (the pod's status had the outcomes first).
func (r *PodRunner) readLog(ctx context.Context, pod *v1.Pod, n int, out chan<- []volumeop.Outcome) {
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if outs, err := r.LogOutcomes(ctx, pod, n); err == nil {
			out <- outs
			return
		}
	}
}

// LogOutcomes follows the helper container's log of pod until it ends, and returns the outcomes
// of its n operations if the log ends with them. The helper prints them as its last line, after
// every operation has ended, and then exits: the log ends with that line, complete, only then.
//
// What the log holds is as trustworthy as the termination message: only the helper, dirpv's own
// binary, writes it, and what it prints of a tenant's names is JSON-quoted, never a line of its
// own.
func (r *PodRunner) LogOutcomes(ctx context.Context, pod *v1.Pod, n int) ([]volumeop.Outcome, error) {
	var stream io.ReadCloser
	var err error
	if r.logs != nil {
		stream, err = r.logs(ctx, pod.Name)
	} else {
		stream, err = r.Client.CoreV1().Pods(r.Namespace).GetLogs(pod.Name, &v1.PodLogOptions{
			Container: helperContainer, Follow: true, LimitBytes: ptr.To[int64](maxLog)}).Stream(ctx)
	}
	if err != nil {
		return nil, err // not started yet, most likely
	}
	defer func() { _ = stream.Close() }()
	data, err := io.ReadAll(io.LimitReader(stream, maxLog))
	if err != nil {
		return nil, err
	}
	// An error: the helper failed, or ended without outcomes (the status says how).
	return lastLine(data, n, pod.Spec.NodeName, hostRoot(pod))
}

// lastLine decodes the outcomes of n operations from the last line of a helper's log, which
// must be complete (end with a newline): the helper prints them last, and then exits.
func lastLine(out []byte, n int, node, root string) ([]volumeop.Outcome, error) {
	if !bytes.HasSuffix(out, []byte("\n")) {
		return nil, errors.New("the helper's output does not end with a complete line")
	}
	out = out[:len(out)-1]
	return decode(string(out[bytes.LastIndexByte(out, '\n')+1:]), n, node, root)
}

// maxLog is the most of a helper's log read: its outcomes fit in 4 KiB (volumeop.Pack).
const maxLog = 64 << 10

// stuck reports a pod that cannot start, so callers learn why now rather than at the timeout.
func stuck(p *v1.Pod) error {
	for _, s := range p.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				return fmt.Errorf("cannot start: %s: %s", w.Reason, w.Message)
			}
		}
	}
	return nil
}

func describe(p *v1.Pod) string {
	s := string(p.Status.Phase)
	if s == "" {
		s = "not scheduled"
	}
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			s += ", " + w.Reason
		}
	}
	return s
}

// helperPath matches HelperMountPath as the start of a path in a message.
var helperPath = regexp.MustCompile(`(^|[\s"'(=])` + regexp.QuoteMeta(HelperMountPath) + `(/|[\s:"')]|$)`)

// nodePaths names the paths in a helper's message as the node has them: the helper sees the
// node's root (--hostpath-root) at HelperMountPath, an operator looks for it at root.
func nodePaths(msg, root string) string {
	return helperPath.ReplaceAllString(msg, "${1}"+root+"${2}")
}

// hostRoot is the node's directory a helper pod mounts at HelperMountPath.
func hostRoot(p *v1.Pod) string {
	if len(p.Spec.Volumes) == 1 && p.Spec.Volumes[0].HostPath != nil {
		return p.Spec.Volumes[0].HostPath.Path
	}
	return HelperMountPath
}

// decode reads the outcomes of n operations from msg, naming paths in their errors as node has
// them.
func decode(msg string, n int, node, root string) ([]volumeop.Outcome, error) {
	outs, err := volumeop.DecodeOutcomes(msg, n)
	if err != nil {
		return nil, fmt.Errorf("helper on node %s: unreadable outcomes %q: %w", node, msg, err)
	}
	return fromNode(outs, root), nil
}

// fromNode names the paths in the errors of a helper's outcomes as the node has them.
func fromNode(outs []volumeop.Outcome, root string) []volumeop.Outcome {
	for i := range outs {
		outs[i].Error = nodePaths(outs[i].Error, root)
	}
	return outs
}

func outcomes(p *v1.Pod, n int) ([]volumeop.Outcome, error) {
	root := hostRoot(p)
	for _, s := range p.Status.ContainerStatuses {
		t := s.State.Terminated
		if s.Name != helperContainer || t == nil {
			continue
		}
		msg := strings.TrimSpace(t.Message)
		if t.ExitCode != 0 {
			if msg == "" {
				msg = t.Reason
			}
			return nil, fmt.Errorf("helper on node %s failed: %s", p.Spec.NodeName, nodePaths(msg, root))
		}
		return decode(msg, n, p.Spec.NodeName, root)
	}
	return nil, fmt.Errorf("helper pod ended %s without a container result", p.Status.Phase)
}
