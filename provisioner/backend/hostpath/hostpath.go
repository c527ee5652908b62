// Package hostpath serves volumes as directories on the node a claim's pod is scheduled to: the
// class, where a volume goes, and what its PV records. The work on the node reaches it through a
// nodeexec.Runner.
package hostpath

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/nodeexec"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Name is the class parameter "backend" and the PV annotation dirpv.io/backend of hostPath volumes.
const Name = "hostPath"

// Class parameter, its default, and PV annotations of hostPath volumes.
const (
	ParamBasePath   = "basePath"
	DefaultBasePath = "/var/lib/dirpv"
	AnnNode         = "dirpv.io/node"
	// AnnNodeUID is the UID of the Node object a volume was made under: a node that is deleted
	// and joins again gets a new one, and its old volumes are left alone.
	AnnNodeUID  = "dirpv.io/node-uid"
	AnnBasePath = "dirpv.io/base-path"
	// ParamVolumeType is the class parameter choosing the PVs' source, VolumeTypeHostPath by
	// default.
	ParamVolumeType = "volumeType"
)

// VolumeType is the source of a hostPath class's PVs: the same directory either way.
type VolumeType string

const (
	// VolumeTypeHostPath: a hostPath source (type Directory).
	VolumeTypeHostPath VolumeType = "hostPath"
	// VolumeTypeLocal: a local source, for which the kubelet reports volume stats
	// (kubelet_volume_stats_*) and applies a pod's fsGroup.
	VolumeTypeLocal VolumeType = "local"
)

// Class is the hostPath part of a StorageClass.
type Class struct {
	// BasePath is the directory on the node under which volumes are made.
	BasePath string
	// VolumeType is the source of its PVs.
	VolumeType VolumeType
}

// Location is where a hostPath volume lives: Path is relative to BasePath on Node.
type Location struct {
	Node    string
	NodeUID string
	// Hostname is the node's kubernetes.io/hostname label, which node affinity selects; known
	// when the volume is placed (the PV records it in its affinity).
	Hostname string
	BasePath string
	// VolumeType is the PV's source; Locate reads it back from the source itself.
	VolumeType VolumeType
}

var _ backend.Location = Location{}

// Root implements backend.Location.
func (l Location) Root() string { return l.BasePath }

// Describe implements backend.Location.
func (l Location) Describe(fullPath string) string { return fullPath + " on node " + l.Node }

// Annotations implements backend.Location.
func (l Location) Annotations() map[string]string {
	a := map[string]string{AnnNode: l.Node, AnnBasePath: l.BasePath}
	if l.NodeUID != "" {
		a[AnnNodeUID] = l.NodeUID
	}
	return a
}

// Spec implements backend.Location: a hostPath or local source pinned to the node.
func (l Location) Spec(spec *v1.PersistentVolumeSpec, fullPath string, _ *storagev1.StorageClass) {
	if l.VolumeType == VolumeTypeLocal {
		spec.Local = &v1.LocalVolumeSource{Path: fullPath}
	} else {
		// Type Directory: a pod that lands where the directory is missing fails loudly instead
		// of getting a fresh empty directory.
		dir := v1.HostPathDirectory
		spec.HostPath = &v1.HostPathVolumeSource{Path: fullPath, Type: &dir}
	}
	// A local PV requires this affinity; a hostPath one needs it to stay on its node.
	spec.NodeAffinity = &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
		MatchExpressions: []v1.NodeSelectorRequirement{{
			Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{l.Hostname},
		}},
	}}}}
}

// Backend places volumes under basePath on nodes.
type Backend struct {
	Client kubernetes.Interface
	// Nodes reads Nodes from a cache; nil: from the API, one GET an operation.
	Nodes corelisters.NodeLister
	// Root bounds every basePath (--hostpath-root).
	Root string
	// Node runs the operations on the volume's node.
	Node    nodeexec.Runner
	Timeout time.Duration
}

var _ backend.Backend = (*Backend)(nil)

// New is the backend as the options configure it, its volumes' nodes read from nodes (nil: from
// the API) and its operations run there by node.
func New(o *config.Options, client kubernetes.Interface, nodes corelisters.NodeLister, node nodeexec.Runner) *Backend {
	return &Backend{Client: client, Nodes: nodes, Root: o.HostPathRoot, Node: node, Timeout: o.OperationTimeout}
}

// Name implements config.Backend.
func (b *Backend) Name() string { return Name }

// Params implements config.Backend.
func (b *Backend) Params() []string { return []string{ParamBasePath, ParamVolumeType} }

// ParseParams implements config.Backend; it returns a Class.
func (b *Backend) ParseParams(params map[string]string, bad func(key, format string, args ...any)) any {
	c := Class{BasePath: DefaultBasePath, VolumeType: VolumeTypeHostPath}
	if v, ok := params[ParamBasePath]; ok {
		if p, err := config.CleanRoot(v); err != nil {
			bad(ParamBasePath, "%v", err)
		} else {
			c.BasePath = p
		}
	}
	config.OneOf(params, ParamVolumeType, bad, &c.VolumeType, VolumeTypeHostPath, VolumeTypeLocal)
	return c
}

