package provisioner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/peer"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Provisioner provisions and deletes directory-backed volumes.
type Provisioner struct {
	Backends backend.Set
	Recorder record.EventRecorder
	Metrics  *Metrics
	// Now is the clock; archives are named by it.
	Now func() time.Time
	// PVs reads PVs fresh for ShouldDelete; nil: no check.
	PVs typedcorev1.PersistentVolumeInterface
	// Adoptions lists the provisioners whose classes and PVs dirpv takes over; Peers reads their
	// classes and claims for that.
	Adoptions config.Adoptions
	Peers     Peers

	// unsure holds the UIDs of claims whose last create ran out of time: their directory may
	// still appear, so they are provisioned even while being deleted (see Provision).
	unsure sync.Map
}

var (
	_ controller.Provisioner   = (*Provisioner)(nil)
	_ controller.DeletionGuard = (*Provisioner)(nil)
)

// libraryFinalizer is the provisioner library's finalizer on the PVs it deletes (not exported).
const libraryFinalizer = "external-provisioner.volume.kubernetes.io/finalizer"

// ShouldDelete implements controller.DeletionGuard: a PV the library has already reclaimed is
// not reclaimed again. Once Delete succeeded the library deletes the PV and removes its
// finalizer; the update that deletion makes then comes back from its cache while the PV still
// exists (Kubernetes' own pv-protection finalizer goes a moment later), or after it is gone.
// Without this check each reclaim would run twice: the second a no-op, but a helper pod on a
// node all the same.
//
// The library asks before its own checks of its cached copy, for each update of each PV: a PV
// those checks refuse (not Released, or not reclaimed by Delete) is not read again.
func (p *Provisioner) ShouldDelete(ctx context.Context, pv *v1.PersistentVolume) bool {
	if pv.Status.Phase != v1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		return false
	}
	if p.PVs == nil {
		return true
	}
	fresh, err := p.PVs.Get(ctx, pv.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false
	case err != nil:
		return true // Delete is idempotent; the library retries it on failure
	}
	return fresh.DeletionTimestamp == nil || slices.Contains(fresh.Finalizers, libraryFinalizer)
}

// Provision implements controller.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	sc, claim := opts.StorageClass, opts.PVC
	logger := klog.FromContext(ctx).WithValues("PVC", klog.KObj(claim), "PV", opts.PVName)
	// The library provisions claims being deleted too (a namespace's deletion marks them all):
	// their pods cannot start, and the volume would only be made to be reclaimed at once. Unless
	// an earlier create may still make the directory: then the PV is what reclaims it.
	if _, unsure := p.unsure.Load(claim.UID); claim.DeletionTimestamp != nil && !unsure {
		return nil, controller.ProvisioningFinished, errors.New("the claim is being deleted: no volume is made for it")
	}
	class, b, from, err := p.parseClass(sc, opts.SelectedNode, claim)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := checkClaim(claim, b); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	loc, err := b.Place(ctx, class, opts)
	switch {
	case errors.Is(err, quota.ErrNoRoom) && opts.SelectedNode != nil:
		return nil, controller.ProvisioningReschedule, fmt.Errorf("node %s: %w", opts.SelectedNode.Name, err)
	case err != nil:
		return nil, controller.ProvisioningFinished, err
	}
	vol := backend.Volume{Backend: b.Name(), Location: loc, OnDelete: class.OnDelete, Recycle: class.Recycle,
		Enforced: class.Capacity == config.CapacityEnforce, Overcommit: class.Overcommit, Peer: from}
	if class.Recycle && sc.ReclaimPolicy != nil && *sc.ReclaimPolicy == v1.PersistentVolumeReclaimRetain {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s: parameter %q: \"true\" conflicts with reclaimPolicy Retain (leave reclaimPolicy at Delete)", sc.Name, config.ParamRecycle)
	}
	vol.Path, err = pathname.Render(class.PathPattern, pathname.Data{
		PVC: pathname.Claim{Namespace: claim.Namespace, Name: claim.Name, Labels: claim.Labels, Annotations: claim.Annotations},
		PV:  pathname.Volume{Name: opts.PVName},
	})
	if err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}

	op := volumeop.Op{
		Kind: volumeop.Create, Path: vol.Path, Mode: class.Mode, UID: class.UID, GID: class.GID,
		Owner: volumefs.Marker{PV: opts.PVName, ClaimUID: string(claim.UID), ClaimNamespace: claim.Namespace, ClaimName: claim.Name},
	}
	if vol.Enforced {
		if op.Limit, err = limitOf(claim.Spec.Resources.Requests[v1.ResourceStorage]); err != nil {
			return nil, controller.ProvisioningFinished, fmt.Errorf("the claim's storage request: %w", err)
		}
		op.Overcommit = vol.Overcommit
	}
	res, err := p.run(ctx, b, vol, op)
	p.unsure.Delete(claim.UID)
	if err != nil {
		err = fmt.Errorf("making %s: %w", vol, err)
		switch {
		case errors.Is(err, backend.ErrNodeGone), errors.Is(err, quota.ErrNoRoom):
			// Let the scheduler pick another node.
			return nil, controller.ProvisioningReschedule, err
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), ctx.Err() != nil:
			// The directory may still appear: the library retries until it knows, so a claim
			// deleted meanwhile gets a PV that is then reclaimed instead of a leaked directory.
			p.unsure.Store(claim.UID, struct{}{})
			return nil, controller.ProvisioningInBackground, err
		}
		return nil, controller.ProvisioningFinished, err
	}
	logger.V(2).Info("Volume directory created", "volume", vol.String(), "quota", res.Quota)
	pv := buildPV(opts, vol)
	if res.Quota != "" {
		pv.Annotations[backend.AnnQuota] = res.Quota
	}
	return pv, controller.ProvisioningFinished, nil
}

