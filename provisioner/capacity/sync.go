package capacity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
)

// sync brings the objects of ours for node nodeName in line with its room: one per class that
// publishes, none for a node that is gone. It reads the caches and writes only what differs. A
// class whose room cannot be measured keeps its object (the last room known beats none, which
// would keep its pods off the node) and makes sync fail, so that the node is retried.
func (p *Publisher) sync(ctx context.Context, nodeName string) error {
	logger := klog.FromContext(ctx).WithValues("node", nodeName)
	ctx = klog.NewContext(ctx, logger)
	defer p.countObjects()
	objs, err := p.oursFor(nodeName)
	if err != nil {
		return err
	}
	node, err := p.Nodes.Get(nodeName)
	if apierrors.IsNotFound(err) {
		// The node is gone, and its room with it.
		return p.deleteAll(ctx, objs)
	}
	if err != nil {
		return err
	}
	byClass := map[string][]*storagev1.CSIStorageCapacity{}
	for _, o := range objs {
		byClass[o.Annotations[AnnClass]] = append(byClass[o.Annotations[AnnClass]], o)
	}
	classes, err := p.Classes.List(labels.Everything())
	if err != nil {
		return err
	}
	slices.SortFunc(classes, func(a, b *storagev1.StorageClass) int { return strings.Compare(a.Name, b.Name) })
	var errs []error
	var unmeasured []string
	for _, sc := range classes {
		if !p.publishes(sc) {
			continue
		}
		have := byClass[sc.Name]
		delete(byClass, sc.Name)
		total, largest, err := p.Source.Room(ctx, sc, node)
		if err != nil {
			logger.Error(err, "Room not measured; the capacity published is kept", "class", sc.Name)
			unmeasured = append(unmeasured, sc.Name)
			continue
		}
		if err := p.publish(ctx, have, p.desired(sc.Name, node, total, largest)); err != nil {
			errs = append(errs, fmt.Errorf("class %s: %w", sc.Name, err))
		}
	}
	// What is left is for classes that are gone or no longer publish.
	for _, class := range slices.Sorted(maps.Keys(byClass)) {
		errs = append(errs, p.deleteAll(ctx, byClass[class]))
	}
	if len(unmeasured) > 0 {
		errs = append(errs, fmt.Errorf("room not measured for class %s", strings.Join(unmeasured, ", ")))
	}
	return errors.Join(errs...)
}

// publishes tells whether the room of sc's volumes is published: sc names the provisioner name
// the scheduler checks room for (Name, the CSIDriver's), and its volumes are local to nodes.
func (p *Publisher) publishes(sc *storagev1.StorageClass) bool {
	return sc.Provisioner == p.Name && p.Source.Publishes(sc)
}

// ours are the objects of ours in the cache.
func (p *Publisher) ours() ([]*storagev1.CSIStorageCapacity, error) {
	all, err := p.Capacities.CSIStorageCapacities(p.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(o *storagev1.CSIStorageCapacity) bool { return !p.isOurs(o) }), nil
}

// oursFor are the objects of ours in the cache for node, by name.
func (p *Publisher) oursFor(node string) ([]*storagev1.CSIStorageCapacity, error) {
	objs, err := p.ours()
	if err != nil {
		return nil, err
	}
	objs = slices.DeleteFunc(objs, func(o *storagev1.CSIStorageCapacity) bool { return o.Annotations[AnnNode] != node })
	slices.SortFunc(objs, func(a, b *storagev1.CSIStorageCapacity) int { return strings.Compare(a.Name, b.Name) })
	return objs, nil
}

func (p *Publisher) isOurs(o *storagev1.CSIStorageCapacity) bool {
	return o.Namespace == p.Namespace && o.Labels[LabelManagedBy] == p.Name
}

// objectName is the name of the object for class on node. It is derived from both, so that a
// create after a crash, or before the cache shows the last one, meets the object made before
// instead of making a second one.
func objectName(class, node string) string {
	sum := sha256.Sum256([]byte(class + "\x00" + node))
	return "dirpv-" + hex.EncodeToString(sum[:])[:16]
}

