// Package backend defines where volume directories live and how dirpv reaches them. A Volume is
// recorded on its PV at provision time, so reclaiming it never depends on the StorageClass again.
// Each backend package owns everything about its kind of volume; this package and its callers
// never switch on the kind.
package backend

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Annotations recorded on every PV dirpv provisions; each backend adds its own.
const (
	AnnBackend  = "dirpv.io/backend"
	AnnPath     = "dirpv.io/path"
	AnnOnDelete = "dirpv.io/on-delete"
	// AnnCapacity is "enforce" on volumes held to their size; AnnQuota names what holds one.
	AnnCapacity = "dirpv.io/capacity"
	AnnQuota    = "dirpv.io/quota"
	// AnnOvercommit is the class's overcommit factor of an enforced volume, when it is not 1.
	AnnOvercommit = "dirpv.io/overcommit"
	// AnnReclaim is "Recycle" on volumes dirpv recycles itself; their Kubernetes policy is Retain.
	AnnReclaim = "dirpv.io/reclaim"
	// LabelReclaim mirrors AnnReclaim for `kubectl get pv -l dirpv.io/reclaim=recycle`.
	LabelReclaim = "dirpv.io/reclaim"
	// ReclaimRecycle is AnnReclaim's value; LabelRecycle is LabelReclaim's.
	ReclaimRecycle = "Recycle"
	LabelRecycle   = "recycle"
	// AnnAdoptedFrom names the provisioner (config.Peer) whose conventions the volume follows:
	// one of its PVs dirpv took over, or one made for a claim of its StorageClass. Its archives
	// are named as that provisioner names them.
	AnnAdoptedFrom = "dirpv.io/adopted-from"
	// FinalizerReclaim is on recycling PVs: deleting one reclaims its directory by its onDelete
	// first, as their Kubernetes policy, Retain, would leave it behind.
	FinalizerReclaim = "dirpv.io/reclaim-directory"
)

// AnnProvisionedBy names the provisioner that made a PV; the provisioner library sets it.
const AnnProvisionedBy = "pv.kubernetes.io/provisioned-by"

// Ours reports whether pv was provisioned by a provisioner of one of names.
func Ours(pv *v1.PersistentVolume, names []string) bool {
	return slices.Contains(names, pv.Annotations[AnnProvisionedBy])
}

// Recorded reports whether pv bears dirpv's record of its volume (it was made by dirpv, or
// adopted), without checking it: FromPV does.
func Recorded(pv *v1.PersistentVolume) bool {
	_, ok := pv.Annotations[AnnBackend]
	return ok
}

// Recycles reports whether pv's record says dirpv recycles its volume (see Volume.Recycle),
// without checking the rest of the record: FromPV does.
func Recycles(pv *v1.PersistentVolume) bool { return pv.Annotations[AnnReclaim] == ReclaimRecycle }

// Enforced reports whether pv's record says its volume is held to its size (see
// Volume.Enforced), without checking the rest of the record: FromPV does.
func Enforced(pv *v1.PersistentVolume) bool {
	return pv.Annotations[AnnCapacity] == string(config.CapacityEnforce)
}

// ErrNodeGone means the node holding a volume no longer exists.
var ErrNodeGone = errors.New("node no longer exists")

// Backend is one kind of place where volume directories are made.
type Backend interface {
	// Name, Params and ParseParams: its class parameters.
	config.Backend
	// AccessModes lists the access modes its volumes can honour.
	AccessModes() []v1.PersistentVolumeAccessMode
	// Place checks a class of this backend against this process's configuration and returns
	// where a volume of it goes for the claim in opts. An error matching quota.ErrNoRoom means
	// the claim's selected node cannot take it: the scheduler had better choose another.
	Place(ctx context.Context, class *config.Class, opts controller.ProvisionOptions) (Location, error)
	// Locate reads the location recorded on a PV of this backend whose volume path is path (valid),
	// checks it against the PV's own source, so that forged or inconsistent annotations are
	// refused before anything on disk is touched, and checks that it lies within this process's
	// configured roots.
	Locate(pv *v1.PersistentVolume, path string) (Location, error)
	// Run performs op on v; op.Path is v.Path, and Run makes it relative to the operator's root
	// (the export's mount, --hostpath-root) where the operation runs.
	Run(ctx context.Context, v Volume, op volumeop.Op) (volumeop.Result, error)
}

// Rooms is a Backend whose volumes are local to nodes, and whose room on each can be measured
// for the scheduler.
type Rooms interface {
	// Room is the room for class's volumes on node: in all, and for the largest volume that fits.
	Room(ctx context.Context, class *config.Class, node *v1.Node) (total, largest uint64, err error)
}

// Location is where a backend puts a volume: all of it but its path below Root.
type Location interface {
	// Root is the absolute path, on the server or node, that volume paths are relative to.
	Root() string
	// Describe names the volume directory at fullPath for messages.
	Describe(fullPath string) string
	// Annotations records the location on the PV.
	Annotations() map[string]string
	// Spec sets the PV's source, node affinity and mount options for the directory at fullPath
	// made for a class sc.
	Spec(spec *v1.PersistentVolumeSpec, fullPath string, sc *storagev1.StorageClass)
}

