package usage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/backend"
)

const name = "dirpv.io/provisioner"

// fakeVolumes answers Usage from a table by PV name, and records the PVs it was asked about.
type fakeVolumes struct {
	mu    sync.Mutex
	usage map[string]reading
	asked []string
	// probes answers Enforceable by "class/node"; probed records the questions.
	probes map[string]probeResult
	probed []string
}

type reading struct {
	used, limit uint64
	err         error
}

func (f *fakeVolumes) Usage(_ context.Context, pv *v1.PersistentVolume) (uint64, uint64, error) {
	f.mu.Lock()
	r, ok := f.usage[pv.Name]
	f.asked = append(f.asked, pv.Name)
	f.mu.Unlock()
	if !ok {
		return 0, 0, fmt.Errorf("unexpected read of %s", pv.Name)
	}
	return r.used, r.limit, r.err
}

func (f *fakeVolumes) Enforceable(_ context.Context, sc *storagev1.StorageClass, node *v1.Node) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := sc.Name + "/" + node.Name
	f.probed = append(f.probed, key)
	r, ok := f.probes[key]
	if !ok {
		return "", fmt.Errorf("unexpected probe of %s", key)
	}
	return r.kind, r.err
}

type probeResult struct {
	kind string
	err  error
}

func (f *fakeVolumes) set(usage map[string]reading) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.usage, f.asked = usage, nil
}

func (f *fakeVolumes) reads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := slices.Clone(f.asked)
	slices.Sort(s)
	return s
}

// pv is a bound, enforced PV of dirpv's, of 1Gi, bound to the claim ns/<name>-claim.
func pv(name string, mutate ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
	p := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			backend.AnnProvisionedBy: "dirpv.io/provisioner", "dirpv.io/capacity": "enforce",
		}},
		Spec: v1.PersistentVolumeSpec{
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			ClaimRef: &v1.ObjectReference{Namespace: "ns", Name: name + "-claim"},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// newTest returns a collector whose lister holds pvs (an informer that is never started: its
// cache is filled by hand), and the registry of its gauges.
func newTest(t *testing.T, volumes Volumes, pvs ...*v1.PersistentVolume) (*Collector, *prometheus.Registry, cache.Indexer) {
	t.Helper()
	inf := informers.NewSharedInformerFactory(fake.NewClientset(), 0).Core().V1().PersistentVolumes()
	for _, p := range pvs {
		if err := inf.Informer().GetIndexer().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	labels := []string{"namespace", "persistentvolumeclaim", "persistentvolume"}
	g := Gauges{
		Capacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "capacity"}, labels),
		Used:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "used"}, labels),
		Errors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "errors"}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.Capacity, g.Used, g.Errors)
	return New([]string{name}, volumes, inf, g, time.Minute), reg, inf.Informer().GetIndexer()
}

// gathered is what the registry serves: "metric ns/claim/pv" (or "errors") -> value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "errors" {
				out["errors"] = m.GetCounter().GetValue()
				continue
			}
			var l []string
			for _, lp := range m.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			out[mf.GetName()+" "+strings.Join(l, ",")] = m.GetGauge().GetValue()
		}
	}
	return out
}

// key names a series as gathered does.
func key(metric, pv string) string {
	return fmt.Sprintf("%s namespace=ns,persistentvolume=%s,persistentvolumeclaim=%s-claim", metric, pv, pv)
}