// desired is the object that publishes room total and largest for class on node.
func (p *Publisher) desired(class string, node *v1.Node, total, largest uint64) *storagev1.CSIStorageCapacity {
	host := node.Labels[TopologyKey]
	if host == "" {
		host = node.Name
	}
	obj := &storagev1.CSIStorageCapacity{
		ObjectMeta: metav1.ObjectMeta{
			Name:        objectName(class, node.Name),
			Namespace:   p.Namespace,
			Labels:      map[string]string{LabelManagedBy: p.Name},
			Annotations: map[string]string{AnnClass: class, AnnNode: node.Name},
		},
		StorageClassName:  class,
		NodeTopology:      &metav1.LabelSelector{MatchLabels: map[string]string{TopologyKey: host}},
		Capacity:          quantity(total),
		MaximumVolumeSize: quantity(largest),
	}
	if p.Owner != nil {
		obj.OwnerReferences = []metav1.OwnerReference{*p.Owner}
	}
	return obj
}

// quantity is n bytes rounded down to whole MiB, which the scheduler compares with claims' sizes:
// a few bytes written on a node do not make a write here. A quantity holds at most MaxInt64,
// which is room enough.
func quantity(n uint64) *resource.Quantity {
	return resource.NewQuantity(int64(min(n, math.MaxInt64)/mib*mib), resource.BinarySI)
}

const mib = 1 << 20

// matches tells whether have says what want says: the room, the class, the node and its
// topology, and the owner.
func (p *Publisher) matches(have, want *storagev1.CSIStorageCapacity) bool {
	return !immutableDiffers(have, want) &&
		sameQuantity(have.Capacity, want.Capacity) &&
		sameQuantity(have.MaximumVolumeSize, want.MaximumVolumeSize) &&
		have.Labels[LabelManagedBy] == want.Labels[LabelManagedBy] &&
		have.Annotations[AnnClass] == want.Annotations[AnnClass] &&
		have.Annotations[AnnNode] == want.Annotations[AnnNode] &&
		(p.Owner == nil || equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences))
}

// immutableDiffers tells whether have differs from want in a field that cannot be updated.
func immutableDiffers(have, want *storagev1.CSIStorageCapacity) bool {
	return have.StorageClassName != want.StorageClassName ||
		!equality.Semantic.DeepEqual(have.NodeTopology, want.NodeTopology)
}

// sameQuantity compares by value: the API may keep another form of the same number.
func sameQuantity(a, b *resource.Quantity) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Cmp(*b) == 0
}

// publish makes have, the objects of ours for want's class and node, into want alone. The one
// named as want is kept, or else one of them (an older scheme's), and any others deleted: the
// scheduler would take the room of any of them.
func (p *Publisher) publish(ctx context.Context, have []*storagev1.CSIStorageCapacity, want *storagev1.CSIStorageCapacity) error {
	keep := slices.IndexFunc(have, func(o *storagev1.CSIStorageCapacity) bool { return o.Name == want.Name })
	if keep < 0 && len(have) > 0 {
		keep = 0
	}
	for i, o := range have {
		if i != keep {
			if err := p.delete(ctx, o); err != nil {
				return err
			}
		}
	}
	if keep < 0 {
		return p.create(ctx, want)
	}
	return p.reconcile(ctx, have[keep], want, false)
}

// reconcile makes have say what want says, if it does not already. fresh tells that have was
// just read from the API: a conflict on another's copy means the cache lagged behind, and is
// retried once with the API's copy.
func (p *Publisher) reconcile(ctx context.Context, have, want *storagev1.CSIStorageCapacity, fresh bool) error {
	if p.matches(have, want) {
		return nil
	}
	if immutableDiffers(have, want) {
		// The class or the node's hostname label changed (neither can be updated): a new
		// object replaces the old one.
		if err := p.delete(ctx, have); err != nil {
			return err
		}
		return p.createOnce(ctx, want)
	}
	err := p.update(ctx, have, want)
	if fresh || !apierrors.IsConflict(err) {
		return err
	}
	got, err := p.get(ctx, have.Name)
	if err != nil {
		return err
	}
	return p.reconcile(ctx, got, want, true)
}

