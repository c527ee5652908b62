// Package resize expands dirpv's own volumes when their claims ask for more.
//
// Nothing else in Kubernetes does: for a PV with a hostPath or nfs source, kube-controller-manager's
// expand controller only posts the event ExternalExpanding ("waiting for an external controller
// to expand this PVC"), and kubernetes-csi/external-resizer serves CSI volumes only. The kubelet
// never node-expands hostPath or nfs either, so this controller does the whole resize itself and
// never leaves a claim waiting for the node (NodeResizePending).
//
// It writes the claim's status the way external-resizer does with RecoverVolumeExpansionFailure
// (GA in 1.34): a resize starts with the condition Resizing, allocatedResources set to the new
// size and allocatedResourceStatuses[storage] ControllerResizeInProgress; it ends with
// status.capacity at the new size and both resize markers gone. Every step is derived afresh
// from the claim and its PV, so a resize interrupted anywhere (a crash, a lost lease) is resumed
// by the next sync. The controller runs on the leader only.
package resize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/worker"
)

// Event reasons, on the claim (external-resizer's, so that tools watching for them work).
const (
	// ReasonResizing: dirpv started resizing the claim's volume.
	ReasonResizing = "Resizing"
	// ReasonVolumeResizeFailed: the volume could not be resized, or the request was refused
	// (volumes cannot shrink); the message says why.
	ReasonVolumeResizeFailed = "VolumeResizeFailed"
	// ReasonVolumeResizeSuccessful: the volume holds the new size and the claim's capacity says so.
	ReasonVolumeResizeSuccessful = "VolumeResizeSuccessful"
)

const (
	// annNodeExpansionNotRequired on a finished claim tells the kubelet that no node expansion
	// follows. The kubelet reads it only for ReadWriteMany volumes of node-expandable plugins
	// (hostPath and nfs are not); it is set as external-resizer sets it, through the status.
	annNodeExpansionNotRequired = "volume.kubernetes.io/node-expansion-not-required"
)

// Volumes does the work on disk; *provisioner.Provisioner will implement it.
type Volumes interface {
	// Expand makes the volume of pv hold size: where its class enforces sizes it raises the
	// volume's limit; otherwise there is nothing to change on disk. Idempotent. An error that
	// wraps provisioner.ErrInfeasible will not succeed by retrying (e.g. the filesystem has no room).
	Expand(ctx context.Context, pv *v1.PersistentVolume, size resource.Quantity) error
}

// ResultCounter counts resizes by result ("success" or "error").
type ResultCounter func(result string)

// Controller resizes the volumes of dirpv's claims.
type Controller struct {
	client   kubernetes.Interface
	names    []string
	volumes  Volumes
	recorder record.EventRecorder
	results  ResultCounter
	claims   corelisters.PersistentVolumeClaimLister
	pvs      corelisters.PersistentVolumeLister
	synced   []cache.InformerSynced
	queue    worker.Queue // claim keys, namespace/name
}

// New returns a controller for the claims whose volumes provisioner name made. It sees all claims
// and PVs through the informers, which it can share with the provisioning controller.
func New(client kubernetes.Interface, names []string, volumes Volumes, recorder record.EventRecorder,
	results ResultCounter, claims coreinformers.PersistentVolumeClaimInformer,
	pvs coreinformers.PersistentVolumeInformer) (*Controller, error) {
	c := &Controller{
		client: client, names: names, volumes: volumes, recorder: recorder, results: results,
		claims: claims.Lister(), pvs: pvs.Lister(),
		synced: []cache.InformerSynced{claims.Informer().HasSynced, pvs.Informer().HasSynced},
		// A failed resize is retried with backoff: from a second up to five minutes.
		queue: worker.NewQueue("resize"),
	}
	if _, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueClaim,
		UpdateFunc: func(_, obj any) { c.enqueueClaim(obj) },
	}); err != nil {
		return nil, err
	}
	// A PV's changes requeue its claim, so that a resize resumes once the cache has the PV.
	if _, err := pvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueVolume,
		UpdateFunc: func(_, obj any) { c.enqueueVolume(obj) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Controller) enqueueClaim(obj any) {
	if claim, ok := obj.(*v1.PersistentVolumeClaim); ok && wanted(claim) {
		c.queue.Add(claim.Namespace + "/" + claim.Name)
	}
}

