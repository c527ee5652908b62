// Package recycle brings back Recycle for dirpv's own volumes: a released volume of a recycling
// class is scrubbed (every entry inside it removed, never following a symlink) and then unbound,
// so the next claim of its class that fits binds to it instead of getting a new volume.
//
// Such volumes carry the Kubernetes policy Retain, so kube-controller-manager's own recycler never
// touches them, and the annotation dirpv.io/reclaim: Recycle, which this controller acts on. As
// Retain would leave the directory of a deleted PV behind, they also carry dirpv's finalizer: a
// deleted recycling PV is reclaimed by its onDelete like any other once it is no longer bound.
//
// Every other PV with Kubernetes policy Retain carries the finalizer too: Kubernetes tells no
// provisioner about a deleted Retain PV, and its directory, kept, must be released to the
// operator (marked so that no later PV of the same name can reclaim it) before the PV goes.
// The controller runs on the leader only.
package recycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/worker"
)

// Event reasons, on the PV.
const (
	// ReasonVolumeRecycled: the volume was scrubbed and is Available for the next claim.
	ReasonVolumeRecycled = "VolumeRecycled"
	// ReasonVolumeFailedRecycle: the volume stays Released; the message says why.
	ReasonVolumeFailedRecycle = "VolumeFailedRecycle"
	// ReasonVolumeFailedDelete: a deleted recycling PV's directory could not be reclaimed; the
	// PV stays until it can (the library's reason for the same failure).
	ReasonVolumeFailedDelete = "VolumeFailedDelete"
)

const (
	annBoundByController = "pv.kubernetes.io/bound-by-controller"
)

// Volumes does the work on disk; *provisioner.Provisioner is one.
type Volumes interface {
	// Scrub empties a released PV's directory for the next claim (see provisioner.Scrub).
	Scrub(ctx context.Context, pv *v1.PersistentVolume, claimUID string) (provisioner.Scrubbed, error)
	// Delete reclaims a PV's directory by its onDelete.
	Delete(ctx context.Context, pv *v1.PersistentVolume) error
	// Release hands the directory of a deleted Retain PV over to the operator.
	Release(ctx context.Context, pv *v1.PersistentVolume) error
}

// Controller recycles released volumes.
type Controller struct {
	client   kubernetes.Interface
	names    []string
	volumes  Volumes
	recorder record.EventRecorder
	results  ResultCounter
	pvs      corelisters.PersistentVolumeLister
	synced   cache.InformerSynced
	queue    worker.Queue
}

// ResultCounter counts recycles by result ("success" or "error").
type ResultCounter func(result string)

// New returns a controller for the volumes of provisioner name that informer sees (all PVs: it
// picks dirpv's recycling ones itself, so the provisioning controller can share the cache).
func New(client kubernetes.Interface, names []string, volumes Volumes, recorder record.EventRecorder,
	results ResultCounter, informer coreinformers.PersistentVolumeInformer) (*Controller, error) {
	c := &Controller{
		client: client, names: names, volumes: volumes, recorder: recorder, results: results,
		pvs: informer.Lister(), synced: informer.Informer().HasSynced,
		// A failed scrub is retried with backoff: from a second up to five minutes.
		queue: worker.NewQueue("recycle"),
	}
	if _, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Controller) enqueue(obj any) {
	if pv, ok := obj.(*v1.PersistentVolume); ok {
		if a, _ := c.decide(pv); a != none {
			c.queue.Add(pv.Name)
		}
	}
}

// Run processes released volumes with workers until ctx ends, and returns once every worker has
// finished its current volume.
func (c *Controller) Run(ctx context.Context, workers int) {
	worker.Run(ctx, "recycle", "PV", c.queue, workers, []cache.InformerSynced{c.synced}, c.sync)
}

// action is what sync does with a PV.
type action string

const (
	none      action = "none"
	protect   action = "add finalizer"           // a PV from before dirpv had it
	recycle   action = "recycle"                 // scrub the released volume and unbind it
	reclaim   action = "reclaim"                 // a recycling PV is being deleted: its onDelete, then drop the finalizer
	keep      action = "release to the operator" // a Retain PV is being deleted: release its directory, then drop the finalizer
	standBack action = "remove finalizer"        // someone changed the policy: dirpv stands back
)

// decide returns what to do with pv, and why.
func (c *Controller) decide(pv *v1.PersistentVolume) (action, string) {
	protected := slices.Contains(pv.Finalizers, backend.FinalizerReclaim)
	recycling := backend.Recycles(pv)
	deleted := pv.DeletionTimestamp != nil
	switch {
	case !backend.Ours(pv, c.names):
		return none, "not provisioned by " + strings.Join(c.names, " or ")
	case pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain:
		// Delete is the provisioner's to act on, Recycle Kubernetes' own.
		if protected {
			return standBack, "reclaim policy " + string(pv.Spec.PersistentVolumeReclaimPolicy)
		}
		return none, "not Retain"
	case deleted && !protected:
		return none, "being deleted"
	case deleted && pv.Status.Phase == v1.VolumeBound:
		return none, "being deleted, still bound"
	case deleted && recycling:
		return reclaim, "deleted"
	case deleted:
		return keep, "deleted"
	case !protected && !backend.Recorded(pv):
		// A PV of a provisioner dirpv adopts, not taken over yet: dirpv's finalizer would hold
		// it if it were refused. Retain leaves its directory as that provisioner did.
		return none, "no dirpv record"
	case !protected:
		return protect, "finalizer missing"
	case !recycling:
		return none, "Retain: nothing to do until it is deleted"
	case pv.Status.Phase != v1.VolumeReleased:
		return none, "not Released"
	case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID == "":
		return none, "no claim to release"
	}
	return recycle, "released"
}

