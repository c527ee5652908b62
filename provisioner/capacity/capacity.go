// Package capacity publishes the room dirpv's classes have on each node as CSIStorageCapacity
// objects, one per class and node, so that kube-scheduler sends a pod only to a node where its
// volumes fit.
//
// CSIStorageCapacity lets kube-scheduler's volume binding see a node's room without a CSI driver:
// for a claim of a WaitForFirstConsumer class it looks up the CSIDriver object named after the
// class's provisioner and, if that has storageCapacity true, considers only nodes matched by the
// NodeTopology of an object of that class with room for the claim. It never checks that a CSI
// driver stands behind the name, so a provisioner that publishes these objects itself gets
// capacity-aware scheduling for volumes the kubelet mounts on its own.
//
// A Publisher keeps one object per (class, node) in one namespace, measures each node's room
// through a Source when asked (Refresh), when nodes or classes change and every Interval, and
// writes an object only when what it says changed: objects are many (classes times nodes) and
// every write reaches every scheduler's cache.
package capacity

import (
	"context"
	"maps"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Source says which classes have room per node and measures it (implemented elsewhere by
// *provisioner.Provisioner). Its methods are called from several goroutines at once: the workers,
// and Publishes from ClassHandler.
type Source interface {
	// Publishes tells whether sc's volumes are local to nodes and their room is published.
	Publishes(sc *storagev1.StorageClass) bool
	// Room is the room for sc's volumes on node: in all, and for the largest volume that fits.
	Room(ctx context.Context, sc *storagev1.StorageClass, node *v1.Node) (total, largest uint64, err error)
}

const (
	// LabelManagedBy marks the objects a Publisher owns, with its Name: it touches no others.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// AnnClass is the annotation with the name of the class an object is for.
	AnnClass = "dirpv.io/class"
	// AnnNode is the annotation with the name of the node an object is for: NodeTopology only
	// holds the node's hostname label, and a node that is gone has no labels to match.
	AnnNode = "dirpv.io/node"
	// TopologyKey is the node label an object's NodeTopology selects its node by.
	TopologyKey = v1.LabelHostname
)

// defaultWorkers is how many nodes are synced at once when Workers is 0: each sync waits mostly
// on measurements that run on the node.
const defaultWorkers = 4

// Publisher keeps the CSIStorageCapacity objects of Namespace in line with the room Source
// measures. Its fields are set before Run and not changed after.
type Publisher struct {
	Client    kubernetes.Interface
	Namespace string
	Owner     *metav1.OwnerReference // set on every object written; may be nil
	Name      string                 // value of LabelManagedBy; only objects with it are dirpv's
	Source    Source

	Classes    storagelisters.StorageClassLister
	Nodes      corelisters.NodeLister
	Capacities storagelisters.CSIStorageCapacityLister // of Namespace only
	Synced     []cache.InformerSynced                  // Run waits for these before its first sync
	Interval   time.Duration                           // every node is re-measured this often; 0: only as Run begins
	Workers    int                                     // nodes synced at once; 0 means 4
	Delay      time.Duration                           // Refresh coalesces calls within this long; 0 means immediate
	Metrics    *Metrics                                // may be nil

	mu    sync.Mutex
	queue workqueue.TypedRateLimitingInterface[string] // of node names; nil unless Run runs
	own   ownWrites
}

// Run publishes until ctx ends, and returns once every worker has finished its node. It runs
// once per leader term, each time with a new queue: a queue cannot be used after its shutdown.
func (p *Publisher) Run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	logger := klog.FromContext(ctx).WithValues("controller", "capacity")
	ctx = klog.NewContext(ctx, logger)
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "capacity"})
	// The queue takes events from now on, so none is lost while the caches sync.
	p.setQueue(queue)
	defer p.clearQueue(queue)
	if !cache.WaitForCacheSync(ctx.Done(), p.Synced...) {
		queue.ShutDown()
		return
	}
	logger.Info("Publishing capacity", "namespace", p.Namespace, "interval", p.Interval)
	var wg sync.WaitGroup
	for range p.workers() {
		wg.Go(func() {
			for p.next(ctx, queue) {
			}
		})
	}
	p.resync(ctx)
	queue.ShutDown()
	wg.Wait()
}

// resync enqueues every node now and every Interval until ctx ends.
func (p *Publisher) resync(ctx context.Context) {
	all := func(ctx context.Context) {
		if err := p.enqueueAll(); err != nil {
			klog.FromContext(ctx).Error(err, "Nodes not listed for a resync")
		}
	}
	if p.Interval <= 0 {
		all(ctx)
		<-ctx.Done()
		return
	}
	wait.UntilWithContext(ctx, all, p.Interval)
}

func (p *Publisher) workers() int {
	if p.Workers > 0 {
		return p.Workers
	}
	return defaultWorkers
}

// next syncs one node from queue; false once queue is shut down.
func (p *Publisher) next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	node, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(node)
	if err := p.sync(ctx, node); err != nil {
		klog.FromContext(ctx).Error(err, "Capacity not published; retrying with backoff", "node", node)
		queue.AddRateLimited(node)
		return true
	}
	queue.Forget(node)
	return true
}

// Refresh has node's room measured again, at most Delay from now: calls within Delay make one
// measurement (the queue keeps the earliest time a node is waiting for), so a burst of volumes
// made on a node measures it once. It may be called from any goroutine; between terms it does
// nothing, as the next term measures every node anyway.
func (p *Publisher) Refresh(node string) {
	p.add(node, p.Delay)
}

func (p *Publisher) enqueue(node string) {
	p.add(node, 0)
}