// create makes want. If it exists already, although not in the cache, it is brought in line.
func (p *Publisher) create(ctx context.Context, want *storagev1.CSIStorageCapacity) error {
	err := p.createOnce(ctx, want)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	got, err := p.get(ctx, want.Name)
	if err != nil {
		return err
	}
	return p.reconcile(ctx, got, want, true)
}

func (p *Publisher) createOnce(ctx context.Context, want *storagev1.CSIStorageCapacity) error {
	p.own.sending(want)
	if _, err := p.Client.StorageV1().CSIStorageCapacities(p.Namespace).Create(ctx, want, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return err
		}
		return fmt.Errorf("creating CSIStorageCapacity %s: %w", want.Name, err)
	}
	p.wrote("create")
	klog.FromContext(ctx).V(2).Info("Published capacity", "object", klog.KObj(want),
		"class", want.StorageClassName, "capacity", want.Capacity, "maximumVolumeSize", want.MaximumVolumeSize)
	return nil
}

// get reads the object name from the API, and refuses one that is not ours.
func (p *Publisher) get(ctx context.Context, name string) (*storagev1.CSIStorageCapacity, error) {
	got, err := p.Client.StorageV1().CSIStorageCapacities(p.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading CSIStorageCapacity %s: %w", name, err)
	}
	if !p.isOurs(got) {
		return nil, fmt.Errorf("CSIStorageCapacity %s/%s exists without label %s=%s: left alone", p.Namespace, name, LabelManagedBy, p.Name)
	}
	return got, nil
}

// update writes want's room, labels, annotations and owner onto have, keeping what others added.
func (p *Publisher) update(ctx context.Context, have, want *storagev1.CSIStorageCapacity) error {
	obj := have.DeepCopy()
	obj.Capacity, obj.MaximumVolumeSize = want.Capacity, want.MaximumVolumeSize
	if obj.Labels == nil {
		obj.Labels = map[string]string{}
	}
	maps.Copy(obj.Labels, want.Labels)
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	maps.Copy(obj.Annotations, want.Annotations)
	if p.Owner != nil {
		obj.OwnerReferences = want.OwnerReferences
	}
	p.own.sending(obj)
	if _, err := p.Client.StorageV1().CSIStorageCapacities(p.Namespace).Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return err
		}
		return fmt.Errorf("updating CSIStorageCapacity %s: %w", obj.Name, err)
	}
	p.wrote("update")
	klog.FromContext(ctx).V(4).Info("Updated capacity", "object", klog.KObj(obj),
		"class", obj.StorageClassName, "capacity", obj.Capacity, "maximumVolumeSize", obj.MaximumVolumeSize)
	return nil
}

func (p *Publisher) deleteAll(ctx context.Context, objs []*storagev1.CSIStorageCapacity) error {
	var errs []error
	for _, o := range objs {
		errs = append(errs, p.delete(ctx, o))
	}
	return errors.Join(errs...)
}

// delete deletes obj, if it is still the object the cache showed: a lagging cache must not
// delete the object that replaced it.
func (p *Publisher) delete(ctx context.Context, obj *storagev1.CSIStorageCapacity) error {
	opts := metav1.DeleteOptions{}
	if obj.UID != "" {
		opts.Preconditions = metav1.NewUIDPreconditions(string(obj.UID))
	}
	p.own.deleting(obj.UID)
	err := p.Client.StorageV1().CSIStorageCapacities(p.Namespace).Delete(ctx, obj.Name, opts)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting CSIStorageCapacity %s: %w", obj.Name, err)
	}
	p.wrote("delete")
	klog.FromContext(ctx).V(2).Info("Deleted capacity", "object", klog.KObj(obj), "class", obj.Annotations[AnnClass])
	return nil
}

func (p *Publisher) wrote(verb string) {
	if p.Metrics != nil {
		p.Metrics.Writes.WithLabelValues(verb).Inc()
	}
}

// countObjects sets the objects gauge from the cache, which may not show this sync's writes yet.
func (p *Publisher) countObjects() {
	if p.Metrics == nil {
		return
	}
	if objs, err := p.ours(); err == nil {
		p.Metrics.Objects.Set(float64(len(objs)))
	}
}