func (c *Controller) enqueueVolume(obj any) {
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok || !backend.Ours(pv, c.names) || pv.Spec.ClaimRef == nil {
		return
	}
	ref := pv.Spec.ClaimRef
	if claim, err := c.claims.PersistentVolumeClaims(ref.Namespace).Get(ref.Name); err == nil && wanted(claim) {
		c.queue.Add(ref.Namespace + "/" + ref.Name)
	}
}

// wanted tells from the claim alone whether it may need work: it is bound and asks for more than
// it has, or an earlier resize left its marker. Whose it is needs the PV, which sync checks.
func wanted(claim *v1.PersistentVolumeClaim) bool {
	if claim.Status.Phase != v1.ClaimBound || claim.Spec.VolumeName == "" {
		return false
	}
	request, capacity := claim.Spec.Resources.Requests[v1.ResourceStorage], claim.Status.Capacity[v1.ResourceStorage]
	return request.Cmp(capacity) > 0 || claim.Status.AllocatedResourceStatuses[v1.ResourceStorage] != ""
}

// Run resizes volumes with workers until ctx ends, and returns once every worker has finished
// its current claim.
func (c *Controller) Run(ctx context.Context, workers int) {
	worker.Run(ctx, "resize", "PVC", c.queue, workers, c.synced, c.sync)
}

// sync takes one claim's resize as far as it goes, from wherever an earlier sync left it. It
// reads the cache; every status write carries the resourceVersion it was read with, so a stale
// view ends in a conflict and a retry, never in a wrong status.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller made
	}
	claim, err := c.claims.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if !wanted(claim) {
		return nil
	}
	pv, err := c.pvs.Get(claim.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		return nil // not cached yet: its arrival requeues the claim
	} else if err != nil {
		return err
	}
	if !backend.Ours(pv, c.names) || pv.Spec.ClaimRef == nil ||
		pv.Spec.ClaimRef.UID != claim.UID || pv.Spec.ClaimRef.Namespace != claim.Namespace {
		return nil // not dirpv's, or not bound to this claim
	}
	logger := klog.FromContext(ctx).WithValues("PVC", klog.KObj(claim), "PV", pv.Name)
	ctx = klog.NewContext(ctx, logger)

	// The size to reach: the request, or the claim's own capacity when only an earlier resize's
	// marker is left to clear (the claim never goes below what it has).
	size := claim.Spec.Resources.Requests[v1.ResourceStorage]
	if capacity := claim.Status.Capacity[v1.ResourceStorage]; capacity.Cmp(size) > 0 {
		size = capacity
	}
	pvSize := pv.Spec.Capacity[v1.ResourceStorage]
	if size.Cmp(pvSize) < 0 {
		return c.refuse(ctx, claim, pv, size, pvSize)
	}
	allocated, hasAllocated := claim.Status.AllocatedResources[v1.ResourceStorage]
	if claim.Status.AllocatedResourceStatuses[v1.ResourceStorage] == v1.PersistentVolumeClaimControllerResizeInfeasible &&
		hasAllocated && allocated.Cmp(size) == 0 && pvSize.Cmp(size) < 0 {
		logger.V(4).Info("Resize to this size was infeasible: waiting for the request to change", "size", size.String())
		return nil
	}
	logger.V(4).Info("Resizing", "size", size.String(), "pvSize", pvSize.String())

	// 1. Mark the resize started (a no-op when resuming one).
	patched, err := c.patchClaim(ctx, claim, started(claim, size), true)
	if err != nil {
		return fmt.Errorf("marking the resize started: %w", err)
	}
	if patched != claim {
		c.recorder.Eventf(claim, v1.EventTypeNormal, ReasonResizing, "dirpv is resizing volume %s to %s", pv.Name, size.String())
		claim = patched
	}

	// 2. Make the volume hold the size.
	if err := c.volumes.Expand(ctx, pv, size); err != nil {
		return c.failed(ctx, claim, pv, size, err)
	}

	// 3. Record the size on the PV.
	if pvSize.Cmp(size) < 0 {
		if err := c.patchCapacity(ctx, pv, size); err != nil {
			return fmt.Errorf("updating the capacity of PV %s: %w", pv.Name, err)
		}
	}

	// 4. Mark the resize finished: there is no step on the node.
	if _, err := c.patchClaim(ctx, claim, finished(claim, size), true); err != nil {
		return fmt.Errorf("marking the resize finished: %w", err)
	}
	c.results("success")
	c.recorder.Eventf(claim, v1.EventTypeNormal, ReasonVolumeResizeSuccessful, "Volume %s resized to %s", pv.Name, size.String())
	logger.V(2).Info("Volume resized", "size", size.String())
	return nil
}