// maxLimit is the largest size a volume is held to: resource.Quantity counts whole bytes in an
// int64, and wraps past it.
var maxLimit = *resource.NewQuantity(math.MaxInt64, resource.BinarySI)

// parseClass validates sc's parameters for a volume of claim on node (nil: not chosen yet). A
// class of a provisioner dirpv adopts is read by that provisioner's conventions
// (peer.ClassParams), and its volumes follow them: from names it.
func (p *Provisioner) parseClass(sc *storagev1.StorageClass, node *v1.Node, claim *v1.PersistentVolumeClaim) (*config.Class, backend.Backend, config.Peer, error) {
	params, from := sc.Parameters, config.Peer("")
	if a := p.Adoptions.ByName(sc.Provisioner); a != nil {
		target := peer.Target{Claim: claim}
		if node != nil {
			target.Node = node.Name
		}
		var err error
		if params, err = peer.ClassParams(sc, *a, target); err != nil {
			return nil, nil, "", err
		}
		from = a.Peer
	}
	class, b, err := p.Backends.ParseClass(params)
	if err != nil {
		return nil, nil, "", fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	return class, b, from, nil
}

// limitOf is the limit of a volume held to size q: q in whole bytes, rounded up. A size of no
// bytes (the volume would have no limit) or of more than maxLimit is refused, never wrapped.
func limitOf(q resource.Quantity) (uint64, error) {
	switch {
	case q.Sign() <= 0:
		return 0, fmt.Errorf("size %s: a volume held to its size needs a size above 0", q.String())
	case q.Cmp(maxLimit) > 0:
		return 0, fmt.Errorf("size %s is more than the %d bytes a volume can be held to", q.String(), maxLimit.Value())
	}
	return uint64(q.Value()), nil
}

// checkClaim refuses what a directory volume cannot honour.
func checkClaim(claim *v1.PersistentVolumeClaim, b backend.Backend) error {
	if claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return errors.New("volumeMode Block is not supported: dirpv volumes are directories (volumeMode Filesystem)")
	}
	if claim.Spec.Selector != nil {
		return errors.New("claims with a selector cannot be provisioned dynamically")
	}
	if claim.Spec.DataSource != nil || claim.Spec.DataSourceRef != nil {
		return errors.New("claims with a dataSource (clone or snapshot) are not supported")
	}
	if _, ok := claim.Spec.Resources.Requests[v1.ResourceStorage]; !ok {
		return errors.New("the claim has no storage request")
	}
	if len(claim.Spec.AccessModes) == 0 {
		return errors.New("the claim has no access modes")
	}
	for _, m := range claim.Spec.AccessModes {
		if !slices.Contains(b.AccessModes(), m) {
			return fmt.Errorf("access mode %s is not supported by backend %s (supported: %v)", m, b.Name(), b.AccessModes())
		}
	}
	return nil
}

