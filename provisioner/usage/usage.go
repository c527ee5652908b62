package usage

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner/backend"
)

// Workers bounds the reads in flight. Each waits for its operation; on a node, the reads that
// arrive while its helper pods run share the next one, so a node with many volumes gets a pod for
// about every Workers of them.
const Workers = 16

// Volumes reads what volumes hold; *provisioner.Provisioner implements it.
type Volumes interface {
	// Usage reports the bytes the volume of pv holds and its limit (0: the filesystem reports
	// none), from its quota, without walking its tree.
	Usage(ctx context.Context, pv *v1.PersistentVolume) (used, limit uint64, err error)
	// Enforceable says how sc's volumes would be held to their size on node, or why they could
	// not be (see provisioner.Enforceable).
	Enforceable(ctx context.Context, sc *storagev1.StorageClass, node *v1.Node) (string, error)
}

// Gauges are the metrics a Collector keeps.
type Gauges struct {
	// Capacity and Used are labelled by the claim's namespace and name and the PV's name, in this
	// order (controllers.VolumeLabels).
	Capacity, Used *prometheus.GaugeVec
	// Errors counts the reads that failed.
	Errors prometheus.Counter
}

// Collector sets the gauges of dirpv's bound, enforced volumes.
type Collector struct {
	names   []string
	volumes Volumes
	pvs     corelisters.PersistentVolumeLister
	synced  []cache.InformerSynced
	// prober, when set, probes classes on nodes (WithProbes).
	prober   *prober
	gauges   Gauges
	interval time.Duration
	workers  int

	// refreshed, in tests, is called after each refresh.
	refreshed func()

	// series holds the labels of the series set, by PV name. Only refresh and Run touch it, one
	// at a time.
	series map[string]series
}

// series is the label values of one volume's series.
type series [3]string

// New returns a collector of the volumes provisioner name made, read through volumes every
// interval. It lists PVs from the informer, which it can share with the provisioning controller.
func New(names []string, volumes Volumes, pvs coreinformers.PersistentVolumeInformer, gauges Gauges, interval time.Duration) *Collector {
	return &Collector{
		names: names, volumes: volumes, pvs: pvs.Lister(), synced: []cache.InformerSynced{pvs.Informer().HasSynced},
		gauges: gauges, interval: interval, workers: Workers, series: map[string]series{},
	}
}

// Run refreshes the gauges at once and then interval after each refresh has ended (so a slow one,
// say with a node down and its reads waiting for --operation-timeout, never overlaps the next),
// until ctx ends. It then deletes every series it set: a replica that no longer leads must not
// serve values that nobody refreshes.
func (c *Collector) Run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	logger := klog.FromContext(ctx)
	if c.interval <= 0 || !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	defer c.deleteAll()
	defer c.deleteProbes()
	logger.Info("Usage collector started", "interval", c.interval)
	wait.JitterUntilWithContext(ctx, c.refresh, c.interval, 0, true)
}

// wanted reports whether pv is one of the volumes the collector reads: dirpv's, bound to a claim,
// with its capacity enforced.
func (c *Collector) wanted(pv *v1.PersistentVolume) bool {
	return backend.Ours(pv, c.names) && backend.Enforced(pv) &&
		pv.Status.Phase == v1.VolumeBound && pv.Spec.ClaimRef != nil && pv.DeletionTimestamp == nil
}

// refresh reads the usage of every wanted PV and sets its series, and deletes the series of the
// PVs that are no longer wanted.
//
// A volume whose read fails loses its series until a read succeeds, rather than keeping its last
// values: those would look current while nobody knows what the volume holds (an alert on a
// nearly full volume would go on firing after the claim was resized, or stay silent while it
// fills). The failure is counted in Errors and logged (V(2)): a node that is down, a volume
// that a node lost, a filesystem whose quotas were turned off.
func (c *Collector) refresh(ctx context.Context) {
	logger := klog.FromContext(ctx)
	start := time.Now()
	c.probe(ctx)
	pvs, err := c.pvs.List(labels.Everything())
	if err != nil { // a cache's lister does not fail
		logger.Error(err, "Listing PVs for their usage")
		return
	}
	pvs = slices.DeleteFunc(pvs, func(pv *v1.PersistentVolume) bool { return !c.wanted(pv) })
	// A node's reads go out together, so that they share its helper pods: with Workers in flight,
	// a pod for about every Workers of a node's volumes, where reads in cache order would give
	// each node a pod for nearly every Workers volumes of the cluster.
	slices.SortFunc(pvs, func(a, b *v1.PersistentVolume) int {
		return cmp.Or(strings.Compare(pinnedTo(a), pinnedTo(b)), strings.Compare(a.Name, b.Name))
	})
	var (
		mu     sync.Mutex
		read   = map[string]series{}
		failed int
		wg     sync.WaitGroup
		sem    = make(chan struct{}, c.workers)
	)
	for _, pv := range pvs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			used, limit, err := c.volumes.Usage(ctx, pv)
			if ctx.Err() != nil {
				return // the term ended: Run deletes every series
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				c.gauges.Errors.Inc()
				logger.V(2).Info("Reading a volume's usage failed; it has no usage metrics until a read succeeds", "PV", klog.KObj(pv), "err", err)
				return
			}
			s := series{pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name, pv.Name}
			capacity := float64(limit)
			if limit == 0 {
				q := pv.Spec.Capacity[v1.ResourceStorage]
				capacity = q.AsApproximateFloat64()
			}
			c.gauges.Capacity.WithLabelValues(s[:]...).Set(capacity)
			c.gauges.Used.WithLabelValues(s[:]...).Set(float64(used))
			read[pv.Name] = s
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for name, s := range c.series {
		if now, ok := read[name]; !ok || now != s {
			c.delete(s)
		}
	}
	c.series = read
	logger.V(4).Info("Volume usage refreshed", "volumes", len(read), "failed", failed, "duration", time.Since(start))
	if c.refreshed != nil {
		c.refreshed()
	}
}

// pinnedTo names where pv's node affinity pins it (the values of its first required term), or "".
func pinnedTo(pv *v1.PersistentVolume) string {
	if a := pv.Spec.NodeAffinity; a != nil && a.Required != nil && len(a.Required.NodeSelectorTerms) > 0 {
		var s []string
		for _, r := range a.Required.NodeSelectorTerms[0].MatchExpressions {
			s = append(s, r.Key+"="+strings.Join(r.Values, ","))
		}
		return strings.Join(s, ";")
	}
	return ""
}

// delete deletes the series s.
func (c *Collector) delete(s series) {
	c.gauges.Capacity.DeleteLabelValues(s[:]...)
	c.gauges.Used.DeleteLabelValues(s[:]...)
}

// deleteAll deletes every series the collector set.
func (c *Collector) deleteAll() {
	for _, s := range c.series {
		c.delete(s)
	}
	c.series = map[string]series{}
}