func TestRefresh(t *testing.T) {
	failed := errors.New("helper on node node1 failed: no such volume")
	tests := []struct {
		name  string
		pv    *v1.PersistentVolume
		read  reading
		want  map[string]float64 // besides errors
		asked bool
		errs  float64
	}{
		{name: "bound and enforced", pv: pv("pv1"), read: reading{used: 5 << 20, limit: 2 << 30}, asked: true,
			want: map[string]float64{key("capacity", "pv1"): 2 << 30, key("used", "pv1"): 5 << 20}},
		{name: "no limit reported: the PV's capacity", pv: pv("pv1"), read: reading{used: 5 << 20}, asked: true,
			want: map[string]float64{key("capacity", "pv1"): 1 << 30, key("used", "pv1"): 5 << 20}},
		{name: "empty", pv: pv("pv1"), read: reading{limit: 1 << 30}, asked: true,
			want: map[string]float64{key("capacity", "pv1"): 1 << 30, key("used", "pv1"): 0}},
		{name: "the read failed", pv: pv("pv1"), read: reading{err: failed}, asked: true, errs: 1},
		{name: "another provisioner's", pv: pv("pv1", func(p *v1.PersistentVolume) { p.Annotations[backend.AnnProvisionedBy] = "other" })},
		{name: "capacity a label", pv: pv("pv1", func(p *v1.PersistentVolume) { delete(p.Annotations, "dirpv.io/capacity") })},
		{name: "released", pv: pv("pv1", func(p *v1.PersistentVolume) { p.Status.Phase = v1.VolumeReleased })},
		{name: "available", pv: pv("pv1", func(p *v1.PersistentVolume) { p.Status.Phase = v1.VolumeAvailable; p.Spec.ClaimRef = nil })},
		{name: "bound without a claim", pv: pv("pv1", func(p *v1.PersistentVolume) { p.Spec.ClaimRef = nil })},
		{name: "being deleted", pv: pv("pv1", func(p *v1.PersistentVolume) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			f := &fakeVolumes{usage: map[string]reading{"pv1": tt.read}}
			c, reg, _ := newTest(t, f, tt.pv)
			c.refresh(ctx)
			want := maps.Clone(tt.want)
			if want == nil {
				want = map[string]float64{}
			}
			want["errors"] = tt.errs
			if got := gathered(t, reg); !maps.Equal(got, want) {
				t.Errorf("metrics %v, want %v", got, want)
			}
			if asked := len(f.reads()) > 0; asked != tt.asked {
				t.Errorf("read %q, want a read: %v", f.reads(), tt.asked)
			}
		})
	}
}

// Series follow the PVs from one refresh to the next: a PV gone, no longer bound or whose read
// fails loses them; a PV recycled to another claim gets the new claim's and loses the old.
func TestRefreshDeletesSeries(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := &fakeVolumes{}
	c, reg, pvs := newTest(t, f, pv("pv1"), pv("pv2"), pv("pv3"), pv("pv4"))
	steps := []struct {
		name   string
		change func()
		usage  map[string]reading
		want   map[string]float64
	}{
		{
			name:  "all four",
			usage: map[string]reading{"pv1": {1, 10, nil}, "pv2": {2, 20, nil}, "pv3": {3, 30, nil}, "pv4": {4, 40, nil}},
			want: map[string]float64{
				key("used", "pv1"): 1, key("capacity", "pv1"): 10, key("used", "pv2"): 2, key("capacity", "pv2"): 20,
				key("used", "pv3"): 3, key("capacity", "pv3"): 30, key("used", "pv4"): 4, key("capacity", "pv4"): 40, "errors": 0,
			},
		},
		{
			name: "pv2 deleted, pv3 released, pv4's read fails, pv1 grew",
			change: func() {
				must(t, pvs.Delete(pv("pv2")))
				must(t, pvs.Update(pv("pv3", func(p *v1.PersistentVolume) { p.Status.Phase = v1.VolumeReleased })))
			},
			usage: map[string]reading{"pv1": {5, 50, nil}, "pv4": {err: errors.New("node down")}},
			want:  map[string]float64{key("used", "pv1"): 5, key("capacity", "pv1"): 50, "errors": 1},
		},
		{
			name: "pv3 recycled to another claim, pv4 read again",
			change: func() {
				must(t, pvs.Update(pv("pv3", func(p *v1.PersistentVolume) { p.Spec.ClaimRef.Name = "next" })))
			},
			usage: map[string]reading{"pv1": {5, 50, nil}, "pv3": {0, 30, nil}, "pv4": {4, 40, nil}},
			want: map[string]float64{
				key("used", "pv1"): 5, key("capacity", "pv1"): 50, key("used", "pv4"): 4, key("capacity", "pv4"): 40, "errors": 1,
				"used namespace=ns,persistentvolume=pv3,persistentvolumeclaim=next":     0,
				"capacity namespace=ns,persistentvolume=pv3,persistentvolumeclaim=next": 30,
			},
		},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		f.set(s.usage)
		c.refresh(ctx)
		if got := gathered(t, reg); !maps.Equal(got, s.want) {
			t.Fatalf("%s: metrics %v, want %v", s.name, got, s.want)
		}
		if got, want := f.reads(), slices.Sorted(maps.Keys(s.usage)); !slices.Equal(got, want) {
			t.Errorf("%s: read %q, want %q", s.name, got, want)
		}
	}
}