// sync acts on one volume. Its decisions rest on a fresh read, not the cache: erasing data on a
// stale view could erase the next claim's.
func (c *Controller) sync(ctx context.Context, name string) error {
	logger := klog.FromContext(ctx).WithValues("PV", name)
	if cached, err := c.pvs.Get(name); err != nil {
		return nil
	} else if a, _ := c.decide(cached); a == none {
		return nil
	}
	pv, err := c.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	a, why := c.decide(pv)
	logger.V(4).Info("Recycle controller", "action", string(a), "reason", why)
	switch a {
	case protect:
		pv.Finalizers = append(pv.Finalizers, backend.FinalizerReclaim)
		return c.update(ctx, pv, "adding finalizer")
	case standBack:
		return c.dropFinalizer(ctx, pv)
	case reclaim:
		return c.finish(ctx, pv, c.volumes.Delete)
	case keep:
		return c.finish(ctx, pv, c.volumes.Release)
	case recycle:
		return c.recycle(ctx, pv)
	}
	return nil
}

// finish reclaims (Delete: by its onDelete) or releases (Release) the directory of a deleted
// PV, then lets the deletion finish.
func (c *Controller) finish(ctx context.Context, pv *v1.PersistentVolume, reclaim func(context.Context, *v1.PersistentVolume) error) error {
	if err := reclaim(ctx, pv); err != nil {
		c.recorder.Event(pv, v1.EventTypeWarning, ReasonVolumeFailedDelete, err.Error())
		if errors.Is(err, provisioner.ErrRefused) {
			return nil // only an edit of the PV can change this, and that requeues it
		}
		return err
	}
	// The directory is dealt with: only the finalizer is left to go. The PV may have changed
	// since it was read (Kubernetes drops its own finalizers meanwhile), so read it again on a
	// conflict rather than start over, which would reclaim the directory a second time.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		err := c.dropFinalizer(ctx, pv)
		if apierrors.IsConflict(errors.Unwrap(err)) {
			fresh, gerr := c.client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(gerr) {
				return nil
			}
			if gerr != nil {
				return gerr
			}
			pv = fresh
		}
		return err
	})
}

// dropFinalizer removes dirpv's finalizer from pv.
func (c *Controller) dropFinalizer(ctx context.Context, pv *v1.PersistentVolume) error {
	pv.Finalizers = slices.DeleteFunc(pv.Finalizers, func(f string) bool { return f == backend.FinalizerReclaim })
	return c.update(ctx, pv, "removing finalizer")
}

// recycle scrubs a released volume whose claim is gone, then unbinds it.
func (c *Controller) recycle(ctx context.Context, pv *v1.PersistentVolume) error {
	logger := klog.FromContext(ctx).WithValues("PV", pv.Name)
	ref := pv.Spec.ClaimRef
	claim, err := c.client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case err == nil && claim.UID == ref.UID:
		logger.V(2).Info("Not recycling: its claim still exists", "PVC", klog.KRef(ref.Namespace, ref.Name))
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}

	scrubbed, err := c.volumes.Scrub(ctx, pv, string(ref.UID))
	if err != nil {
		c.results("error")
		c.recorder.Event(pv, v1.EventTypeWarning, ReasonVolumeFailedRecycle, err.Error())
		switch {
		case errors.Is(err, backend.ErrNodeGone):
			// It can never be offered again. Deleting it lets it go through its finalizer,
			// with VolumeNodeGone, instead of staying Released for good.
			if err := c.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{UID: &pv.UID, ResourceVersion: &pv.ResourceVersion},
			}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting the PV of a node that is gone: %w", err)
			}
			return nil
		case errors.Is(err, provisioner.ErrRefused):
			return nil // not retried: only an edit of the PV can change this, and that requeues it
		}
		return err
	}
	logger.V(2).Info("Volume scrubbed", "claimUID", ref.UID, "alreadyScrubbed", !scrubbed.Removed)

	// Unbind with the resourceVersion read above: if anything changed meanwhile the update
	// fails, and the next round starts from a fresh read (the scrub is then a no-op).
	pv.Spec.ClaimRef = nil
	delete(pv.Annotations, annBoundByController)
	if err := c.update(ctx, pv, "unbinding recycled PV"); err != nil {
		return err
	}
	c.results("success")
	c.recorder.Eventf(pv, v1.EventTypeNormal, ReasonVolumeRecycled, "Directory %s scrubbed; the volume is Available for the next claim", scrubbed.Volume)
	return nil
}

// update writes pv back with the resourceVersion it was read with.
func (c *Controller) update(ctx context.Context, pv *v1.PersistentVolume, what string) error {
	if _, err := c.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