// Volume is one volume directory.
type Volume struct {
	// Backend is the name of the backend that made it, Location where.
	Backend  string
	Location Location
	// Path is the directory relative to Location.Root.
	Path     string
	OnDelete config.OnDelete
	// Recycle: released, the volume is scrubbed and offered to the next claim.
	Recycle bool
	// Enforced: the volume is held to its size (class parameter capacity: enforce), and may grow
	// while the limits on its filesystem stay within its size times Overcommit.
	Enforced   bool
	Overcommit float64
	// Peer is the provisioner whose conventions the volume follows (see AnnAdoptedFrom); empty:
	// dirpv's own.
	Peer config.Peer
}

// FullPath is the volume directory's absolute path on the server or node.
func (v Volume) FullPath() string { return path.Join(v.Location.Root(), v.Path) }

// String names the volume for messages.
func (v Volume) String() string { return v.Location.Describe(v.FullPath()) }

// Annotations records v for the PV.
func (v Volume) Annotations() map[string]string {
	a := v.Location.Annotations()
	a[AnnBackend], a[AnnPath], a[AnnOnDelete] = v.Backend, v.Path, string(v.OnDelete)
	if v.Recycle {
		a[AnnReclaim] = ReclaimRecycle
	}
	if v.Peer != "" {
		a[AnnAdoptedFrom] = string(v.Peer)
	}
	if v.Enforced {
		a[AnnCapacity] = string(config.CapacityEnforce)
		if v.Overcommit != 1 {
			a[AnnOvercommit] = strconv.FormatFloat(v.Overcommit, 'g', -1, 64)
		}
	}
	return a
}

// Set is the backends a provisioner serves.
type Set []Backend

// Get returns the backend called name, or nil.
func (s Set) Get(name string) Backend {
	for _, b := range s {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// ParseClass validates a StorageClass's parameters for one of the backends in s.
func (s Set) ParseClass(params map[string]string) (*config.Class, Backend, error) {
	all := make([]config.Backend, len(s))
	for i, b := range s {
		all[i] = b
	}
	c, err := config.ParseClass(params, all)
	if err != nil {
		return nil, nil, err
	}
	return c, s.Get(c.Backend), nil
}

// FromPV reads the volume recorded on pv and the backend that made it: forged or foreign
// annotations are refused before anything touches a disk.
func (s Set) FromPV(pv *v1.PersistentVolume) (Volume, Backend, error) {
	a := pv.Annotations
	v := Volume{
		Backend: a[AnnBackend], Path: a[AnnPath], OnDelete: config.OnDelete(a[AnnOnDelete]),
		Recycle: Recycles(pv), Enforced: Enforced(pv),
	}
	if c, ok := a[AnnCapacity]; ok && !v.Enforced {
		return v, nil, fmt.Errorf("annotation %s: %q is not %s", AnnCapacity, c, config.CapacityEnforce)
	}
	v.Overcommit = 1
	if o, ok := a[AnnOvercommit]; ok {
		f, err := config.ParseOvercommit(o)
		if err != nil {
			return v, nil, fmt.Errorf("annotation %s: %w", AnnOvercommit, err)
		}
		if !v.Enforced {
			return v, nil, fmt.Errorf("annotation %s: %q applies only with %s: %s", AnnOvercommit, o, AnnCapacity, config.CapacityEnforce)
		}
		v.Overcommit = f
	}
	if p, ok := a[AnnAdoptedFrom]; ok {
		if v.Peer = config.Peer(p); !slices.Contains(config.Peers, v.Peer) {
			return v, nil, fmt.Errorf("annotation %s: %q is not one of %s", AnnAdoptedFrom, p, config.Join(config.Peers))
		}
	}
	if r, ok := a[AnnReclaim]; ok && r != ReclaimRecycle {
		return v, nil, fmt.Errorf("annotation %s: %q is not %s", AnnReclaim, r, ReclaimRecycle)
	}
	if err := pathname.Validate(v.Path); err != nil {
		return v, nil, fmt.Errorf("annotation %s: %w", AnnPath, err)
	}
	if !slices.Contains(config.OnDeleteValues, v.OnDelete) {
		return v, nil, fmt.Errorf("annotation %s: %q is not one of %s", AnnOnDelete, v.OnDelete, config.Join(config.OnDeleteValues))
	}
	b := s.Get(v.Backend)
	if b == nil {
		var names []string
		for _, b := range s {
			names = append(names, b.Name())
		}
		return v, nil, fmt.Errorf("annotation %s: %q is not one of the backends this provisioner serves (%s)", AnnBackend, v.Backend, strings.Join(names, ", "))
	}
	loc, err := b.Locate(pv, v.Path)
	if err != nil {
		return v, nil, err
	}
	v.Location = loc
	return v, b, nil
}