// refuse turns down a request below what the volume already holds (a request lowered after a
// resize got further than the claim shows): volumes cannot shrink. The claim is marked
// ControllerResizeInfeasible and left alone until its request changes; a refusal already
// recorded is not repeated.
func (c *Controller) refuse(ctx context.Context, claim *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, size, pvSize resource.Quantity) error {
	msg := fmt.Sprintf("Requested %s is less than the %s volume %s already holds, and volumes cannot shrink: request at least %s",
		size.String(), pvSize.String(), pv.Name, pvSize.String())
	want := withError(claim, msg, true)
	if equality.Semantic.DeepEqual(claim, want) {
		return nil
	}
	// Like every failure mark, without the resourceVersion (as external-resizer does): a claim
	// changed meanwhile is requeued by its change anyway.
	if _, err := c.patchClaim(ctx, claim, want, false); err != nil {
		return fmt.Errorf("marking the resize refused: %w", err)
	}
	c.results("error")
	c.recorder.Event(claim, v1.EventTypeWarning, ReasonVolumeResizeFailed, msg)
	klog.FromContext(ctx).V(2).Info("Resize refused: volumes cannot shrink", "size", size.String(), "pvSize", pvSize.String())
	return nil
}

// failed records an Expand error on the claim. The error is returned for a retry with backoff,
// unless it is infeasible: then the claim waits for its request to change.
func (c *Controller) failed(ctx context.Context, claim *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, size resource.Quantity, err error) error {
	c.results("error")
	err = fmt.Errorf("resizing volume %s to %s: %w", pv.Name, size.String(), err)
	c.recorder.Event(claim, v1.EventTypeWarning, ReasonVolumeResizeFailed, err.Error())
	infeasible := errors.Is(err, provisioner.ErrInfeasible)
	if _, perr := c.patchClaim(ctx, claim, withError(claim, err.Error(), infeasible), false); perr != nil {
		return fmt.Errorf("%w (and marking the claim failed: %v)", err, perr)
	}
	if infeasible {
		klog.FromContext(ctx).Error(err, "Resize infeasible: not retried until the request changes")
		return nil
	}
	return err
}

// started is claim marked as resizing to size. A new size starts a new attempt, which drops the
// conditions of an earlier one; the same size resumes one and keeps them (its last error shows
// until it succeeds).
func started(claim *v1.PersistentVolumeClaim, size resource.Quantity) *v1.PersistentVolumeClaim {
	want := claim.DeepCopy()
	if allocated, ok := want.Status.AllocatedResources[v1.ResourceStorage]; !ok || allocated.Cmp(size) != 0 {
		want.Status.Conditions = slices.DeleteFunc(want.Status.Conditions, isResizeCondition)
	}
	want.Status.Conditions = setCondition(want.Status.Conditions, v1.PersistentVolumeClaimResizing, "")
	want.Status.AllocatedResources = withStorage(want.Status.AllocatedResources, size)
	if want.Status.AllocatedResourceStatuses == nil {
		want.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
	}
	want.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimControllerResizeInProgress
	delete(want.Annotations, annNodeExpansionNotRequired)
	return want
}

