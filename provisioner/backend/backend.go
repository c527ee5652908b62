// Package backend defines where volume directories live and how dirpv reaches them. A Volume is
// recorded on its PV at provision time, so reclaiming it never depends on the StorageClass again.
package backend

import (
	"context"
	"errors"
	"fmt"
	"path"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Annotations recorded on every PV dirpv provisions.
const (
	AnnBackend = "dirpv.io/backend"
	AnnServer  = "dirpv.io/server"
	AnnShare   = "dirpv.io/share"
	AnnNode    = "dirpv.io/node"
	// AnnNodeUID is the UID of the Node object a hostPath volume was made under: a node that is
	// deleted and joins again gets a new one, and its old volumes are left alone.
	AnnNodeUID  = "dirpv.io/node-uid"
	AnnBasePath = "dirpv.io/base-path"
	AnnPath     = "dirpv.io/path"
	AnnOnDelete = "dirpv.io/on-delete"
	// AnnReclaim is "Recycle" on volumes dirpv recycles itself; their Kubernetes policy is Retain.
	AnnReclaim = "dirpv.io/reclaim"
	// LabelReclaim mirrors AnnReclaim for `kubectl get pv -l dirpv.io/reclaim=recycle`.
	LabelReclaim = "dirpv.io/reclaim"
	// ReclaimRecycle is AnnReclaim's value; LabelRecycle is LabelReclaim's.
	ReclaimRecycle = "Recycle"
	LabelRecycle   = "recycle"
	// FinalizerReclaim is on recycling PVs: deleting one reclaims its directory by its onDelete
	// first, as their Kubernetes policy, Retain, would leave it behind.
	FinalizerReclaim = "dirpv.io/reclaim-directory"
)

// ErrNodeGone means the node holding a hostPath volume no longer exists.
var ErrNodeGone = errors.New("node no longer exists")

// Backend is one kind of place where volume directories are made.
type Backend interface {
	// Place checks a class against this process's configuration and returns where a volume of it
	// goes for the claim in opts (Path and OnDelete are left for the caller).
	Place(class *config.Class, opts controller.ProvisionOptions) (Volume, error)
	// Allowed checks that a volume recorded on a PV lies within this process's configured roots.
	Allowed(v Volume) error
	// Run performs op on v; op.Path is v.Path, and Run makes it relative to the operator's root
	// (the export's mount, --hostpath-root) where the operation runs.
	Run(ctx context.Context, v Volume, op volumeop.Op) (volumeop.Result, error)
}

// Volume locates one volume directory.
type Volume struct {
	Backend config.Backend
	// Server and Share: nfs.
	Server string
	Share  string
	// Node, NodeUID and BasePath: hostPath. Hostname is the node's kubernetes.io/hostname label.
	Node     string
	NodeUID  string
	Hostname string
	BasePath string
	// Path is the directory relative to Share or BasePath.
	Path     string
	OnDelete config.OnDelete
	// Recycle: released, the volume is scrubbed and offered to the next claim.
	Recycle bool
}

// Root is the absolute path of the directory that Path is relative to, as the server or node sees it.
func (v Volume) Root() string {
	if v.Backend == config.BackendNFS {
		return v.Share
	}
	return v.BasePath
}

// FullPath is the volume directory's absolute path on the server or node.
func (v Volume) FullPath() string { return path.Join(v.Root(), v.Path) }

// String names the volume for messages.
func (v Volume) String() string {
	if v.Backend == config.BackendNFS {
		return fmt.Sprintf("%s:%s", v.Server, v.FullPath())
	}
	return fmt.Sprintf("%s on node %s", v.FullPath(), v.Node)
}

// Annotations records v for the PV.
func (v Volume) Annotations() map[string]string {
	a := map[string]string{AnnBackend: string(v.Backend), AnnPath: v.Path, AnnOnDelete: string(v.OnDelete)}
	if v.Backend == config.BackendNFS {
		a[AnnServer], a[AnnShare] = v.Server, v.Share
	} else {
		a[AnnNode], a[AnnBasePath] = v.Node, v.BasePath
		if v.NodeUID != "" {
			a[AnnNodeUID] = v.NodeUID
		}
	}
	if v.Recycle {
		a[AnnReclaim] = ReclaimRecycle
	}
	return a
}

// Source is the PV's volume source and node affinity for v.
func (v Volume) Source() (v1.PersistentVolumeSource, *v1.VolumeNodeAffinity) {
	if v.Backend == config.BackendNFS {
		return v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: v.Server, Path: v.FullPath()}}, nil
	}
	// Type Directory: a pod that lands where the directory is missing fails loudly instead of
	// getting a fresh empty directory.
	dir := v1.HostPathDirectory
	affinity := &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
		MatchExpressions: []v1.NodeSelectorRequirement{{
			Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{v.Hostname},
		}},
	}}}}
	return v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: v.FullPath(), Type: &dir}}, affinity
}

// FromPV reads the volume recorded on pv and checks it against pv's own source, so that forged or
// inconsistent annotations are refused before anything on disk is touched.
func FromPV(pv *v1.PersistentVolume) (Volume, error) {
	a := pv.Annotations
	v := Volume{
		Backend: config.Backend(a[AnnBackend]), Path: a[AnnPath], OnDelete: config.OnDelete(a[AnnOnDelete]),
		Server: a[AnnServer], Share: a[AnnShare], Node: a[AnnNode], NodeUID: a[AnnNodeUID], BasePath: a[AnnBasePath],
		Recycle: a[AnnReclaim] == ReclaimRecycle,
	}
	if r, ok := a[AnnReclaim]; ok && r != ReclaimRecycle {
		return v, fmt.Errorf("annotation %s: %q is not %s", AnnReclaim, r, ReclaimRecycle)
	}
	if err := pathname.Validate(v.Path); err != nil {
		return v, fmt.Errorf("annotation %s: %w", AnnPath, err)
	}
	switch v.OnDelete {
	case config.OnDeleteDelete, config.OnDeleteRetain, config.OnDeleteArchive:
	default:
		return v, fmt.Errorf("annotation %s: %q is not one of delete, retain, archive", AnnOnDelete, v.OnDelete)
	}
	switch v.Backend {
	case config.BackendNFS:
		if _, err := config.CleanAbsolute(v.Share); err != nil {
			return v, fmt.Errorf("annotation %s: %w", AnnShare, err)
		}
		if s := pv.Spec.NFS; s == nil || s.Server != v.Server || s.Path != v.FullPath() {
			return v, fmt.Errorf("the PV's nfs source does not match its %s annotations (%s)", "dirpv.io/", v)
		}
	case config.BackendHostPath:
		if _, err := config.CleanAbsolute(v.BasePath); err != nil {
			return v, fmt.Errorf("annotation %s: %w", AnnBasePath, err)
		}
		if v.Node == "" {
			return v, fmt.Errorf("annotation %s is missing", AnnNode)
		}
		if s := pv.Spec.HostPath; s == nil || s.Path != v.FullPath() {
			return v, fmt.Errorf("the PV's hostPath source does not match its %s annotations (%s)", "dirpv.io/", v)
		}
	default:
		return v, fmt.Errorf("annotation %s: %q is not one of nfs, hostPath", AnnBackend, v.Backend)
	}
	return v, nil
}