// AccessModes implements backend.Backend: a directory on a node serves that node's pods only.
func (b *Backend) AccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadWriteOncePod}
}

// Place implements backend.Backend.
func (b *Backend) Place(class *config.Class, opts controller.ProvisionOptions) (backend.Location, error) {
	c, ok := class.Params.(Class)
	if !ok {
		return nil, fmt.Errorf("not a hostPath class: %T", class.Params)
	}
	sc := opts.StorageClass
	if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		return nil, fmt.Errorf("StorageClass %s: backend hostPath requires volumeBindingMode: WaitForFirstConsumer, so the directory is made on the node the pod is scheduled to", sc.Name)
	}
	if len(sc.MountOptions) > 0 {
		return nil, fmt.Errorf("StorageClass %s: backend hostPath does not support mountOptions", sc.Name)
	}
	node := opts.SelectedNode
	if node == nil {
		return nil, errors.New("the claim has no selected node yet; backend hostPath needs WaitForFirstConsumer binding")
	}
	hostname := node.Labels[v1.LabelHostname]
	if hostname == "" {
		hostname = node.Name
	}
	l := Location{Node: node.Name, NodeUID: string(node.UID), Hostname: hostname, BasePath: c.BasePath, VolumeType: c.VolumeType}
	_, err := b.base(l)
	return l, err
}

// Locate implements backend.Backend: the PV's source, hostPath or local (either, whatever its
// class says now), must be the directory its annotations name; basePath must lie within
// --hostpath-root, and below it only in directories that can hold volumes (no names starting
// with ".", which are dirpv's).
func (b *Backend) Locate(pv *v1.PersistentVolume, p string) (backend.Location, error) {
	a := pv.Annotations
	l := Location{Node: a[AnnNode], NodeUID: a[AnnNodeUID], BasePath: a[AnnBasePath]}
	if _, err := config.CleanAbsolute(l.BasePath); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnBasePath, err)
	}
	if l.Node == "" {
		return nil, fmt.Errorf("annotation %s is missing", AnnNode)
	}
	var src string
	switch s := pv.Spec; {
	case s.HostPath != nil && s.Local == nil:
		l.VolumeType, src = VolumeTypeHostPath, s.HostPath.Path
	case s.Local != nil && s.HostPath == nil:
		l.VolumeType, src = VolumeTypeLocal, s.Local.Path
	default:
		return nil, fmt.Errorf("the PV must have one source, hostPath or local, of the directory its dirpv.io/ annotations name (%s)", l.Describe(path.Join(l.BasePath, p)))
	}
	if src != path.Join(l.BasePath, p) {
		return nil, fmt.Errorf("the PV's %s source does not match its dirpv.io/ annotations (%s)", l.VolumeType, l.Describe(path.Join(l.BasePath, p)))
	}
	_, err := b.base(l)
	return l, err
}

// node reads the Node called name.
func (b *Backend) node(ctx context.Context, name string) (*v1.Node, error) {
	if b.Nodes != nil {
		return b.Nodes.Get(name)
	}
	return b.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// base is v's basePath relative to --hostpath-root ("." for the root itself).
func (b *Backend) base(v Location) (string, error) {
	rel, ok := config.RelWithin(b.Root, v.BasePath)
	if !ok {
		return "", fmt.Errorf("basePath %s is not within the provisioner's --hostpath-root %s", v.BasePath, b.Root)
	}
	if rel != "." {
		if err := pathname.Validate(rel); err != nil {
			return "", fmt.Errorf("basePath %s: %w", v.BasePath, err)
		}
	}
	return rel, nil
}

// Run implements backend.Backend. Every operation runs in --hostpath-root of the volume's node,
// whatever the class's basePath, so that a volume of any class is seen by every check. It
// returns backend.ErrNodeGone when the node no longer exists, or was deleted and joined again
// since the volume was made (its Node UID changed).
func (b *Backend) Run(ctx context.Context, vol backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	v, ok := vol.Location.(Location)
	if !ok {
		return volumeop.Result{}, fmt.Errorf("not a hostPath volume: %s", vol)
	}
	base, err := b.base(v)
	if err != nil {
		return volumeop.Result{}, err
	}
	op.Path = path.Join(base, op.Path)
	ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("%s on node %s took longer than %v", op.Kind, v.Node, b.Timeout))
	defer cancel()
	node, err := b.node(ctx, v.Node)
	switch {
	case apierrors.IsNotFound(err):
		return volumeop.Result{}, fmt.Errorf("node %s no longer exists: %w", v.Node, backend.ErrNodeGone)
	case err != nil:
		return volumeop.Result{}, err
	case v.NodeUID != "" && string(node.UID) != v.NodeUID:
		return volumeop.Result{}, fmt.Errorf("node %s was deleted and joined again since the volume was made (Node UID %s, now %s): %w",
			v.Node, v.NodeUID, node.UID, backend.ErrNodeGone)
	}
	op.Owner.NodeUID = string(node.UID)
	return b.Node.Run(ctx, v.Node, b.Root, op)
}