// buildPV makes the PV for a created volume. The library adds claimRef, storageClassName and its
// provisioned-by annotation.
func buildPV(opts controller.ProvisionOptions, vol backend.Volume) *v1.PersistentVolume {
	sc, claim := opts.StorageClass, opts.PVC
	policy := v1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		policy = *sc.ReclaimPolicy
	}
	var labels map[string]string
	if vol.Recycle {
		// dirpv recycles the volume itself; Retain keeps kube-controller-manager's in-tree
		// recycler, which would race it, away.
		policy = v1.PersistentVolumeReclaimRetain
		labels = map[string]string{backend.LabelReclaim: backend.LabelRecycle}
	}
	var finalizers []string
	if policy == v1.PersistentVolumeReclaimRetain {
		// Kubernetes never tells a provisioner about a deleted Retain PV: dirpv's finalizer
		// lets it reclaim (recycling) or release (Retain) the directory first.
		finalizers = []string{backend.FinalizerReclaim}
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName, Annotations: vol.Annotations(), Labels: labels, Finalizers: finalizers},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: policy,
			AccessModes:                   claim.Spec.AccessModes,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: claim.Spec.Resources.Requests[v1.ResourceStorage]},
			VolumeMode:                    ptrTo(v1.PersistentVolumeFilesystem),
		},
	}
	vol.Location.Spec(&pv.Spec, vol.FullPath(), sc)
	return pv
}

func ptrTo[T any](v T) *T { return &v }

// Delete implements controller.Provisioner. It acts only on what the PV recorded at provision time,
// after checking that record against the PV's source and this process's configured roots.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	return p.reclaim(ctx, pv, "")
}

// Release hands the directory of a deleted PV whose Kubernetes policy is Retain over to the
// operator: it stays, and no later PV (one restored from a backup, say, or made by hand with
// the same name) can reclaim it.
func (p *Provisioner) Release(ctx context.Context, pv *v1.PersistentVolume) error {
	return p.reclaim(ctx, pv, "reclaimPolicy Retain")
}

// reclaim runs the PV's onDelete, or, if retained names a policy that keeps the directory,
// releases it to the operator.
func (p *Provisioner) reclaim(ctx context.Context, pv *v1.PersistentVolume, retained string) error {
	logger := klog.FromContext(ctx).WithValues("PV", klog.KObj(pv))
	vol, b, err := p.locate(ctx, pv)
	if errors.Is(err, backend.ErrNodeGone) {
		// A peer's volume on a node that is gone: as that peer would, let the PV go.
		p.Recorder.Eventf(pv, v1.EventTypeWarning, ReasonNodeGone, "Directory was not reclaimed: %v", err)
		return nil
	}
	if errors.Is(err, ErrAdoptionRefused) {
		if ferr := p.dropLibraryFinalizer(ctx, pv.Name); ferr != nil {
			err = fmt.Errorf("%w (and removing the finalizer of the PV dirpv will not reclaim: %v)", err, ferr)
		}
	}
	if err != nil {
		return fmt.Errorf("refusing to reclaim: %w; %w", err, ErrRefused)
	}
	if retained == "" && vol.OnDelete == config.OnDeleteRetain {
		retained = "onDelete: retain"
	}
	op := volumeop.Op{Path: vol.Path, Owner: volumefs.Marker{PV: pv.Name}, Now: p.Now(), Limited: vol.Enforced}
	switch {
	case retained != "":
		op.Kind, op.Why = volumeop.Release, fmt.Sprintf("kept (%s) when PV %s was deleted", retained, pv.Name)
	case vol.OnDelete == config.OnDeleteArchive:
		// nfs-subdir-external-provisioner's archives are archived-<dir>: where its users look.
		op.Kind, op.PlainArchive = volumeop.Archive, vol.Peer == config.PeerNSP
	default:
		op.Kind = volumeop.Delete
	}
	res, err := p.run(ctx, b, vol, op)
	switch {
	case errors.Is(err, backend.ErrNodeGone):
		p.Recorder.Eventf(pv, v1.EventTypeWarning, ReasonNodeGone, "Directory %s was not reclaimed: %v", vol.FullPath(), err)
		return nil
	case err != nil:
		return fmt.Errorf("%s %s: %w", op.Kind, vol, err)
	case op.Kind == volumeop.Release:
		p.Recorder.Eventf(pv, v1.EventTypeNormal, ReasonVolumeRetained, "Directory %s kept (%s); it is the operator's now, and no PV can reclaim it", vol, retained)
	case op.Kind == volumeop.Archive && res.Archive != "":
		p.Recorder.Eventf(pv, v1.EventTypeNormal, ReasonVolumeArchived, "Directory %s archived as %s", vol, res.Archive)
	}
	logger.V(2).Info("Volume reclaimed", "volume", vol.String(), "action", string(op.Kind))
	return nil
}