// A refresh reads at most Workers volumes at a time, and that many when it has more.
func TestRefreshBounded(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	var pvs []*v1.PersistentVolume
	usage := map[string]reading{}
	for i := range 3 * Workers {
		name := fmt.Sprintf("pv%d", i)
		pvs = append(pvs, pv(name))
		usage[name] = reading{used: uint64(i), limit: 1 << 30}
	}
	b := &blocking{fakeVolumes: fakeVolumes{usage: usage}, release: make(chan struct{}), in: make(chan struct{}, 3*Workers)}
	c, reg, _ := newTest(t, b, pvs...)
	done := make(chan struct{})
	go func() {
		c.refresh(ctx)
		close(done)
	}()
	for range Workers {
		<-b.in
	}
	close(b.release)
	<-done
	if b.most != Workers {
		t.Errorf("at most %d reads at once, want %d", b.most, Workers)
	}
	if got := len(gathered(t, reg)); got != 2*len(pvs)+1 {
		t.Errorf("%d metrics, want %d", got, 2*len(pvs)+1)
	}
}

// blocking holds every read until release is closed, and keeps the most reads it saw at once.
type blocking struct {
	fakeVolumes
	release chan struct{}
	in      chan struct{}

	mu        sync.Mutex
	now, most int
}

func (b *blocking) Usage(ctx context.Context, pv *v1.PersistentVolume) (uint64, uint64, error) {
	b.mu.Lock()
	b.now++
	b.most = max(b.most, b.now)
	b.mu.Unlock()
	b.in <- struct{}{}
	<-b.release
	b.mu.Lock()
	b.now--
	b.mu.Unlock()
	return b.fakeVolumes.Usage(ctx, pv)
}

// A node's volumes are read together, so that they share its helper pods.
func TestRefreshByNode(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	on := func(node string) func(*v1.PersistentVolume) {
		return func(p *v1.PersistentVolume) {
			p.Spec.NodeAffinity = &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{node}}},
			}}}}
		}
	}
	f := &fakeVolumes{usage: map[string]reading{"pv1": {}, "pv2": {}, "pv3": {}, "pv4": {}}}
	c, _, _ := newTest(t, f, pv("pv1", on("node2")), pv("pv2", on("node1")), pv("pv3", on("node2")), pv("pv4", on("node1")))
	c.workers = 1
	c.refresh(ctx)
	if want := []string{"pv2", "pv4", "pv1", "pv3"}; !slices.Equal(f.asked, want) {
		t.Errorf("read %q, want %q: node1's, then node2's", f.asked, want)
	}
}

// Run refreshes at once, and deletes its series when its term ends.
func TestRun(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &fakeVolumes{usage: map[string]reading{"pv1": {1, 10, nil}}}
	c, reg, _ := newTest(t, f, pv("pv1"))
	c.synced = []cache.InformerSynced{func() bool { return true }}
	refreshed := make(chan struct{}, 1)
	c.refreshed = func() { refreshed <- struct{}{} }
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	<-refreshed // the first, at once; the next waits for the interval (a minute)
	if got := gathered(t, reg); got[key("used", "pv1")] != 1 || got[key("capacity", "pv1")] != 10 {
		t.Fatalf("metrics after the first refresh: %v", got)
	}
	cancel()
	<-done
	if got := gathered(t, reg); len(got) != 1 {
		t.Errorf("metrics after Run returned: %v, want only the error count", got)
	}
}

