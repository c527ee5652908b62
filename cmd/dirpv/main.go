// Command dirpv is a Kubernetes dynamic provisioner of directory-backed volumes (NFS and hostPath).
// `dirpv [flags]` runs the provisioner; `dirpv helper ...` runs one volume operation on a node,
// inside a helper pod the provisioner made.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientmetrics "k8s.io/client-go/tools/metrics"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller/metrics"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/dedup"
	"dirpv.io/dirpv/provisioner/recycle"
	"dirpv.io/dirpv/provisioner/resize"
	"dirpv.io/dirpv/provisioner/usage"
)

// resizeWorkers resize claims in parallel: resizes are rare and each is a few requests and at
// most one helper pod.
const resizeWorkers = 8

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout)
	stop()
	klog.Flush()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dirpv:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "helper" {
		return runHelper(ctx, args[1:], stdin, stdout)
	}
	fs := flag.NewFlagSet("dirpv", flag.ContinueOnError)
	var opts config.Options
	opts.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, "dirpv", version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	return runProvisioner(ctx, &opts)
}

func runProvisioner(ctx context.Context, opts *config.Options) error {
	logger := klog.FromContext(ctx)
	cfg, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(opts.KubeQPS), opts.KubeBurst
	cfg.UserAgent = "dirpv/" + version
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	image, pullPolicy, owner, err := helperOrigin(ctx, client, opts)
	if err != nil {
		return err
	}
	reg, libMetrics, ownMetrics := newRegistry()

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "dirpv"})

	nfsBackend := nfs.New(opts)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "nfs_operations_blocked",
		Help: "Operations on NFS exports still blocked past their deadline (a hung server).",
	}, func() float64 { return float64(nfsBackend.Stalls.Count()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "nfs_servers_silent",
		Help: "NFS servers reached with access: direct that stopped answering (their operations fail until they answer).",
	}, func() float64 {
		if nfsBackend.Direct == nil {
			return 0
		}
		return float64(nfsBackend.Direct.Silent())
	}))
	// Nodes come from a cache that lives as long as the process: the library reads each claim's
	// selected node, and every hostPath operation its volume's node (one GET each otherwise).
	// Only their names, UIDs and labels are kept (dedup).
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, controller.DefaultResyncPeriod,
		informers.WithTransform(dedup.New().Transform))
	nodes := nodeFactory.Core().V1().Nodes()
	nodes.Informer() // registered before Start
	nodeFactory.Start(ctx.Done())
	defer nodeFactory.Shutdown()

	helper := &hostpath.PodRunner{Client: client, Namespace: opts.Namespace, Image: image, PullPolicy: pullPolicy,
		Owner: owner, Outcomes: ownMetrics.HelperOutcome}
	var runner hostpath.BatchRunner = helper
	if opts.HelperKeepAlive > 0 {
		runner = &hostpath.Agents{Pods: helper, Exec: hostpath.PodExec(cfg, client, opts.Namespace),
			KeepAlive: opts.HelperKeepAlive, StartTimeout: opts.OperationTimeout}
	}
	prov := &provisioner.Provisioner{
		Backends: backend.Set{
			nfsBackend,
			&hostpath.Backend{
				Client: client, Nodes: nodes.Lister(), Root: opts.HostPathRoot, LocalRoot: opts.LocalRoot, LocalNode: opts.NodeName,
				Timeout: opts.OperationTimeout,
				Helper:  hostpath.NewBatcher(runner, opts.HelperBatchSize, opts.HelperBatchWait, ownMetrics.HelperPod),
			},
		},
		Recorder: recorder,
		Metrics:  ownMetrics,
		Now:      time.Now,
		PVs:      client.CoreV1().PersistentVolumes(),
	}
	logger.Info("Starting dirpv", "version", version, "name", opts.Name, "helperImage", image, "nfsExports", opts.NFSExports.String(), "nfsAllow", opts.NFSAllow.String())

	// runController runs one term of the provisioning controller: a ProvisionController cannot be
	// restarted once its queues are shut down, so every term gets a new one.
	runController := func(ctx context.Context) {
		if n, err := helper.DeleteLeftovers(ctx); err != nil {
			logger.Error(err, "Deleting helper pods left by a previous leader")
		} else if n > 0 {
			logger.Info("Deleted helper pods left by a previous leader", "count", n)
		}
		// One cache of PVs, claims and classes per term, shared by the provisioning, recycle and
		// resize controllers and the usage collector.
		factory := informers.NewSharedInformerFactoryWithOptions(client, controller.DefaultResyncPeriod,
			informers.WithTransform(dedup.New().Transform))
		pvs := factory.Core().V1().PersistentVolumes()
		pc := controller.NewProvisionController(logger, client, opts.Name, prov,
			controller.LeaderElection(false), // elected here, with a released Lease on shutdown
			controller.MetricsPort(0),        // served by our own HTTP server
			controller.MetricsInstance(libMetrics),
			controller.Threadiness(opts.Workers),
			controller.AddFinalizer(true),
			controller.VolumesInformer(pvs.Informer()),
			controller.ClaimsInformer(factory.Core().V1().PersistentVolumeClaims().Informer()),
			controller.ClassesInformer(factory.Storage().V1().StorageClasses().Informer()),
			controller.NodesLister(nodes.Lister()),
			// Save PVs in the background, retrying with backoff for the rest of the term, instead
			// of the default blocking store, which after 5 failed saves (40 s) deletes the
			// directory it made. Its loop outlives the term (the library's workers are not
			// waited for, and this elector rejoins instead of exiting), and by then another
			// replica may have bound a PV of the same name to that very directory. Provision is
			// idempotent, so a PV left unsaved at the end of a term is made by the next leader.
			controller.CreateProvisionedPVLimiter(workqueue.DefaultTypedControllerRateLimiter[any]()),
		)
		rc, err := recycle.New(client, opts.Name, prov, recorder, ownMetrics.RecycleResult, pvs)
		if err != nil {
			logger.Error(err, "Recycle controller not started")
		}
		rs, err := resize.New(client, opts.Name, prov, recorder, ownMetrics.ResizeResult,
			factory.Core().V1().PersistentVolumeClaims(), pvs)
		if err != nil {
			logger.Error(err, "Resize controller not started")
		}
		var uc *usage.Collector
		if opts.UsageInterval > 0 {
			classes := factory.Storage().V1().StorageClasses()
			uc = usage.New(opts.Name, prov, pvs, usage.Gauges{
				Capacity: ownMetrics.VolumeCapacity, Used: ownMetrics.VolumeUsed, Errors: ownMetrics.UsageErrors,
			}, opts.UsageInterval).WithProbes(usage.Probes{
				Classes: classes.Lister(), ClassesSynced: classes.Informer().HasSynced,
				Nodes: nodes.Lister(), NodesSynced: nodes.Informer().HasSynced,
				Enforceable: ownMetrics.CapacityEnforceable,
			})
		}
		factory.Start(ctx.Done())
		if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
			factory.Shutdown() // the term ended before it began
			return
		}
		var others sync.WaitGroup
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

	elector := newElector(opts, client, recorder)
	if opts.LeaderElect && nfsBackend.Direct != nil {
		nfsBackend.Direct.Fence = elector.fence
	}
	serveErr := make(chan error, 1)
	if opts.HTTPAddress != "" {
		go func() { serveErr <- serve(ctx, opts.HTTPAddress, reg, elector, nfsBackend.Err, opts.Profiling) }()
	}
	if opts.LeaderElect {
		err = elector.run(ctx, runController)
	} else {
		runController(ctx)
	}
	if err != nil {
		return err
	}
	select {
	case err := <-serveErr:
		return err
	default:
		return nil
	}
}

