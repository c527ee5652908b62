// Command dirpv is a Kubernetes dynamic provisioner of directory-backed volumes (NFS and hostPath).
// `dirpv [flags]` runs the provisioner; `dirpv helper ...` runs one volume operation on a node,
// inside a helper pod the provisioner made; `dirpv adopt [--dry-run]` takes over the PVs of the
// provisioners the provisioner adopts (--adopt), once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientmetrics "k8s.io/client-go/tools/metrics"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/capacity"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/controllers"
	"dirpv.io/dirpv/provisioner/dedup"
	"dirpv.io/dirpv/provisioner/nodeexec"
)

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
	if len(args) > 0 && args[0] == "adopt" {
		return runAdopt(ctx, args[1:], stdout)
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
		fmt.Fprintln(stdout, versionLine())
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

// runProvisioner assembles dirpv: clients, the node transport, the backends, the provisioner,
// the leader's controllers, and the election that runs them.
func runProvisioner(ctx context.Context, opts *config.Options) error {
	cfg, client, err := newClient(opts)
	if err != nil {
		return err
	}
	reg := newRegistry()
	recorder, stopEvents := newRecorder(ctx, client)
	defer stopEvents()
	elector := newElector(opts, client, recorder)
	reg.MustRegister(elector.gauge())

	// Nodes come from a cache that lives as long as the process: the library reads each claim's
	// selected node, and every hostPath operation its volume's node (one GET each otherwise).
	// Only their names, UIDs and labels are kept (dedup).
	nodeFactory := dedup.NewInformerFactory(client)
	nodes := nodeFactory.Core().V1().Nodes()
	nodes.Informer() // registered before Start
	nodeFactory.Start(ctx.Done())
	defer nodeFactory.Shutdown()

	helperPods, err := nodeexec.HelperPods(ctx, client, opts)
	if err != nil {
		return err
	}
	transport := nodeexec.New(cfg, helperPods, opts, reg)
	var fence func() error // a replica that lost its Lease sends nothing to an NFS server
	if opts.LeaderElect {
		fence = elector.fence
	}
	nfsBackend := nfs.New(opts, fence, reg)
	hostPath := hostpath.New(opts, client, nodes.Lister(), transport)
	prov := &provisioner.Provisioner{
		Backends:  backend.Set{nfsBackend, hostPath},
		Recorder:  recorder,
		Metrics:   provisioner.NewMetrics(reg),
		Now:       time.Now,
		PVs:       client.CoreV1().PersistentVolumes(),
		Adoptions: opts.Adopt,
		Peers:     provisioner.ClientPeers{Client: client},
	}
	leader := &controllers.Leader{Client: client, Provisioner: prov, Recorder: recorder, Metrics: controllers.NewMetrics(reg),
		Nodes: nodes, Options: opts, StartTerm: transport.StartTerm}
	if opts.CapacityName != "" {
		if leader.Capacity, err = newPublisher(ctx, client, opts, prov, reg); err != nil {
			return err
		}
		hostPath.Changed = leader.Capacity.Refresh
	}
	klog.FromContext(ctx).Info("Starting dirpv", "version", version, "name", opts.Name, "helperImage", helperPods.Image,
		"nfsExports", opts.NFSExports.String(), "nfsAllow", opts.NFSAllow.String(), "adopt", opts.Adopt.String())

	serveErr := make(chan error, 1)
	if opts.HTTPAddress != "" {
		go func() { serveErr <- serve(ctx, opts.HTTPAddress, reg, elector, nfsBackend.Err, opts.Profiling) }()
	}
	if opts.LeaderElect {
		err = elector.run(ctx, leader.RunTerm)
	} else {
		leader.RunTerm(ctx)
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

// newPublisher is what publishes the room of --capacity-name's classes on each node, its objects
// owned by this pod's Deployment so that they go with it.
func newPublisher(ctx context.Context, client kubernetes.Interface, opts *config.Options, source capacity.Source, reg prometheus.Registerer) (*capacity.Publisher, error) {
	owner, err := capacity.Owner(ctx, client, opts.Namespace, opts.PodName)
	if err != nil {
		return nil, fmt.Errorf("the owner of the CSIStorageCapacity objects: %w", err)
	}
	return &capacity.Publisher{
		Client: client, Namespace: opts.Namespace, Owner: owner, Name: opts.CapacityName, Source: source,
		Interval: opts.CapacityInterval, Delay: capacityDelay, Metrics: capacity.NewMetrics(reg),
	}, nil
}

// capacityDelay gathers the refreshes a burst of operations on a node asks for into one
// measurement.
const capacityDelay = time.Second

// newClient is the API client opts configure.
func newClient(opts *config.Options) (*rest.Config, kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(opts.KubeQPS), opts.KubeBurst
	cfg.UserAgent = "dirpv/" + version
	client, err := kubernetes.NewForConfig(cfg)
	return cfg, client, err
}

// newRecorder records events through client until stop is called.
func newRecorder(ctx context.Context, client kubernetes.Interface) (recorder record.EventRecorder, stop func()) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "dirpv"}), broadcaster.Shutdown
}

// newRegistry holds every metric /metrics serves: the process's, its requests to the API server,
// and those each part of dirpv registers as it is built.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "kube_api_requests_total",
		Help: "Requests this process made to kube-apiserver, by method and response code.",
	}, []string{"method", "code"})
	reg.MustRegister(requests)
	// client-go takes one such counter per process (the first registration wins).
	clientmetrics.Register(clientmetrics.RegisterOpts{RequestResult: apiRequests{requests}})
	return reg
}

// apiRequests counts requests to kube-apiserver as client-go reports them.
type apiRequests struct{ *prometheus.CounterVec }

func (r apiRequests) Increment(_ context.Context, code, method, _ string) {
	r.WithLabelValues(method, code).Inc()
}