// withError is claim with the condition ControllerResizeError saying msg, and marked
// ControllerResizeInfeasible if infeasible (otherwise its resize status stays as it is).
func withError(claim *v1.PersistentVolumeClaim, msg string, infeasible bool) *v1.PersistentVolumeClaim {
	want := claim.DeepCopy()
	want.Status.Conditions = setCondition(want.Status.Conditions, v1.PersistentVolumeClaimControllerResizeError, msg)
	if infeasible {
		if want.Status.AllocatedResourceStatuses == nil {
			want.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
		}
		want.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimControllerResizeInfeasible
	}
	return want
}

// finished is claim with the capacity of size and no trace of the resize left but
// allocatedResources (which quota counts).
func finished(claim *v1.PersistentVolumeClaim, size resource.Quantity) *v1.PersistentVolumeClaim {
	want := claim.DeepCopy()
	want.Status.Capacity = withStorage(want.Status.Capacity, size)
	want.Status.AllocatedResources = withStorage(want.Status.AllocatedResources, size)
	want.Status.Conditions = slices.DeleteFunc(want.Status.Conditions, isResizeCondition)
	delete(want.Status.AllocatedResourceStatuses, v1.ResourceStorage)
	if len(want.Status.AllocatedResourceStatuses) == 0 {
		want.Status.AllocatedResourceStatuses = nil
	}
	metav1.SetMetaDataAnnotation(&want.ObjectMeta, annNodeExpansionNotRequired, "true")
	return want
}

// isResizeCondition: the conditions of a resize, all dropped once it is done (external-resizer's
// knownResizeConditions).
func isResizeCondition(c v1.PersistentVolumeClaimCondition) bool {
	switch c.Type {
	case v1.PersistentVolumeClaimResizing, v1.PersistentVolumeClaimFileSystemResizePending,
		v1.PersistentVolumeClaimControllerResizeError, v1.PersistentVolumeClaimNodeResizeError:
		return true
	}
	return false
}

// setCondition sets the condition of type t to True with msg, keeping one that already says so
// as it is (its transition time included).
func setCondition(conds []v1.PersistentVolumeClaimCondition, t v1.PersistentVolumeClaimConditionType, msg string) []v1.PersistentVolumeClaimCondition {
	cond := v1.PersistentVolumeClaimCondition{Type: t, Status: v1.ConditionTrue, Message: msg, LastTransitionTime: metav1.Now()}
	for i := range conds {
		if conds[i].Type == t {
			if conds[i].Status != v1.ConditionTrue || conds[i].Message != msg {
				conds[i] = cond
			}
			return conds
		}
	}
	return append(conds, cond)
}

func withStorage(list v1.ResourceList, size resource.Quantity) v1.ResourceList {
	if list == nil {
		list = v1.ResourceList{}
	}
	list[v1.ResourceStorage] = size
	return list
}

// patchClaim writes the status (and annotations) of want over old through the status subresource,
// as a strategic merge patch computed from the two: conditions merge by type, so the patch
// removes only those want dropped, and a null deletes the storage key from
// allocatedResourceStatuses. With lock, the patch carries old's resourceVersion, which
// kube-apiserver checks like an update's (409 Conflict if the claim changed). It returns old
// itself when there is nothing to write.
func (c *Controller) patchClaim(ctx context.Context, old, want *v1.PersistentVolumeClaim, lock bool) (*v1.PersistentVolumeClaim, error) {
	if equality.Semantic.DeepEqual(old, want) {
		return old, nil
	}
	oldJSON, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, wantJSON, &v1.PersistentVolumeClaim{})
	if err != nil {
		return nil, err
	}
	if lock {
		if patch, err = withResourceVersion(patch, old.ResourceVersion); err != nil {
			return nil, err
		}
	}
	klog.FromContext(ctx).V(5).Info("Patching claim status", "patch", string(patch))
	return c.client.CoreV1().PersistentVolumeClaims(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
}

// patchCapacity sets the capacity of pv to size, unless pv changed since it was read.
func (c *Controller) patchCapacity(ctx context.Context, pv *v1.PersistentVolume, size resource.Quantity) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": pv.ResourceVersion},
		"spec":     map[string]any{"capacity": map[string]any{string(v1.ResourceStorage): size.String()}},
	})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

func withResourceVersion(patch []byte, rv string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	meta["resourceVersion"] = rv
	return json.Marshal(m)
}