// newRegistry holds every metric /metrics serves: the process's, the provisioner library's (it
// would otherwise register them globally and serve them on a port of its own) and dirpv's.
func newRegistry() (*prometheus.Registry, metrics.Metrics, *provisioner.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lib := metrics.New("controller")
	reg.MustRegister(lib.PersistentVolumeClaimProvisionTotal, lib.PersistentVolumeClaimProvisionFailedTotal,
		lib.PersistentVolumeClaimProvisionDurationSeconds, lib.PersistentVolumeDeleteTotal,
		lib.PersistentVolumeDeleteFailedTotal, lib.PersistentVolumeDeleteDurationSeconds)
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "kube_api_requests_total",
		Help: "Requests this process made to kube-apiserver, by method and response code.",
	}, []string{"method", "code"})
	reg.MustRegister(requests)
	// client-go takes one such counter per process (the first registration wins).
	clientmetrics.Register(clientmetrics.RegisterOpts{RequestResult: apiRequests{requests}})
	return reg, lib, provisioner.NewMetrics(reg)
}

// apiRequests counts requests to kube-apiserver as client-go reports them.
type apiRequests struct{ *prometheus.CounterVec }

func (r apiRequests) Increment(_ context.Context, code, method, _ string) {
	r.WithLabelValues(method, code).Inc()
}

// helperOrigin returns the image of helper pods and their owner: this pod's (--pod-name) dirpv
// container's image, so helper pods run exactly the same build even when an operator renamed the
// image with kustomize, unless --helper-image names one; and this pod, their controller.
func helperOrigin(ctx context.Context, client kubernetes.Interface, opts *config.Options) (string, v1.PullPolicy, *metav1.OwnerReference, error) {
	if opts.PodName == "" {
		return opts.HelperImage, v1.PullIfNotPresent, nil, nil // Validate requires one of them
	}
	pod, err := client.CoreV1().Pods(opts.Namespace).Get(ctx, opts.PodName, metav1.GetOptions{})
	if err != nil {
		return "", "", nil, fmt.Errorf("reading own pod %s/%s (its helper pods' image and owner): %w", opts.Namespace, opts.PodName, err)
	}
	// No blockOwnerDeletion: it needs the right to update this pod's finalizers.
	owner := &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true)}
	if opts.HelperImage != "" {
		return opts.HelperImage, v1.PullIfNotPresent, owner, nil
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "dirpv" {
			return c.Image, c.ImagePullPolicy, owner, nil
		}
	}
	return "", "", nil, fmt.Errorf("own pod %s/%s has no container named dirpv (or set --helper-image)", pod.Namespace, pod.Name)
}
