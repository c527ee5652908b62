// Package recycle brings back Recycle for dirpv's own volumes: a released volume of a recycling
// class is scrubbed (every entry inside it removed, never following a symlink) and then unbound,
// so the next claim of its class that fits binds to it instead of getting a new volume.
//
// Such volumes carry the Kubernetes policy Retain, so kube-controller-manager's own recycler never
// touches them, and the annotation dirpv.io/reclaim: Recycle, which this controller acts on. It
// runs on the leader only.
package recycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Event reasons, on the PV.
const (
	// ReasonVolumeRecycled: the volume was scrubbed and is Available for the next claim.
	ReasonVolumeRecycled = "VolumeRecycled"
	// ReasonVolumeFailedRecycle: the volume stays Released; the message says why.
	ReasonVolumeFailedRecycle = "VolumeFailedRecycle"
)

const (
	annProvisionedBy     = "pv.kubernetes.io/provisioned-by"
	annBoundByController = "pv.kubernetes.io/bound-by-controller"
)

// Controller recycles released volumes.
type Controller struct {
	client   kubernetes.Interface
	name     string
	backends map[config.Backend]backend.Backend
	recorder record.EventRecorder
	results  ResultCounter
	pvs      corelisters.PersistentVolumeLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
}

// ResultCounter counts recycles by result ("success" or "error").
type ResultCounter func(result string)

// New returns a controller for the volumes of provisioner name that informer sees.
func New(client kubernetes.Interface, name string, backends map[config.Backend]backend.Backend, recorder record.EventRecorder,
	results ResultCounter, informer coreinformers.PersistentVolumeInformer) (*Controller, error) {
	c := &Controller{
		client: client, name: name, backends: backends, recorder: recorder, results: results,
		pvs: informer.Lister(), synced: informer.Informer().HasSynced,
		// A failed scrub is retried with backoff: from a second up to five minutes.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "recycle"}),
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
	})
	return c, err
}

func (c *Controller) enqueue(obj any) {
	if pv, ok := obj.(*v1.PersistentVolume); ok && c.skip(pv) == "" {
		c.queue.Add(pv.Name)
	}
}

// Run processes released volumes with workers until ctx ends, and returns once every worker has
// finished its current volume.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	logger := klog.FromContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		c.queue.ShutDown()
		return
	}
	logger.Info("Recycle controller started")
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) next(ctx context.Context) bool {
	name, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(name)
	if err := c.sync(ctx, name); err != nil {
		klog.FromContext(ctx).Error(err, "Recycling failed; retrying with backoff", "PV", name)
		c.queue.AddRateLimited(name)
		return true
	}
	c.queue.Forget(name)
	return true
}

// skip returns why pv is not a volume to recycle now, or "".
func (c *Controller) skip(pv *v1.PersistentVolume) string {
	switch {
	case pv.Annotations[annProvisionedBy] != c.name:
		return "not provisioned by " + c.name
	case pv.Annotations[backend.AnnReclaim] != backend.ReclaimRecycle:
		return "not a recycling volume"
	case pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain:
		// Someone changed the policy: Delete is the provisioner's, Recycle is Kubernetes' own.
		return "reclaim policy changed to " + string(pv.Spec.PersistentVolumeReclaimPolicy)
	case pv.DeletionTimestamp != nil:
		return "being deleted"
	case pv.Status.Phase != v1.VolumeReleased:
		return "not Released"
	case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID == "":
		return "no claim to release"
	}
	return ""
}

// sync recycles one volume if it is Released. Its decisions rest on a fresh read, not the cache:
// erasing data on a stale view could erase the next claim's.
func (c *Controller) sync(ctx context.Context, name string) error {
	logger := klog.FromContext(ctx).WithValues("PV", name)
	if cached, err := c.pvs.Get(name); err != nil || c.skip(cached) != "" {
		return nil
	}
	pv, err := c.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if why := c.skip(pv); why != "" {
		logger.V(4).Info("Not recycling", "reason", why)
		return nil
	}
	ref := pv.Spec.ClaimRef
	claim, err := c.client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case err == nil && claim.UID == ref.UID:
		logger.V(2).Info("Not recycling: its claim still exists", "PVC", klog.KRef(ref.Namespace, ref.Name))
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}

	vol, err := backend.FromPV(pv)
	b := c.backends[vol.Backend]
	if err == nil && b == nil {
		err = fmt.Errorf("backend %s is not enabled in this provisioner", vol.Backend)
	}
	if err == nil {
		err = b.Allowed(vol)
	}
	if err != nil {
		// Not retried: only an edit of the PV can change this, and that requeues it.
		c.fail(pv, fmt.Errorf("refusing to recycle: %w; nothing on disk was touched", err))
		return nil
	}
	op := volumeop.Op{Kind: volumeop.Scrub, Path: vol.Path, Owner: volumefs.Marker{PV: pv.Name, ClaimUID: string(ref.UID)}}
	res, err := b.Run(ctx, vol, op)
	if errors.Is(err, backend.ErrNodeGone) {
		c.fail(pv, fmt.Errorf("node %s no longer exists: %w", vol.Node, err))
		return nil
	}
	if err != nil {
		c.fail(pv, fmt.Errorf("scrubbing %s: %w", vol, err))
		return err
	}
	logger.V(2).Info("Volume scrubbed", "volume", vol.String(), "claimUID", ref.UID, "alreadyScrubbed", !res.Scrubbed)

	// Unbind with the resourceVersion read above: if anything changed meanwhile the update
	// fails, and the next round starts from a fresh read (the scrub is then a no-op).
	pv.Spec.ClaimRef = nil
	delete(pv.Annotations, annBoundByController)
	if _, err := c.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("unbinding recycled PV: %w", err)
	}
	c.results("success")
	c.recorder.Eventf(pv, v1.EventTypeNormal, ReasonVolumeRecycled, "Directory %s scrubbed; the volume is Available for the next claim", vol)
	return nil
}

func (c *Controller) fail(pv *v1.PersistentVolume, err error) {
	c.results("error")
	c.recorder.Event(pv, v1.EventTypeWarning, ReasonVolumeFailedRecycle, err.Error())
}