func (p *Publisher) add(node string, delay time.Duration) {
	if node == "" {
		return
	}
	p.mu.Lock()
	queue := p.queue
	p.mu.Unlock()
	if queue != nil {
		// After a shutdown, which may come meanwhile, the queue takes nothing.
		queue.AddAfter(node, delay)
	}
}

func (p *Publisher) setQueue(queue workqueue.TypedRateLimitingInterface[string]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = queue
}

func (p *Publisher) clearQueue(queue workqueue.TypedRateLimitingInterface[string]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queue == queue {
		p.queue = nil
	}
}

// enqueueAll enqueues every node the cache holds and every node an object of ours names, so that
// the objects of nodes that are gone go too.
func (p *Publisher) enqueueAll() error {
	nodes, err := p.Nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, n := range nodes {
		p.enqueue(n.Name)
	}
	objs, err := p.ours()
	if err != nil {
		return err
	}
	for _, o := range objs {
		p.enqueue(o.Annotations[AnnNode])
	}
	return nil
}

// NodeHandler measures a node that was added, forgets one that was deleted, and follows a node
// whose labels changed (its hostname label is its objects' topology).
func (p *Publisher) NodeHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { p.enqueue(nameOf(obj)) },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1.Node)
			n, ok2 := cur.(*v1.Node)
			if ok1 && ok2 && !maps.Equal(o.Labels, n.Labels) {
				p.enqueue(n.Name)
			}
		},
		DeleteFunc: func(obj any) { p.enqueue(nameOf(obj)) },
	}
}

// ClassHandler syncs every node when a class whose room is published (or was, and still has
// objects) comes, changes or goes. Classes of other provisioners cost nothing: each sync
// measures the node, on the node.
func (p *Publisher) ClassHandler() cache.ResourceEventHandler {
	all := func() {
		if err := p.enqueueAll(); err != nil {
			utilruntime.HandleError(err)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if p.concerns(obj) {
				all()
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*storagev1.StorageClass)
			n, ok2 := cur.(*storagev1.StorageClass)
			if ok1 && ok2 && o.ResourceVersion == n.ResourceVersion {
				return // a resync of the informer: nothing changed
			}
			if p.concerns(old) || p.concerns(cur) {
				all()
			}
		},
		DeleteFunc: func(obj any) {
			if p.concerns(obj) {
				all()
			}
		},
	}
}

// concerns tells whether class obj is published or has objects of ours.
func (p *Publisher) concerns(obj any) bool {
	sc, ok := unwrap(obj).(*storagev1.StorageClass)
	if !ok {
		return false
	}
	if p.publishes(sc) {
		return true
	}
	objs, err := p.ours()
	if err != nil {
		return true
	}
	for _, o := range objs {
		if o.Annotations[AnnClass] == sc.Name {
			return true
		}
	}
	return false
}

// CapacityHandler syncs the node of an object of ours that someone else changed or deleted. The
// events of the Publisher's own writes are told apart by what it sent: each would otherwise
// measure the node again, and a room that changes between two measurements would keep the node
// measuring for ever.
func (p *Publisher) CapacityHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*storagev1.CSIStorageCapacity)
			n, ok2 := cur.(*storagev1.CSIStorageCapacity)
			if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion || !(p.isOurs(o) || p.isOurs(n)) {
				return
			}
			if p.own.wasSent(n, p.matches) {
				return
			}
			node := n.Annotations[AnnNode]
			if node == "" {
				node = o.Annotations[AnnNode]
			}
			p.enqueue(node)
		},
		DeleteFunc: func(obj any) {
			c, ok := unwrap(obj).(*storagev1.CSIStorageCapacity)
			if !ok || !p.isOurs(c) || p.own.wasDeleted(c.UID) {
				return
			}
			p.enqueue(c.Annotations[AnnNode])
		},
	}
}

// unwrap returns the object a deletion's tombstone holds, or obj.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

// nameOf is the name of obj, a tombstone's included.
func nameOf(obj any) string {
	if m, ok := unwrap(obj).(metav1.Object); ok {
		return m.GetName()
	}
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		if _, name, err := cache.SplitMetaNamespaceKey(t.Key); err == nil {
			return name
		}
	}
	return ""
}

// ownWrites remembers what the Publisher last sent for each object (by name) and which objects
// (by UID) it deleted, for CapacityHandler. It holds one entry per object name ever written,
// which is bounded by classes times nodes.
type ownWrites struct {
	mu      sync.Mutex
	sent    map[string]*storagev1.CSIStorageCapacity
	deleted map[types.UID]bool
}

func (w *ownWrites) sending(obj *storagev1.CSIStorageCapacity) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent == nil {
		w.sent = map[string]*storagev1.CSIStorageCapacity{}
	}
	w.sent[obj.Name] = obj
}

func (w *ownWrites) deleting(uid types.UID) {
	if uid == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deleted == nil {
		w.deleted = map[types.UID]bool{}
	}
	w.deleted[uid] = true
}

// wasSent tells whether obj says what was last sent for its name, as same compares them.
func (w *ownWrites) wasSent(obj *storagev1.CSIStorageCapacity, same func(have, want *storagev1.CSIStorageCapacity) bool) bool {
	w.mu.Lock()
	sent := w.sent[obj.Name]
	w.mu.Unlock()
	return sent != nil && same(obj, sent)
}

// wasDeleted tells whether the object with uid was deleted by the Publisher, and forgets it: its
// deletion is seen once.
func (w *ownWrites) wasDeleted(uid types.UID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if uid == "" || !w.deleted[uid] {
		return false
	}
	delete(w.deleted, uid)
	return true
}