// Expand holds the volume of pv to size, for its claim that grew. A volume whose size is a
// label (capacity: label) has nothing to change on disk.
func (p *Provisioner) Expand(ctx context.Context, pv *v1.PersistentVolume, size resource.Quantity) error {
	taking := p.adoption(pv) != nil
	vol, b, err := p.locate(ctx, pv)
	if taking && err != nil && !errors.Is(err, ErrAdoptionRefused) {
		return fmt.Errorf("expanding: %w", err) // taking the PV over failed on the way: a retry may succeed
	}
	if err != nil {
		// Retrying cannot help: only an edit of the PV can.
		return fmt.Errorf("refusing to expand: %w; %w (%w)", err, ErrRefused, ErrInfeasible)
	}
	if !vol.Enforced {
		return nil
	}
	limit, err := limitOf(size)
	if err != nil {
		return fmt.Errorf("expanding %s: %w (%w)", vol, err, ErrInfeasible)
	}
	op := volumeop.Op{Kind: volumeop.Expand, Path: vol.Path, Owner: volumefs.Marker{PV: pv.Name}, Limit: limit, Overcommit: vol.Overcommit}
	if _, err := p.run(ctx, b, vol, op); errors.Is(err, quota.ErrNoRoom) {
		return fmt.Errorf("expanding %s to %s: %w (%w)", vol, size.String(), err, ErrInfeasible)
	} else if err != nil {
		return fmt.Errorf("expanding %s to %s: %w", vol, size.String(), err)
	}
	klog.FromContext(ctx).V(2).Info("Volume expanded", "PV", klog.KObj(pv), "volume", vol.String(), "size", size.String())
	return nil
}

// ErrNoQuota is the error of Usage for a volume whose size is a label (capacity: label, and every
// nfs volume): nothing on its filesystem counts what it alone holds, and walking its tree to add
// it up is no cheap read.
var ErrNoQuota = errors.New("its capacity is not enforced: no quota counts what it holds")

// Usage reports the bytes the volume of pv holds and its limit (0 if the filesystem reports
// none), from the quota that holds an enforced volume to its size (a btrfs qgroup or an XFS or
// ext4 project quota): no walk of its tree. A volume whose capacity is a label gets ErrNoQuota,
// one whose recorded location is refused ErrRefused; neither touches the node.
func (p *Provisioner) Usage(ctx context.Context, pv *v1.PersistentVolume) (used, limit uint64, err error) {
	vol, b, err := p.locate(ctx, pv)
	if err != nil {
		return 0, 0, fmt.Errorf("refusing to read the usage: %w; %w", err, ErrRefused)
	}
	if !vol.Enforced {
		return 0, 0, fmt.Errorf("usage of %s: %w", vol, ErrNoQuota)
	}
	op := volumeop.Op{Kind: volumeop.Usage, Path: vol.Path, Owner: volumefs.Marker{PV: pv.Name}}
	res, err := p.run(ctx, b, vol, op)
	if err != nil {
		return 0, 0, fmt.Errorf("usage of %s: %w", vol, err)
	}
	return res.Used, res.Limit, nil
}

