package usage

import (
	"context"
	"slices"
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
	// probed holds what is known of each class and node probed; now is the clock.
	probed map[[2]string]*probed
	now    func() time.Time
}

type probed struct {
	outcome string // the last one: only changes are logged
	ok      bool
	// at is when a failing probe last ran, wait how long it waits for its next run.
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
	c.prober = &prober{Probes: p, probed: map[[2]string]*probed{}, now: time.Now}
	c.synced = append(c.synced, p.ClassesSynced, p.NodesSynced)
	return c
}

// deleteProbes deletes every series the probes set.
func (c *Collector) deleteProbes() {
	if p := c.prober; p != nil {
		for key := range p.probed {
			p.Enforceable.DeleteLabelValues(key[0], key[1])
		}
		p.probed = map[[2]string]*probed{}
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
		if !slices.Contains(c.names, sc.Provisioner) || sc.Parameters[config.ParamCapacity] != string(config.CapacityEnforce) {
			continue
		}
		for _, node := range nodes {
			key := [2]string{sc.Name, node.Name}
			seen[key] = true
			if s := p.probed[key]; s == nil || !s.ok && p.now().Sub(s.at) >= s.wait {
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
	for key := range p.probed {
		if !seen[key] {
			p.Enforceable.DeleteLabelValues(key[0], key[1])
			delete(p.probed, key)
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
	s := p.probed[key]
	if s == nil {
		s = &probed{}
		p.probed[key] = s
	}
	outcome, prev := "ok "+kind, s.outcome
	if err != nil {
		outcome = "error " + err.Error()
	}
	s.outcome = outcome
	if err != nil {
		if s.at.IsZero() {
			s.wait = retryFailed
		} else {
			s.wait = min(2*s.wait, retryFailedMost)
		}
		s.at = p.now()
		p.Enforceable.WithLabelValues(key[0], key[1]).Set(0)
		if outcome != prev {
			logger.Error(err, "Sizes cannot be enforced: claims of this class on this node will fail")
		}
		return
	}
	s.ok = true
	p.Enforceable.WithLabelValues(key[0], key[1]).Set(1)
	if outcome != prev {
		logger.Info("Sizes are enforced", "by", kind)
	}
}
