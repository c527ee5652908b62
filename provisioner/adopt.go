package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/peer"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// ErrAdoptionRefused marks a peer's PV dirpv does not take over: its shape, its class or its
// directory fails a check. Nothing was changed, on disk or on the PV.
var ErrAdoptionRefused = errors.New("adoption refused")

// Peers reads what taking over a peer's PV needs: its class (reclaim policy and directory
// naming), its claim (labels and annotations a pathPattern may read) and its node (for a
// node-local volume). Any may be gone: (nil, nil).
type Peers interface {
	Class(ctx context.Context, name string) (*storagev1.StorageClass, error)
	Claim(ctx context.Context, namespace, name string) (*v1.PersistentVolumeClaim, error)
	Node(ctx context.Context, name string) (*v1.Node, error)
}

// adoption is the --adopt that serves pv: one whose name provisioned it, if dirpv has not
// recorded the volume yet. nil: pv is dirpv's own, or no peer's it adopts.
func (p *Provisioner) adoption(pv *v1.PersistentVolume) *config.Adoption {
	if backend.Recorded(pv) {
		return nil
	}
	return p.Adoptions.ByName(pv.Annotations[backend.AnnProvisionedBy])
}

// Adopts reports whether pv is a PV of a provisioner dirpv adopts that it has not recorded yet:
// Adopt takes it over.
func (p *Provisioner) Adopts(pv *v1.PersistentVolume) bool { return p.adoption(pv) != nil }

// Adopted is what Adopt did with a peer's PV.
type Adopted struct {
	// Volume names the directory for messages; Record is dirpv's record of it.
	Volume string
	Record map[string]string
}

// Adopt takes over pv, a PV of a provisioner dirpv adopts (--adopt) that dirpv has not recorded
// yet: it derives dirpv's record from the peer's conventions (peer.Record), checks it as it
// checks its own, writes its marker beside the directory (volumefs.Adopt) and records the
// volume on the PV (event VolumeAdopted). With check it only checks, and changes nothing. A PV
// that fails a check gets an error matching ErrAdoptionRefused and (unless check) an
// AdoptionRefused event.
func (p *Provisioner) Adopt(ctx context.Context, pv *v1.PersistentVolume, check bool) (Adopted, error) {
	a := p.adoption(pv)
	if a == nil {
		return Adopted{}, fmt.Errorf("PV %s: not a PV of a provisioner dirpv adopts, or adopted already", pv.Name)
	}
	vol, b, rec, err := p.derive(ctx, pv, *a)
	if err == nil {
		ref := pv.Spec.ClaimRef
		op := volumeop.Op{Kind: volumeop.Adopt, Path: vol.Path, Check: check,
			Owner: volumefs.Marker{PV: pv.Name, ClaimUID: string(ref.UID), ClaimNamespace: ref.Namespace, ClaimName: ref.Name}}
		_, err = p.run(ctx, b, vol, op)
		if volumeop.Refused(err) {
			err = fmt.Errorf("%s: %w (%w)", vol, err, ErrAdoptionRefused)
		}
	}
	if errors.Is(err, ErrAdoptionRefused) {
		if check {
			return Adopted{}, err // a check changes nothing, and records nothing either
		}
		p.Recorder.Eventf(pv, v1.EventTypeWarning, ReasonAdoptionRefused, "Not taken over from %s, nothing changed: %v", a.Peer, err)
		return Adopted{}, err
	}
	if err != nil {
		return Adopted{}, fmt.Errorf("adopting PV %s: %w", pv.Name, err)
	}
	done := Adopted{Volume: vol.String(), Record: rec}
	if check {
		return done, nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": rec}})
	if err == nil {
		_, err = p.PVs.Patch(ctx, pv.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	}
	if err != nil {
		// The marker is the PV's: a retry adopts again and records it then.
		return Adopted{}, fmt.Errorf("recording the adopted volume %s on PV %s: %w", vol, pv.Name, err)
	}
	p.Recorder.Eventf(pv, v1.EventTypeNormal, ReasonVolumeAdopted, "Directory %s taken over from %s; it is reclaimed by onDelete: %s", vol, a.Peer, vol.OnDelete)
	klog.FromContext(ctx).V(2).Info("Volume adopted", "PV", klog.KObj(pv), "volume", vol.String(), "from", string(a.Peer))
	return done, nil
}

// derive is dirpv's record of pv by a's conventions, checked as FromPV checks dirpv's own.
func (p *Provisioner) derive(ctx context.Context, pv *v1.PersistentVolume, a config.Adoption) (backend.Volume, backend.Backend, map[string]string, error) {
	var found peer.Found
	var err error
	if found.Class, err = p.Peers.Class(ctx, pv.Spec.StorageClassName); err != nil {
		return backend.Volume{}, nil, nil, err
	}
	if ref := pv.Spec.ClaimRef; ref != nil && ref.Name != "" {
		if found.Claim, err = p.Peers.Claim(ctx, ref.Namespace, ref.Name); err != nil {
			return backend.Volume{}, nil, nil, err
		}
		if found.Claim != nil && found.Claim.UID != ref.UID {
			found.Claim = nil // another claim of that name: the PV's own is gone
		}
	}
	if name := peer.NodeOf(pv, a); name != "" {
		if found.Node, err = p.Peers.Node(ctx, name); err != nil {
			return backend.Volume{}, nil, nil, err
		}
	}
	rec, err := peer.Record(pv, a, found)
	if errors.Is(err, backend.ErrNodeGone) {
		return backend.Volume{}, nil, nil, err
	} else if err != nil {
		return backend.Volume{}, nil, nil, fmt.Errorf("%w (%w)", err, ErrAdoptionRefused)
	}
	recorded := pv.DeepCopy()
	for k, v := range rec {
		recorded.Annotations[k] = v
	}
	vol, b, err := p.Backends.FromPV(recorded)
	if err != nil {
		return backend.Volume{}, nil, nil, fmt.Errorf("PV %s: %w (%w)", pv.Name, err, ErrAdoptionRefused)
	}
	return vol, b, rec, nil
}

// dropLibraryFinalizer removes the provisioner library's finalizer from a peer's PV dirpv
// refused to take over. The library put it there because dirpv serves the peer's name; left
// there, it would hold the PV forever once deleted, as dirpv will not reclaim it. The library
// adds it again only to a Bound PV.
func (p *Provisioner) dropLibraryFinalizer(ctx context.Context, name string) error {
	pv, err := p.PVs.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if pv.Status.Phase == v1.VolumeBound || !slices.Contains(pv.Finalizers, libraryFinalizer) {
		return nil
	}
	pv.Finalizers = slices.DeleteFunc(pv.Finalizers, func(f string) bool { return f == libraryFinalizer })
	_, err = p.PVs.Update(ctx, pv, metav1.UpdateOptions{})
	return err
}

// ClientPeers reads classes and claims from the API.
type ClientPeers struct{ Client kubernetes.Interface }

// Class implements Peers.
func (c ClientPeers) Class(ctx context.Context, name string) (*storagev1.StorageClass, error) {
	if name == "" {
		return nil, nil
	}
	sc, err := c.Client.StorageV1().StorageClasses().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return sc, err
}

// Node implements Peers.
func (c ClientPeers) Node(ctx context.Context, name string) (*v1.Node, error) {
	node, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return node, err
}

// Claim implements Peers.
func (c ClientPeers) Claim(ctx context.Context, namespace, name string) (*v1.PersistentVolumeClaim, error) {
	claim, err := c.Client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return claim, err
}
