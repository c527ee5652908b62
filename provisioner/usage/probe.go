package usage

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner/config"
)

// Probes are what a Collector needs to check, on every node, that each class of dirpv's with
// capacity: enforce can enforce sizes there.
type Probes struct {
	Classes       storagelisters.StorageClassLister
	ClassesSynced cache.InformerSynced
	Nodes         corelisters.NodeLister
	NodesSynced   cache.InformerSynced
	// Enforceable is 1 for a class and node where sizes are enforced, 0 where they cannot be;
	// labelled storageclass, node.
	Enforceable *prometheus.GaugeVec
}

// prober probes each class and node once a term, and again while it fails (a node prepared
// since then is seen), at a refresh once its backoff has passed; a class or node that goes loses
// its series.
type prober struct {
	Probes
	// state is the last outcome of each class and node: only changes are logged.
	state map[[2]string]string
	ok    map[[2]string]bool
	// failed is when each failing probe last ran and how long it waits for its next run; now is
	// the clock.
	failed map[[2]string]backoff
	now    func() time.Time
}

type backoff struct {
	at   time.Time
	wait time.Duration
}

// retryFailed and retryFailedMost bound the time between two probes of a class on a node that
// cannot enforce sizes: each costs a helper pod on the node, so the wait doubles from the one to
// the other while the probe goes on failing (a cluster with a class no node can serve would
// otherwise run a pod per node every refresh, for good).
const (
	retryFailed     = time.Minute
	retryFailedMost = 30 * time.Minute
)

// WithProbes has the collector probe, at each refresh, the classes of dirpv's with capacity:
// enforce on every node (see Probes). It returns c.
func (c *Collector) WithProbes(p Probes) *Collector {
	c.prober = &prober{Probes: p, state: map[[2]string]string{}, ok: map[[2]string]bool{},
		failed: map[[2]string]backoff{}, now: time.Now}
	c.synced = append(c.synced, p.ClassesSynced, p.NodesSynced)
	return c
}

// deleteProbes deletes every series the probes set.
func (c *Collector) deleteProbes() {
	if p := c.prober; p != nil {
		for key := range p.state {
			p.Enforceable.DeleteLabelValues(key[0], key[1])
		}
		p.state, p.ok, p.failed = map[[2]string]string{}, map[[2]string]bool{}, map[[2]string]backoff{}
	}
}

// probe probes the classes and nodes not known to be fine, workers at a time.
func (c *Collector) probe(ctx context.Context) {
	p := c.prober
	if p == nil {
		return
	}
	logger := klog.FromContext(ctx)
	classes, err := p.Classes.List(labels.Everything())
	if err != nil {
		logger.Error(err, "Listing StorageClasses to probe")
		return
	}
	nodes, err := p.Nodes.List(labels.Everything())
	if err != nil {
		logger.Error(err, "Listing Nodes to probe")
		return
	}
	// What to probe is decided before any probe runs: the probes write the state read here.
	type probe struct {
		sc   *storagev1.StorageClass
		node *v1.Node
		key  [2]string
	}
	var todo []probe
	seen := map[[2]string]bool{}
	for _, sc := range classes {
		if sc.Provisioner != c.name || sc.Parameters[config.ParamCapacity] != string(config.CapacityEnforce) {
			continue
		}
		for _, node := range nodes {
			key := [2]string{sc.Name, node.Name}
			seen[key] = true
			if f, failed := p.failed[key]; !p.ok[key] && (!failed || p.now().Sub(f.at) >= f.wait) {
				todo = append(todo, probe{sc, node, key})
			}
		}
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, c.workers)
	)
	for _, t := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.probeOne(ctx, t.sc, t.node, t.key, &mu)
		})
	}
	wg.Wait()
	for key := range p.state {
		if !seen[key] {
			p.Enforceable.DeleteLabelValues(key[0], key[1])
			delete(p.state, key)
			delete(p.ok, key)
			delete(p.failed, key)
		}
	}
}

// probeOne probes sc on node and records the outcome under key.
func (c *Collector) probeOne(ctx context.Context, sc *storagev1.StorageClass, node *v1.Node, key [2]string, mu *sync.Mutex) {
	p := c.prober
	kind, err := c.volumes.Enforceable(ctx, sc, node)
	if ctx.Err() != nil {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	logger := klog.FromContext(ctx).WithValues("storageClass", sc.Name, "node", node.Name)
	state, prev := "ok "+kind, p.state[key]
	if err != nil {
		state = "error " + err.Error()
	}
	p.state[key] = state
	if err != nil {
		wait := retryFailed
		if f, failed := p.failed[key]; failed {
			wait = min(2*f.wait, retryFailedMost)
		}
		p.failed[key] = backoff{at: p.now(), wait: wait}
		p.Enforceable.WithLabelValues(key[0], key[1]).Set(0)
		if state != prev {
			logger.Error(err, "Sizes cannot be enforced: claims of this class on this node will fail")
		}
		return
	}
	p.ok[key] = true
	delete(p.failed, key)
	p.Enforceable.WithLabelValues(key[0], key[1]).Set(1)
	if state != prev {
		logger.Info("Sizes are enforced", "by", kind)
	}
}