// An interval of 0 turns the collector off.
func TestRunOff(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := &fakeVolumes{usage: map[string]reading{"pv1": {1, 10, nil}}}
	c, _, _ := newTest(t, f, pv("pv1"))
	c.interval = 0
	c.synced = []cache.InformerSynced{func() bool { return true }}
	c.Run(ctx) // returns at once
	if len(f.reads()) != 0 {
		t.Errorf("read %q with the collector off", f.reads())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Each class of dirpv's with capacity: enforce is probed on every node: once while it succeeds,
// at every refresh while it fails; the gauge says which, and goes with the node or class.
func TestProbes(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := &fakeVolumes{probes: map[string]probeResult{
		"sized/n1": {kind: "btrfs qgroup"},
		"sized/n2": {err: errors.New("ext4 at /var/lib/dirpv/sized has no project quotas")},
	}}
	c, reg, _ := newTest(t, f)
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	classes, nodes := factory.Storage().V1().StorageClasses(), factory.Core().V1().Nodes()
	class := func(name, provisioner, capacity string) *storagev1.StorageClass {
		return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner,
			Parameters: map[string]string{"backend": "hostPath", "capacity": capacity}}
	}
	for _, sc := range []*storagev1.StorageClass{class("sized", name, "enforce"), class("plain", name, "label"), class("foreign", "other.io/x", "enforce")} {
		if err := classes.Informer().GetIndexer().Add(sc); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"n1", "n2"} {
		if err := nodes.Informer().GetIndexer().Add(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	enforceable := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "enforceable"}, []string{"storageclass", "node"})
	reg.MustRegister(enforceable)
	c.WithProbes(Probes{Classes: classes.Lister(), Nodes: nodes.Lister(), Enforceable: enforceable})

	c.refresh(ctx)
	slices.Sort(f.probed)
	if want := []string{"sized/n1", "sized/n2"}; !slices.Equal(f.probed, want) {
		t.Errorf("probed %q, want %q", f.probed, want)
	}
	want := map[string]float64{"enforceable node=n1,storageclass=sized": 1, "enforceable node=n2,storageclass=sized": 0}
	if got := probeSeries(t, reg); !maps.Equal(got, want) {
		t.Errorf("gathered %v, want %v", got, want)
	}

	// A failed probe waits retryFailed for its next run, and twice as long after each failure
	// more, up to retryFailedMost; one that succeeded runs no more.
	now := time.Now()
	c.prober.now = func() time.Time { return now }
	wait := retryFailed
	for range 7 {
		f.probed = nil
		c.refresh(ctx)
		if len(f.probed) != 0 {
			t.Fatalf("probed again before %v: %q", wait, f.probed)
		}
		now = now.Add(wait - time.Second)
		c.refresh(ctx)
		if len(f.probed) != 0 {
			t.Fatalf("probed again before %v: %q", wait, f.probed)
		}
		now = now.Add(time.Second)
		c.refresh(ctx)
		if want := []string{"sized/n2"}; !slices.Equal(f.probed, want) {
			t.Fatalf("probed after %v: %q, want the failed %q", wait, f.probed, want)
		}
		wait = min(2*wait, retryFailedMost)
	}
	if wait != retryFailedMost {
		t.Errorf("the wait grew to %v, want it held at %v", wait, retryFailedMost)
	}
	f.probed = nil
	f.probes["sized/n2"] = probeResult{kind: "btrfs qgroup"}
	now = now.Add(wait)
	c.refresh(ctx)
	if want := []string{"sized/n2"}; !slices.Equal(f.probed, want) {
		t.Errorf("probed again %q, want only the failed %q", f.probed, want)
	}
	if got := probeSeries(t, reg)["enforceable node=n2,storageclass=sized"]; got != 1 {
		t.Errorf("n2 after its fix: %v, want 1", got)
	}

	if err := nodes.Informer().GetIndexer().Delete(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	c.refresh(ctx)
	want = map[string]float64{"enforceable node=n2,storageclass=sized": 1}
	if got := probeSeries(t, reg); !maps.Equal(got, want) {
		t.Errorf("after n1 went: gathered %v, want %v", got, want)
	}
	c.deleteProbes()
	if got := probeSeries(t, reg); len(got) != 0 {
		t.Errorf("after the term: gathered %v, want nothing", got)
	}
}

// probeSeries is what the registry serves of the probes' gauge.
func probeSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	got := gathered(t, reg)
	maps.DeleteFunc(got, func(k string, _ float64) bool { return !strings.HasPrefix(k, "enforceable ") })
	return got
}
