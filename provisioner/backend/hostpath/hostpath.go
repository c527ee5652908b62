// Package hostpath serves volumes as directories on the node a claim's pod is scheduled to. Work on
// the node runs in a short-lived helper pod built from code (dirpv's own image, `dirpv helper`), or
// in-process when dirpv runs on that node with the node's root mounted (--local-root).
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
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Backend places volumes under basePath on nodes.
type Backend struct {
	Client kubernetes.Interface
	// Root bounds every basePath (--hostpath-root).
	Root string
	// LocalRoot and LocalNode: see config.Options.
	LocalRoot string
	LocalNode string
	Helper    *PodRunner
	Timeout   time.Duration
}

var _ backend.Backend = (*Backend)(nil)

// Place implements backend.Backend.
func (b *Backend) Place(class *config.Class, opts controller.ProvisionOptions) (backend.Volume, error) {
	sc := opts.StorageClass
	if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		return backend.Volume{}, fmt.Errorf("StorageClass %s: backend hostPath requires volumeBindingMode: WaitForFirstConsumer, so the directory is made on the node the pod is scheduled to", sc.Name)
	}
	if len(sc.MountOptions) > 0 {
		return backend.Volume{}, fmt.Errorf("StorageClass %s: backend hostPath does not support mountOptions", sc.Name)
	}
	node := opts.SelectedNode
	if node == nil {
		return backend.Volume{}, errors.New("the claim has no selected node yet; backend hostPath needs WaitForFirstConsumer binding")
	}
	hostname := node.Labels[v1.LabelHostname]
	if hostname == "" {
		hostname = node.Name
	}
	v := backend.Volume{Backend: config.BackendHostPath, Node: node.Name, NodeUID: string(node.UID), Hostname: hostname, BasePath: class.BasePath}
	return v, b.Allowed(v)
}

// Allowed implements backend.Backend: basePath must lie within --hostpath-root, and below it
// only in directories that can hold volumes (no names starting with ".", which are dirpv's).
func (b *Backend) Allowed(v backend.Volume) error {
	_, err := b.base(v)
	return err
}

// base is v's basePath relative to --hostpath-root ("." for the root itself).
func (b *Backend) base(v backend.Volume) (string, error) {
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
func (b *Backend) Run(ctx context.Context, v backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	base, err := b.base(v)
	if err != nil {
		return volumeop.Result{}, err
	}
	op.Path = path.Join(base, op.Path)
	ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("%s on node %s took longer than %v", op.Kind, v.Node, b.Timeout))
	defer cancel()
	node, err := b.Client.CoreV1().Nodes().Get(ctx, v.Node, metav1.GetOptions{})
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
	if b.LocalRoot != "" && (b.LocalNode == "" || b.LocalNode == v.Node) {
		return volumeop.RunLocal(ctx, b.LocalRoot, op)
	}
	return b.Helper.Run(ctx, v.Node, b.Root, op)
}
