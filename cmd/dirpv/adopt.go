package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/reference"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/nodeexec"
)

// runAdopt is `dirpv adopt [--dry-run] [--cmdline=FILE]`: it takes over, once, every PV of the
// provisioners the provisioner adopts that dirpv has not recorded yet, and lists what it did or,
// with --dry-run, what it would do, changing nothing. It works with the provisioner's own
// settings, read from its command line (by default that of PID 1: the provisioner, in whose
// container `kubectl exec` runs it), so it checks against exactly what the provisioner serves.
func runAdopt(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dirpv adopt", flag.ContinueOnError)
	dryRun := fs.Bool("dry-run", false, "list what would be taken over and what refused, and change nothing")
	cmdline := fs.String("cmdline", "/proc/1/cmdline", "the provisioner's command line: its arguments separated by NUL bytes, the first the dirpv binary")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	opts, err := provisionerOptions(*cmdline)
	if err != nil {
		return err
	}
	if len(opts.Adopt) == 0 {
		return fmt.Errorf("the provisioner (%s) adopts nothing: it has no --adopt", *cmdline)
	}
	cfg, client, err := newClient(opts)
	if err != nil {
		return err
	}
	// Node-local directories are checked on their nodes by helper pods, each gone when its
	// operations are: this run leaves no agents behind.
	helperPods, err := nodeexec.HelperPods(ctx, client, opts)
	if err != nil {
		return err
	}
	once := *opts
	once.HelperKeepAlive = 0
	transport := nodeexec.New(cfg, helperPods, &once, nil)
	prov := &provisioner.Provisioner{
		Backends:  backend.Set{nfs.New(opts, nil, nil), hostpath.New(opts, client, nil, transport)},
		Recorder:  syncRecorder{ctx: ctx, client: client},
		Now:       time.Now,
		PVs:       client.CoreV1().PersistentVolumes(),
		Adoptions: opts.Adopt,
		Peers:     provisioner.ClientPeers{Client: client},
	}
	return adoptAll(ctx, client, prov, *dryRun, stdout)
}

// provisionerOptions reads and validates the provisioner's options from its command line.
func provisionerOptions(file string) (*config.Options, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("the provisioner's command line: %w", err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if path.Base(args[0]) != "dirpv" || len(args) > 1 && (args[1] == "helper" || args[1] == "adopt") {
		return nil, fmt.Errorf("%s is not the command line of the dirpv provisioner (%q)", file, args[0])
	}
	fs := flag.NewFlagSet("dirpv", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var opts config.Options
	opts.AddFlags(fs)
	fs.Bool("version", false, "")
	klog.InitFlags(fs) // its verbosity is this command's too
	if err := fs.Parse(args[1:]); err != nil {
		return nil, fmt.Errorf("the provisioner's command line (%s): %w", file, err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("the provisioner's command line (%s): %w", file, err)
	}
	return &opts, nil
}

// adoptAll takes over every PV prov adopts and lists each: "adopted", "would adopt" or
// "refused", with the directory or the reason. A refusal is not the run's error: the PV is left
// as it was, with its event; any other failure is, after the rest were tried.
func adoptAll(ctx context.Context, client kubernetes.Interface, prov *provisioner.Provisioner, dryRun bool, out io.Writer) error {
	pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	var n int
	for i := range pvs.Items {
		pv := &pvs.Items[i]
		if !prov.Adopts(pv) {
			continue
		}
		n++
		adopted, err := prov.Adopt(ctx, pv, dryRun)
		switch {
		case errors.Is(err, provisioner.ErrAdoptionRefused):
			fmt.Fprintf(out, "refused      PV %s: %v\n", pv.Name, err)
		case err != nil:
			fmt.Fprintf(out, "failed       PV %s: %v\n", pv.Name, err)
			errs = append(errs, err)
		case dryRun:
			fmt.Fprintf(out, "would adopt  PV %s: %s, onDelete %s\n", pv.Name, adopted.Volume, adopted.Record[backend.AnnOnDelete])
		default:
			fmt.Fprintf(out, "adopted      PV %s: %s, onDelete %s\n", pv.Name, adopted.Volume, adopted.Record[backend.AnnOnDelete])
		}
	}
	var summary bytes.Buffer
	fmt.Fprintf(&summary, "%d PVs to take over", n)
	if dryRun {
		summary.WriteString(" (dry run: nothing changed)")
	}
	fmt.Fprintln(out, summary.String())
	return errors.Join(errs...)
}

// syncRecorder records each event before it returns: this command exits right after its last
// one, and an event broadcaster's queue would go with it.
type syncRecorder struct {
	ctx    context.Context
	client kubernetes.Interface
}

var _ record.EventRecorder = syncRecorder{}

// Event implements record.EventRecorder. An event that cannot be recorded is logged: the work
// it reports is done.
func (r syncRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	ref, err := reference.GetReference(scheme.Scheme, object)
	if err != nil {
		klog.FromContext(r.ctx).Error(err, "Event not recorded", "reason", reason, "message", message)
		return
	}
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault // where events of cluster-scoped objects go
	}
	now := metav1.Now()
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()), Namespace: ns}, // named as client-go names events
		InvolvedObject: *ref, Reason: reason, Message: message, Type: eventtype,
		FirstTimestamp: now, LastTimestamp: now, Count: 1, Source: v1.EventSource{Component: "dirpv"},
	}
	if _, err := r.client.CoreV1().Events(ns).Create(r.ctx, ev, metav1.CreateOptions{}); err != nil {
		klog.FromContext(r.ctx).Error(err, "Event not recorded", "object", ref.Name, "reason", reason, "message", message)
	}
}

// Eventf implements record.EventRecorder.
func (r syncRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.Event(object, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

// AnnotatedEventf implements record.EventRecorder; the annotations are not recorded.
func (r syncRecorder) AnnotatedEventf(object runtime.Object, _ map[string]string, eventtype, reason, messageFmt string, args ...any) {
	r.Eventf(object, eventtype, reason, messageFmt, args...)
}
