package peer

import (
	"errors"
	"fmt"
	"path"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
)

// ErrRefused marks a PV dirpv does not take over: its shape is not one its peer makes where
// the adoption says, or its class is not the peer's. Nothing was touched.
var ErrRefused = errors.New("not taken over")

// Target is what a peer's class is read for: the node the volume goes on (empty: not known
// yet) and its claim (nil: none).
type Target struct {
	Node  string
	Claim *v1.PersistentVolumeClaim
}

// ClassParams are the dirpv parameters of sc, a StorageClass of the peer a adopts, for a volume
// of target: its volumes are then laid out as the peer lays them out. What dirpv cannot do as
// the peer does is an error naming the parameter, never a silent difference.
func ClassParams(sc *storagev1.StorageClass, a config.Adoption, target Target) (map[string]string, error) {
	if a.Peer == config.PeerLocalPath {
		return localPathClassParams(sc, a, target)
	}
	return nspClassParams(sc, a)
}

// Found is what the API holds of a peer's PV: its class, its claim and its node, each nil if
// gone (or, for the node, if the peer's volumes are on none).
type Found struct {
	Class *storagev1.StorageClass
	Claim *v1.PersistentVolumeClaim
	Node  *v1.Node
}

// NodeOf is the name of the node pv's directory is on by its peer's conventions; empty for a
// peer whose volumes are on no node, or a PV that names none (Record then refuses it).
func NodeOf(pv *v1.PersistentVolume, a config.Adoption) string {
	if a.Peer == config.PeerLocalPath {
		node, _, _ := localPathNode(pv)
		return node
	}
	return ""
}

// refuser reports why a PV is refused, wrapping ErrRefused.
type refuser func(format string, args ...any) (map[string]string, error)

// Record derives dirpv's record (the dirpv.io/ annotations) of pv, a PV the peer a adopts made,
// from that peer's conventions. found.Claim is the claim pv is bound to, or nil if it is gone: a
// pathPattern that reads the claim's labels or annotations cannot be checked without it. The
// record is checked like any other by backend.Set.FromPV; the directory itself by
// volumefs.Adopt.
func Record(pv *v1.PersistentVolume, a config.Adoption, found Found) (map[string]string, error) {
	refuse := func(format string, args ...any) (map[string]string, error) {
		return nil, fmt.Errorf("PV %s of %s: %s: %w", pv.Name, a.Name, fmt.Sprintf(format, args...), ErrRefused)
	}
	if by := pv.Annotations[backend.AnnProvisionedBy]; by != a.Name {
		return refuse("it was provisioned by %s", pathname.Quote(by))
	}
	if sc := found.Class; sc == nil {
		return refuse("its StorageClass %s is gone, and with it the reclaim policy %s gave it", pathname.Quote(pv.Spec.StorageClassName), a.Peer)
	} else if sc.Provisioner != a.Name {
		return refuse("its StorageClass %s is %s's, not %s's", sc.Name, pathname.Quote(sc.Provisioner), a.Name)
	}
	if a.Peer == config.PeerLocalPath {
		return localPathRecord(pv, a, found, refuse)
	}
	return nspRecord(pv, a, found, refuse)
}

// placed checks rel, the directory of pv's source path src relative to the peer's root: it must
// be a volume path dirpv accepts, and the very directory the peer a makes for pv by pattern
// (dirpv's translation of the peer's pathPattern). The directory name ties it to the PV's own
// name and claim, so a PV that copies another's path is refused.
func placed(pv *v1.PersistentVolume, a config.Adoption, src, rel, pattern string, claim *v1.PersistentVolumeClaim) error {
	if err := pathname.Validate(rel); err != nil {
		return fmt.Errorf("its path %s: %w", pathname.Quote(src), err)
	}
	want, err := dirOf(pv, pattern, claim)
	if err != nil {
		return err
	}
	if want != rel {
		return fmt.Errorf("its directory %s is not where %s puts its volume (%s)", pathname.Quote(rel), a.Peer, pathname.Quote(want))
	}
	return nil
}

// dirOf is the directory a peer makes for pv by pattern, relative to its root.
func dirOf(pv *v1.PersistentVolume, pattern string, claim *v1.PersistentVolumeClaim) (string, error) {
	ref := pv.Spec.ClaimRef
	if ref == nil || ref.Name == "" || ref.Namespace == "" {
		return "", errors.New("it names no claim, so where its directory should be is not known")
	}
	data := pathname.Data{PVC: pathname.Claim{Namespace: ref.Namespace, Name: ref.Name}, PV: pathname.Volume{Name: pv.Name}}
	if claim != nil {
		if claim.UID != ref.UID || claim.Namespace != ref.Namespace || claim.Name != ref.Name {
			return "", fmt.Errorf("claim %s/%s is not the one it is bound to", claim.Namespace, claim.Name)
		}
		data.PVC.Labels, data.PVC.Annotations = claim.Labels, claim.Annotations
	}
	t, err := pathname.Parse(pattern)
	if err != nil {
		return "", err
	}
	p, err := pathname.Render(t, data)
	if err != nil && claim == nil {
		return "", fmt.Errorf("its claim is gone, and its directory's name needs the claim's labels or annotations (take it over while the claim exists: dirpv adopt): %w", err)
	}
	if err != nil {
		return "", err
	}
	// Both peers join the rendered pattern to their root, which cleans it.
	return path.Clean(p), nil
}
