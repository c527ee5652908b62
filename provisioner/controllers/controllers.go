// Package controllers runs what only the leader runs, one term at a time: the provisioner
// library's controller, which calls the Provisioner to make and reclaim volumes, and dirpv's
// recycle, resize and usage controllers, over one cache of PVs, claims and classes.
package controllers

import (
	"context"
	"sync"

	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	storageinformers "k8s.io/client-go/informers/storage/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/capacity"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/dedup"
	"dirpv.io/dirpv/provisioner/recycle"
	"dirpv.io/dirpv/provisioner/resize"
	"dirpv.io/dirpv/provisioner/usage"
)

// resizeWorkers resize claims in parallel: resizes are rare and each is a few requests and at
// most one helper pod.
const resizeWorkers = 8

// Leader holds what the leader's controllers need across terms.
type Leader struct {
	Client      kubernetes.Interface
	Provisioner *provisioner.Provisioner
	Recorder    record.EventRecorder
	Metrics     *Metrics
	// Nodes is a cache that lives as long as the process, started by the caller.
	Nodes coreinformers.NodeInformer
	// Name, Workers and UsageInterval: see config.Options.
	Options *config.Options
	// StartTerm, when set, runs as each term begins, before any controller starts.
	StartTerm func(ctx context.Context)
	// Capacity, when set, publishes the room of classes on nodes; each term gives it its caches.
	Capacity *capacity.Publisher
}

// RunTerm runs one term of the controllers until ctx ends. A ProvisionController cannot be
// restarted once its queues are shut down, so every term gets new ones.
func (l *Leader) RunTerm(ctx context.Context) {
	logger := klog.FromContext(ctx)
	opts := l.Options
	if l.StartTerm != nil {
		l.StartTerm(ctx)
	}
	// One cache of PVs, claims and classes per term, shared by the provisioning, recycle and
	// resize controllers and the usage collector.
	factory := dedup.NewInformerFactory(l.Client)
	pvs := factory.Core().V1().PersistentVolumes()
	claims := factory.Core().V1().PersistentVolumeClaims()
	classes := factory.Storage().V1().StorageClasses()
	pc := controller.NewProvisionController(logger, l.Client, opts.Name, l.Provisioner,
		controller.AdditionalProvisionerNames(opts.Names()[1:]),
		controller.LeaderElection(false), // elected by the caller, with a released Lease on shutdown
		controller.MetricsPort(0),        // served by dirpv's own HTTP server
		controller.MetricsInstance(l.Metrics.Library),
		controller.Threadiness(opts.Workers),
		controller.AddFinalizer(true),
		controller.VolumesInformer(pvs.Informer()),
		controller.ClaimsInformer(claims.Informer()),
		controller.ClassesInformer(classes.Informer()),
		controller.NodesLister(l.Nodes.Lister()),
		// Save PVs in the background, retrying with backoff for the rest of the term, instead
		// of the default blocking store, which after 5 failed saves (40 s) deletes the
		// directory it made. Its loop outlives the term (the library's workers are not
		// waited for, and this elector rejoins instead of exiting), and by then another
		// replica may have bound a PV of the same name to that very directory. Provision is
		// idempotent, so a PV left unsaved at the end of a term is made by the next leader.
		controller.CreateProvisionedPVLimiter(workqueue.DefaultTypedControllerRateLimiter[any]()),
	)
	m := l.Metrics
	rc, err := recycle.New(l.Client, opts.Names(), l.Provisioner, l.Recorder, m.recycleResult, pvs)
	if err != nil {
		logger.Error(err, "Recycle controller not started")
	}
	rs, err := resize.New(l.Client, opts.Names(), l.Provisioner, l.Recorder, m.resizeResult, claims, pvs)
	if err != nil {
		logger.Error(err, "Resize controller not started")
	}
	var uc *usage.Collector
	if opts.UsageInterval > 0 {
		uc = usage.New(opts.Names(), l.Provisioner, pvs, usage.Gauges{
			Capacity: m.VolumeCapacity, Used: m.VolumeUsed, Errors: m.UsageErrors,
		}, opts.UsageInterval).WithProbes(usage.Probes{
			Classes: classes.Lister(), ClassesSynced: classes.Informer().HasSynced,
			Nodes: l.Nodes.Lister(), NodesSynced: l.Nodes.Informer().HasSynced,
			Enforceable: m.CapacityEnforceable,
		})
	}
	var publish func(ctx context.Context)
	if l.Capacity != nil {
		var stop func()
		if publish, stop, err = l.capacity(classes); err != nil {
			logger.Error(err, "Capacity publisher not started")
		} else {
			defer stop()
		}
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), l.Nodes.Informer().HasSynced) {
		factory.Shutdown() // the term ended before it began
		return
	}
	var others sync.WaitGroup
	if publish != nil {
		others.Go(func() { publish(ctx) })
	}
	if rc != nil {
		others.Go(func() { rc.Run(ctx, opts.Workers) })
	}
	if rs != nil {
		others.Go(func() { rs.Run(ctx, resizeWorkers) })
	}
	if uc != nil {
		others.Go(func() { uc.Run(ctx) })
	}
	pc.Run(ctx)
	others.Wait()
	factory.Shutdown()
}

// capacity gives the publisher this term's caches: the term's classes, the process's nodes, and
// its own objects, in dirpv's namespace only. publish runs it; stop, once it returned, takes its
// handlers off the caches that outlive the term.
func (l *Leader) capacity(classes storageinformers.StorageClassInformer) (publish func(context.Context), stop func(), err error) {
	p := l.Capacity
	factory := informers.NewSharedInformerFactoryWithOptions(l.Client, 0, informers.WithNamespace(p.Namespace))
	capacities := factory.Storage().V1().CSIStorageCapacities()
	p.Classes, p.Nodes, p.Capacities = classes.Lister(), l.Nodes.Lister(), capacities.Lister()
	p.Synced = []cache.InformerSynced{classes.Informer().HasSynced, l.Nodes.Informer().HasSynced, capacities.Informer().HasSynced}
	if _, err := classes.Informer().AddEventHandler(p.ClassHandler()); err != nil {
		return nil, nil, err
	}
	if _, err := capacities.Informer().AddEventHandler(p.CapacityHandler()); err != nil {
		return nil, nil, err
	}
	nodes, err := l.Nodes.Informer().AddEventHandler(p.NodeHandler())
	if err != nil {
		return nil, nil, err
	}
	publish = func(ctx context.Context) {
		factory.Start(ctx.Done())
		p.Run(ctx)
	}
	stop = func() {
		_ = l.Nodes.Informer().RemoveEventHandler(nodes)
		factory.Shutdown()
	}
	return publish, stop, nil
}
