// Package dedup makes the objects in dirpv's informer cache smaller. The leader caches every PV
// and claim in the cluster, and most of their bytes are values that many objects hold alike:
// the same requested size, labels, access modes, finalizers, node affinity. Decoding gives each
// object its own copy; a small map alone costs a few hundred bytes. Transform lets objects share
// one copy of each such value, and drops managed fields, which nothing in dirpv reads.
//
// Sharing is safe because cached objects are read-only: whatever changes one works on a deep
// copy (the provisioner library and dirpv do), and a deep copy copies what is shared. Shared
// slices have no spare capacity, so even an append to one cannot write into another object's.
package dedup

import (
	"encoding/json"
	"slices"
	"sync"
	"unique"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
)

const (
	// maxValues bounds the table of shared values; when it is full it starts again (the values
	// already shared stay shared).
	maxValues = 4096
	// maxKey is the largest value shared, as JSON: large values are rarely alike.
	maxKey = 1024
)

// Sharer holds the values that cached objects share. Its Transform is an informer's transform
// function; one Sharer may serve several informers.
type Sharer struct {
	mu     sync.Mutex
	values map[string]any // kind of value and its JSON -> the shared value
}

// New returns an empty Sharer.
func New() *Sharer {
	return &Sharer{values: map[string]any{}}
}

// Transform drops obj's managed fields (and a Node's spec, status and annotations) and, for PVs
// and claims, makes obj share the values it has in common with objects seen before. It returns
// obj.
func (s *Sharer) Transform(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *v1.PersistentVolumeClaim:
		// A claim's labels and annotations are mostly those of its neighbours (a StatefulSet's
		// claims, the claims of a class on a node).
		o.Labels = shareMap(s, "labels", o.Labels)
		o.Annotations = shareMap(s, "annotations", o.Annotations)
		s.meta(&o.ObjectMeta)
		o.Spec.AccessModes = shareSlice(s, "accessModes", o.Spec.AccessModes)
		o.Spec.Resources.Requests = shareMap(s, "resources", o.Spec.Resources.Requests)
		o.Spec.Resources.Limits = shareMap(s, "resources", o.Spec.Resources.Limits)
		internPtr(o.Spec.StorageClassName)
		internPtr(o.Spec.VolumeMode)
		o.Status.AccessModes = shareSlice(s, "accessModes", o.Status.AccessModes)
		o.Status.Capacity = shareMap(s, "resources", o.Status.Capacity)
		o.Status.AllocatedResources = shareMap(s, "resources", o.Status.AllocatedResources)
	case *v1.PersistentVolume:
		// A provisioned PV's annotations name its own directory: they are alike but for that.
		o.Labels = shareMap(s, "labels", o.Labels)
		o.Annotations = internAnnotations(o.Annotations)
		s.meta(&o.ObjectMeta)
		o.Spec.AccessModes = shareSlice(s, "accessModes", o.Spec.AccessModes)
		o.Spec.Capacity = shareMap(s, "resources", o.Spec.Capacity)
		o.Spec.MountOptions = shareSlice(s, "strings", o.Spec.MountOptions)
		if o.Spec.NodeAffinity != nil {
			o.Spec.NodeAffinity = share(s, "nodeAffinity", o.Spec.NodeAffinity)
		}
		o.Spec.StorageClassName = intern(o.Spec.StorageClassName)
		internPtr(o.Spec.VolumeMode)
		if ref := o.Spec.ClaimRef; ref != nil {
			ref.Kind, ref.APIVersion, ref.Namespace = intern(ref.Kind), intern(ref.APIVersion), intern(ref.Namespace)
		}
		if nfs := o.Spec.NFS; nfs != nil {
			nfs.Server = intern(nfs.Server)
		}
		o.Status.Phase = intern(o.Status.Phase)
	case *v1.Node:
		// dirpv reads a Node's name, UID and labels (the selected node's hostname, whether a
		// volume's node is still the one it was made on), and whether it takes pods (for a
		// claim of Immediate binding: cordoned, tainted, Ready): the rest of its spec and status
		// is most of a Node (images, addresses, heartbeats).
		var ready []v1.NodeCondition
		for _, c := range o.Status.Conditions {
			if c.Type == v1.NodeReady {
				ready = []v1.NodeCondition{{Type: v1.NodeReady, Status: c.Status}}
			}
		}
		o.Spec = v1.NodeSpec{Unschedulable: o.Spec.Unschedulable, Taints: o.Spec.Taints}
		o.Status = v1.NodeStatus{Conditions: ready}
		o.Labels = shareMap(s, "labels", o.Labels)
		o.Annotations = nil
	}
	return obj, nil
}

// meta shares the rest of what objects' metadata has in common.
func (s *Sharer) meta(m *metav1.ObjectMeta) {
	m.Namespace = intern(m.Namespace)
	m.Finalizers = shareSlice(s, "strings", m.Finalizers)
}

// shareMap is share for maps; nil and empty maps stay as they are.
func shareMap[M ~map[K]V, K comparable, V any](s *Sharer, kind string, m M) M {
	if len(m) == 0 {
		return m
	}
	return share(s, kind, m)
}

// shareSlice is share for slices, without spare capacity; nil and empty ones stay as they are.
func shareSlice[S ~[]E, E any](s *Sharer, kind string, v S) S {
	if len(v) == 0 {
		return v
	}
	return share(s, kind, slices.Clip(v))
}

// share returns the value of this kind with v's content that objects share, or v, which is then
// shared from now on.
func share[T any](s *Sharer, kind string, v T) T {
	content, err := json.Marshal(v)
	if err != nil || len(content) > maxKey {
		return v
	}
	key := kind + "\x00" + string(content)
	s.mu.Lock()
	defer s.mu.Unlock()
	if shared, ok := s.values[key].(T); ok {
		return shared
	}
	if len(s.values) >= maxValues {
		clear(s.values)
	}
	s.values[key] = v
	return v
}

// internAnnotations returns a copy of a PV's annotations with their keys and values interned,
// but for the path of its directory, which is its own.
func internAnnotations(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	own := make(map[string]string, len(m))
	for k, v := range m {
		if k != backend.AnnPath {
			v = intern(v)
		}
		own[intern(k)] = v
	}
	return own
}

// intern returns s's content in storage shared with every other interned string alike.
func intern[S ~string](s S) S {
	return S(unique.Make(string(s)).Value())
}

func internPtr[S ~string](p *S) {
	if p != nil {
		*p = intern(*p)
	}
}

// NewInformerFactory is the informer factory of every cache dirpv keeps: each object goes through
// a Transform of its own (a table of shared values per cache), and is resynced as the provisioner
// library's caches are.
func NewInformerFactory(client kubernetes.Interface) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, controller.DefaultResyncPeriod,
		informers.WithTransform(New().Transform))
}