// Enforceable says how the volumes of sc, a class with capacity: enforce, would be held to their
// size on node ("btrfs qgroup", "project quota"), or why they could not be (an error matching
// quota.ErrNotEnforced says what the filesystem needs). A class whose sizes are labels gets
// ErrNoQuota. It probes the filesystem of the class's base directory there, and makes nothing.
func (p *Provisioner) Enforceable(ctx context.Context, sc *storagev1.StorageClass, node *v1.Node) (string, error) {
	class, b, err := p.Backends.ParseClass(sc.Parameters)
	if err != nil {
		return "", fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	if class.Capacity != config.CapacityEnforce {
		return "", ErrNoQuota
	}
	loc, err := b.Place(ctx, class, controller.ProvisionOptions{StorageClass: sc, SelectedNode: node, PVC: &v1.PersistentVolumeClaim{}})
	if err != nil {
		return "", err
	}
	vol := backend.Volume{Backend: b.Name(), Location: loc, Enforced: true}
	res, err := p.run(ctx, b, vol, volumeop.Op{Kind: volumeop.Probe})
	return res.Quota, err
}

// Publishes reports whether the room of sc's volumes is published per node for the scheduler:
// sc is a valid class of a backend whose volumes are local to nodes.
func (p *Provisioner) Publishes(sc *storagev1.StorageClass) bool {
	_, b, err := p.Backends.ParseClass(sc.Parameters)
	if err != nil {
		return false
	}
	_, ok := b.(backend.Rooms)
	return ok
}

// Room is the room for sc's volumes on node: in all, and for the largest volume that fits.
func (p *Provisioner) Room(ctx context.Context, sc *storagev1.StorageClass, node *v1.Node) (total, largest uint64, err error) {
	class, b, err := p.Backends.ParseClass(sc.Parameters)
	if err != nil {
		return 0, 0, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	r, ok := b.(backend.Rooms)
	if !ok {
		return 0, 0, fmt.Errorf("StorageClass %s: backend %s has no room per node", sc.Name, b.Name())
	}
	return r.Room(ctx, class, node)
}

// ErrInfeasible marks an Expand error that retrying will not cure (e.g. the filesystem has no
// room). The claim is then marked ControllerResizeInfeasible and retried only once its request
// changes.
var ErrInfeasible = errors.New("volume resize infeasible")

// ErrRefused marks a PV whose recorded directory dirpv will not touch: its annotations are
// invalid or point outside the configured roots. Only an edit of the PV can change that.
var ErrRefused = errors.New("nothing on disk was touched")

// Scrubbed is what Scrub did.
type Scrubbed struct {
	// Volume names the directory for messages.
	Volume string
	// Removed: the directory held something, and it is gone.
	Removed bool
}

// Scrub empties the directory of a released recycling PV for its next claim; claimUID is the
// claim it was released from (see volumefs.Scrub). A PV whose recorded location is refused
// gets ErrRefused; a node that is gone, backend.ErrNodeGone.
func (p *Provisioner) Scrub(ctx context.Context, pv *v1.PersistentVolume, claimUID string) (Scrubbed, error) {
	vol, b, err := p.locate(ctx, pv)
	if err != nil {
		return Scrubbed{}, fmt.Errorf("refusing to recycle: %w; %w", err, ErrRefused)
	}
	op := volumeop.Op{Kind: volumeop.Scrub, Path: vol.Path, Owner: volumefs.Marker{PV: pv.Name, ClaimUID: claimUID}}
	res, err := p.run(ctx, b, vol, op)
	if err != nil {
		return Scrubbed{}, fmt.Errorf("scrubbing %s: %w", vol, err)
	}
	return Scrubbed{Volume: vol.String(), Removed: res.Scrubbed}, nil
}

// locate reads the volume a PV records and checks it against this provisioner's backends and
// roots: forged or foreign annotations are refused before anything touches a disk. A PV of a
// provisioner dirpv adopts is taken over first, the first time dirpv must act on it (Adopt).
func (p *Provisioner) locate(ctx context.Context, pv *v1.PersistentVolume) (backend.Volume, backend.Backend, error) {
	if p.adoption(pv) != nil {
		adopted, err := p.Adopt(ctx, pv, false)
		if err != nil {
			return backend.Volume{}, nil, err
		}
		pv = pv.DeepCopy()
		for k, v := range adopted.Record {
			pv.Annotations[k] = v
		}
	}
	return p.Backends.FromPV(pv)
}

// run performs op and records its metrics.
func (p *Provisioner) run(ctx context.Context, b backend.Backend, vol backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	start := time.Now()
	res, err := b.Run(ctx, vol, op)
	if p.Metrics != nil {
		result := "success"
		if err != nil {
			result = "error"
		}
		p.Metrics.Operations.WithLabelValues(string(vol.Backend), string(op.Kind), result).Inc()
		p.Metrics.Duration.WithLabelValues(string(vol.Backend), string(op.Kind)).Observe(time.Since(start).Seconds())
	}
	return res, err
}
