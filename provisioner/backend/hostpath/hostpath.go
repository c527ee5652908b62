// Package hostpath serves volumes as directories on the node a claim's pod is scheduled to: the
// class, where a volume goes, and what its PV records. The work on the node reaches it through a
// nodeexec.Runner.
package hostpath

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
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
	// ParamBasePath is the class's root, or several separated by commas (one per disk, say).
	ParamBasePath   = "basePath"
	DefaultBasePath = "/var/lib/dirpv"
	// ParamRequireMount "true": a root is used only where it is the root of a mounted
	// filesystem, never a plain directory left where a disk failed to mount.
	ParamRequireMount = "requireMount"
	// ParamRootPolicy chooses among the roots with room for a volume.
	ParamRootPolicy = "rootPolicy"
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

// RootPolicy is how a volume's root is chosen among those with room for it.
type RootPolicy string

const (
	// MostRoom: the root with the most room, which spreads volumes over the disks.
	MostRoom RootPolicy = "mostRoom"
	// LeastRoom: the root with the least room that fits, which fills one disk before the next
	// and keeps the large rooms for large volumes.
	LeastRoom RootPolicy = "leastRoom"
)

// maxRoots bounds the roots of a class: each is measured on the node for each claim.
const maxRoots = 16

// Class is the hostPath part of a StorageClass.
type Class struct {
	// BasePaths are the directories on a node under which volumes are made, in the order the
	// class gives them (which breaks ties).
	BasePaths []string
	// RequireMount: a root is used only where a filesystem is mounted on it.
	RequireMount bool
	RootPolicy   RootPolicy
	// VolumeType is the source of its PVs.
	VolumeType VolumeType
}

// measured says whether the class's roots are measured on a node before a volume is placed:
// when there is a choice, or a mount to check. A class of one root that need not be a mount
// makes it on demand, as its first volume is made.
func (c Class) measured() bool { return len(c.BasePaths) > 1 || c.RequireMount }

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
	// Changed, when set, is told of each node where an operation may have changed the room
	// (a create, delete or resize), so that the room published for it is measured again.
	Changed func(node string)
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
func (b *Backend) Params() []string {
	return []string{ParamBasePath, ParamVolumeType, ParamRequireMount, ParamRootPolicy}
}

// ParseParams implements config.Backend; it returns a Class.
func (b *Backend) ParseParams(params map[string]string, bad func(key, format string, args ...any)) any {
	c := Class{BasePaths: []string{DefaultBasePath}, VolumeType: VolumeTypeHostPath, RootPolicy: MostRoom}
	if v, ok := params[ParamBasePath]; ok {
		if roots, err := parseRoots(v); err != nil {
			bad(ParamBasePath, "%v", err)
		} else {
			c.BasePaths = roots
		}
	}
	config.OneOf(params, ParamVolumeType, bad, &c.VolumeType, VolumeTypeHostPath, VolumeTypeLocal)
	config.OneOf(params, ParamRootPolicy, bad, &c.RootPolicy, MostRoom, LeastRoom)
	mount := "false"
	config.OneOf(params, ParamRequireMount, bad, &mount, "true", "false")
	c.RequireMount = mount == "true"
	if c.RequireMount && slices.Contains(c.BasePaths, b.Root) {
		bad(ParamRequireMount, "basePath %s is --hostpath-root itself: dirpv tells a mounted filesystem from a plain directory only below it (make --hostpath-root the disks' parent)", b.Root)
	}
	return c
}

// parseRoots reads basePath: one root or several separated by commas, none inside another.
func parseRoots(v string) ([]string, error) {
	var roots []string
	for _, r := range strings.Split(v, ",") {
		p, err := config.CleanRoot(strings.Trim(r, " ")) // spaces after commas only: every other character counts
		if err != nil {
			return nil, err
		}
		for _, q := range roots {
			if _, in := config.RelWithin(q, p); in {
				return nil, fmt.Errorf("%s is given twice, or inside %s: roots of a class lie apart", p, q)
			}
			if _, in := config.RelWithin(p, q); in {
				return nil, fmt.Errorf("%s lies inside %s: roots of a class lie apart", q, p)
			}
		}
		roots = append(roots, p)
	}
	if len(roots) > maxRoots {
		return nil, fmt.Errorf("%d roots: at most %d", len(roots), maxRoots)
	}
	return roots, nil
}

// AccessModes implements backend.Backend: a directory on a node serves that node's pods only.
func (b *Backend) AccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadWriteOncePod}
}

// Place implements backend.Backend: on the claim's selected node, or with Immediate binding on
// the node dirpv chooses, in the root with room for it that the class's policy prefers.
func (b *Backend) Place(ctx context.Context, class *config.Class, opts controller.ProvisionOptions) (backend.Location, error) {
	c, ok := class.Params.(Class)
	if !ok {
		return nil, fmt.Errorf("not a hostPath class: %T", class.Params)
	}
	sc := opts.StorageClass
	if len(sc.MountOptions) > 0 {
		return nil, fmt.Errorf("StorageClass %s: backend hostPath does not support mountOptions", sc.Name)
	}
	for _, root := range c.BasePaths {
		if _, err := b.base(root); err != nil {
			return nil, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
		}
	}
	w := want{class: class, c: c, bytes: requested(opts.PVC)}
	node := opts.SelectedNode
	var root string
	var err error
	switch {
	case node == nil && (sc.VolumeBindingMode == nil || *sc.VolumeBindingMode == storagev1.VolumeBindingImmediate):
		node, root, err = b.chooseNode(ctx, sc, w)
	case node == nil:
		return nil, errors.New("the claim has no selected node yet; backend hostPath needs one with WaitForFirstConsumer binding")
	case !c.measured():
		root = c.BasePaths[0]
	default:
		var best measure
		best, err = b.chooseRoot(b.measure(ctx, node.Name, w), w)
		root = best.root
	}
	if err != nil {
		return nil, err
	}
	return Location{Node: node.Name, NodeUID: string(node.UID), Hostname: HostnameOf(node), BasePath: root, VolumeType: c.VolumeType}, nil
}

// HostnameOf is node's kubernetes.io/hostname label, which node affinity selects.
func HostnameOf(node *v1.Node) string {
	if h := node.Labels[v1.LabelHostname]; h != "" {
		return h
	}
	return node.Name
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
	_, err := b.base(l.BasePath)
	return l, err
}

// node reads the Node called name.
func (b *Backend) node(ctx context.Context, name string) (*v1.Node, error) {
	if b.Nodes != nil {
		return b.Nodes.Get(name)
	}
	return b.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// base is the root p relative to --hostpath-root ("." for the root itself).
func (b *Backend) base(p string) (string, error) {
	rel, ok := config.RelWithin(b.Root, p)
	if !ok {
		return "", fmt.Errorf("basePath %s is not within the provisioner's --hostpath-root %s", p, b.Root)
	}
	if rel != "." {
		if err := pathname.Validate(rel); err != nil {
			return "", fmt.Errorf("basePath %s: %w", p, err)
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
	base, err := b.base(v.BasePath)
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
	res, err := b.Node.Run(ctx, v.Node, b.Root, op)
	if b.Changed != nil && op.Kind.ChangesRoom() {
		b.Changed(v.Node)
	}
	return res, err
}
