//go:build e2e

package e2e

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"dirpv.io/dirpv/provisioner/backend"
)

// benchSettings are what `make bench` measures; hack/bench.sh passes them from the environment.
type benchSettings struct {
	// Runs is how many times each measurement is made; the table gives medians.
	Runs int `json:"runs"`
	// Claims is the size of each nfs burst; Replicas the sizes of the hostPath StatefulSets.
	Claims   int   `json:"claims"`
	Replicas []int `json:"replicas"`
	// Volumes is how many PVs and claims the memory part fills the cluster with.
	Volumes int `json:"volumes"`
	// NFS, HostPath and Memory select the parts measured.
	NFS      bool `json:"nfs"`
	HostPath bool `json:"hostPath"`
	Memory   bool `json:"memory"`
	// Install is the overlay of e2e/testdata dirpv is installed with.
	Install string `json:"install"`
}

func readBenchSettings(t *testing.T) benchSettings {
	atoi := func(name, def string) []int {
		var out []int
		for _, f := range strings.Split(cmp.Or(os.Getenv(name), def), ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("%s: %q is not a positive number", name, f)
			}
			out = append(out, n)
		}
		return out
	}
	parts := cmp.Or(os.Getenv("DIRPV_BENCH_PARTS"), "nfs,hostpath,memory")
	return benchSettings{
		Runs:     atoi("DIRPV_BENCH_RUNS", "3")[0],
		Claims:   atoi("DIRPV_BENCH_CLAIMS", "200")[0],
		Replicas: atoi("DIRPV_BENCH_REPLICAS", "50,100,200"),
		Volumes:  atoi("DIRPV_BENCH_VOLUMES", "10000")[0],
		NFS:      strings.Contains(parts, "nfs"),
		HostPath: strings.Contains(parts, "hostpath"),
		Memory:   strings.Contains(parts, "memory"),
		Install:  cmp.Or(os.Getenv("DIRPV_BENCH_INSTALL"), "install"),
	}
}

// benchRow is one line of the table: dirpv's time against the cluster's ceiling for the same
// work, the same work done by kube-controller-manager and the kubelet on PVs made beforehand.
// Each figure is the median over the runs; Ratio is the median of the ratios, each measured
// within one run.
type benchRow struct {
	Run     string  `json:"run"`
	Dirpv   float64 `json:"dirpvSeconds"`
	Ceiling float64 `json:"ceilingSeconds,omitempty"`
	// Ratio is Dirpv/Ceiling, or for the direct rows Dirpv/(the mount row's Dirpv).
	Ratio float64 `json:"ratio"`
	Of    string  `json:"ratioOf"`

	dirpv, ceiling, ratio []float64
}

// benchTable collects each row's figures over the runs, in the order rows first appear.
type benchTable struct {
	t    *testing.T
	rows []*benchRow
}

func (b *benchTable) add(run string, dirpv, ceiling float64, of string) {
	i := slices.IndexFunc(b.rows, func(r *benchRow) bool { return r.Run == run })
	if i < 0 {
		b.rows = append(b.rows, &benchRow{Run: run, Of: of})
		i = len(b.rows) - 1
	}
	r := b.rows[i]
	b.t.Logf("%s: %.1f s, %s %.1f s: %.2fx", run, dirpv, of, ceiling, dirpv/ceiling)
	r.dirpv, r.ceiling, r.ratio = append(r.dirpv, dirpv), append(r.ceiling, ceiling), append(r.ratio, dirpv/ceiling)
	r.Dirpv, r.Ratio = median(r.dirpv), median(r.ratio)
	if of == "ceiling" {
		r.Ceiling = median(r.ceiling)
	}
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

// TestBench is what `make bench` measures (hack/bench.sh sets DIRPV_BENCH to the JSON file it
// writes); the e2e suite skips it. Each ratio is measured within one run and the table gives the
// medians over the runs, so ratios compare across machines:
//   - nfs: Claims claims of one class at once until all are Bound, and their deletion until
//     every PV and directory is gone, with access: mount and access: direct, against the
//     ceiling: the same claims bound to PVs made beforehand (no provisioner at all), and deleted
//     until those PVs are gone, deleted by an external provisioner that does no work
//     (instantDeleter);
//   - hostPath: StatefulSets of Replicas replicas (Parallel) until every pod runs, and the
//     deletion of their claims once the pods are gone until every PV is, against the same
//     StatefulSets over node-pinned PVs made beforehand, deleted by instantDeleter.
//
// It also reports claim-to-Bound latencies (p50, p99, from the burst's start), the leader's peak
// RSS and CPU seconds over the run, and the API requests it made per volume.
func TestBench(t *testing.T) {
	out := os.Getenv("DIRPV_BENCH")
	if out == "" {
		t.Skip("run by make bench")
	}
	set := readBenchSettings(t)
	install(t, set.Install)
	bc := ownClient(t, 200, 400)
	lead := leaderPod(t)
	requestsBefore := apiRequests(t, lead.Status.PodIP)
	volumes := 0
	table := benchTable{t: t}
	latency := map[string][2][]float64{}

	for run := 1; run <= set.Runs; run++ {
		t.Logf("run %d of %d", run, set.Runs)
		if set.NFS {
			staticBind, staticRelease := staticNFSBurst(t, bc, set.Claims)
			var mountBind, mountDelete float64
			for _, r := range []struct{ access, class string }{{"mount", faultClassNFS}, {"direct", faultClassDirect}} {
				bind, del, p50, p99 := nfsBurst(t, bc, r.class, set.Claims)
				volumes += set.Claims
				l := latency[r.access]
				latency[r.access] = [2][]float64{append(l[0], p50), append(l[1], p99)}
				table.add(fmt.Sprintf("nfs %s, %d claims at once -> all Bound", r.access, set.Claims), bind, staticBind, "ceiling")
				table.add(fmt.Sprintf("nfs %s, %d claims deleted -> all PVs and directories gone", r.access, set.Claims), del, staticRelease, "ceiling")
				if r.access == "mount" {
					mountBind, mountDelete = bind, del
				} else {
					table.add("nfs direct/mount, all Bound", bind, mountBind, "mount")
					table.add("nfs direct/mount, deleted", del, mountDelete, "mount")
				}
			}
		}
		if set.HostPath {
			for _, n := range set.Replicas {
				class, cleanup := staticHostPathClass(t, n)
				ceilingRun, ceilingDelete := statefulSetRun(t, n, class)
				cleanup()
				took, del := statefulSetRun(t, n, "dirpv-hostpath")
				volumes += n
				table.add(fmt.Sprintf("hostPath, StatefulSet of %d (Parallel) -> all Running", n), took, ceilingRun, "ceiling")
				table.add(fmt.Sprintf("hostPath, StatefulSet of %d scaled to 0, claims deleted -> all PVs gone", n), del, ceilingDelete, "ceiling")
			}
		}
	}

	use := processUse(t, lead)
	perVolume := (apiRequests(t, lead.Status.PodIP) - requestsBefore) / float64(max(volumes, 1))
	var heldRSS int64
	if set.Memory {
		heldRSS = memoryRun(t, bc, lead, set.Volumes)
	}
	version, _ := client.Discovery().ServerVersion()
	var b strings.Builder
	fmt.Fprintf(&b, "%d cores, Kubernetes %s, medians of %d runs, dirpv as in e2e/testdata/%s\n", runtime.NumCPU(), version.GitVersion, set.Runs, set.Install)
	fmt.Fprintf(&b, "| run | ratio | dirpv | the cluster's ceiling |\n|---|---|---|---|\n")
	for _, r := range table.rows {
		ceiling := "(of mount)"
		if r.Ceiling > 0 {
			ceiling = fmt.Sprintf("%.1f s", r.Ceiling)
		}
		fmt.Fprintf(&b, "| %s | %.2fx | %.1f s | %s |\n", r.Run, r.Ratio, r.Dirpv, ceiling)
	}
	p := func(access string) [2]float64 {
		l := latency[access]
		if len(l[0]) == 0 {
			return [2]float64{}
		}
		return [2]float64{median(l[0]), median(l[1])}
	}
	if set.NFS {
		fmt.Fprintf(&b, "| claim to Bound, p50 / p99 (mount; direct) | | %.1f / %.1f s; %.1f / %.1f s | |\n",
			p("mount")[0], p("mount")[1], p("direct")[0], p("direct")[1])
	}
	fmt.Fprintf(&b, "| leader: peak RSS, CPU (all runs) | | %d MiB, %.0f s | |\n", use.peakRSSKiB/1024, use.cpu.Seconds())
	fmt.Fprintf(&b, "| API requests per volume | | %.1f | |\n", perVolume)
	if set.Memory {
		fmt.Fprintf(&b, "| leader's RSS with %d PVs and claims in the cluster | | %d MiB | |\n", set.Volumes, heldRSS/1024)
	}
	fmt.Print(b.String())
	report := map[string]any{
		"cores": runtime.NumCPU(), "kubernetes": version.GitVersion, "settings": set, "rows": table.rows,
		"claimToBoundSeconds": map[string]any{"mount": p("mount"), "direct": p("direct")},
		"leaderPeakRSSBytes":  use.peakRSSKiB * 1024, "leaderCPUSeconds": use.cpu.Seconds(),
		"apiRequestsPerVolume": perVolume, "leaderRSSBytesWithVolumes": heldRSS * 1024,
	}
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nfsBurst creates n claims of class at once and returns the seconds until all were
// Bound and until, once deleted, every PV and directory was gone, and the claim-to-Bound
// latencies (p50, p99, from the burst's start, as seen by polling every 250 ms). The burst's
// invariants are checked as in the fault cases.
func nfsBurst(t *testing.T, bc kubernetes.Interface, class string, n int) (bind, del, p50, p99 float64) {
	ns := namespace(t)
	subtree := filepath.Join("fault", ns)
	start := time.Now()
	claims := createClaims(t, bc, ns, class, "c", n)
	boundAt := map[string]time.Duration{}
	pollFor(t, settleTimeout, class+" claims Bound", func(ctx context.Context) (bool, error) {
		pvcs, err := claimsOf(ctx, bc, ns)
		if err != nil {
			return false, nil
		}
		for _, name := range claims {
			if _, seen := boundAt[name]; !seen && pvcs[name].Status.Phase == v1.ClaimBound {
				boundAt[name] = time.Since(start)
			}
		}
		return len(boundAt) == len(claims), nil
	})
	bind = time.Since(start).Seconds()
	if a, duplicates, _ := provisioned(t, bc, ns, class, subtree, claims); !a.clean() || duplicates > 0 {
		t.Fatalf("%s burst: %d duplicates, audit %+v", class, duplicates, a)
	}
	var lat []time.Duration
	for _, d := range boundAt {
		lat = append(lat, d)
	}
	slices.Sort(lat)
	p50, p99 = lat[len(lat)/2].Seconds(), lat[len(lat)*99/100].Seconds()

	start = time.Now()
	deleteClaims(t, bc, ns, claims)
	pollFor(t, settleTimeout, class+" PVs and directories gone", func(ctx context.Context) (bool, error) {
		pvs, err := pvsWhere(ctx, bc, claimedIn(ns))
		if err != nil || len(pvs) > 0 {
			return false, nil
		}
		left, _ := os.ReadDir(filepath.Join(exportDir, subtree))
		return len(left) == 0, nil
	})
	del = time.Since(start).Seconds()
	if a := deleted(t, bc, subtree, claimedIn(ns)); !a.clean() {
		t.Fatalf("%s deletion: audit %+v", class, a)
	}
	return bind, del, p50, p99
}

// staticNFSBurst is the ceiling of nfsBurst: n PVs made beforehand (staticPV), the same claims
// at once until all are Bound, then deleted until the PVs are gone. Only kube-controller-manager
// and instantDeleter work here.
func staticNFSBurst(t *testing.T, bc kubernetes.Interface, n int) (bind, gone float64) {
	ns := namespace(t)
	class := staticClass(t, "e2e-bench-nfs-"+ns, storagev1.VolumeBindingImmediate)
	var pvs []string
	for i := range n {
		pv := staticPV(class, i, v1.ReadWriteMany, v1.PersistentVolumeSource{
			NFS: &v1.NFSVolumeSource{Server: nfsServer, Path: exportDir + "/unused/" + strconv.Itoa(i)}})
		pvs = append(pvs, pv.Name)
		createPV(t, bc, pv)
	}
	defer deletePVs(bc, pvs)
	defer instantDeleter(t, class)()
	pollFor(t, time.Minute, "the static PVs Available", func(ctx context.Context) (bool, error) {
		list, err := pvsWhere(ctx, bc, func(pv *v1.PersistentVolume) bool { return pv.Spec.StorageClassName == class })
		return err == nil && countPhase(list, v1.VolumeAvailable) == n, nil
	})

	start := time.Now()
	claims := createClaims(t, bc, ns, class, "c", n)
	pollFor(t, settleTimeout, "static claims Bound", func(ctx context.Context) (bool, error) {
		pvcs, err := claimsOf(ctx, bc, ns)
		if err != nil {
			return false, nil
		}
		for _, name := range claims {
			if pvcs[name].Status.Phase != v1.ClaimBound {
				return false, nil
			}
		}
		return true, nil
	})
	bind = time.Since(start).Seconds()
	start = time.Now()
	deleteClaims(t, bc, ns, claims)
	pollFor(t, settleTimeout, "static PVs gone", func(ctx context.Context) (bool, error) {
		list, err := pvsWhere(ctx, bc, func(pv *v1.PersistentVolume) bool { return pv.Spec.StorageClassName == class })
		return err == nil && len(list) == 0, nil
	})
	return bind, time.Since(start).Seconds()
}

// staticPV is the i-th PV made beforehand for a class without a provisioner. It says it was
// provisioned by an external provisioner that no one runs, with policy Delete, so that
// kube-controller-manager does for it on release what it does for dirpv's PVs (it reads the PV
// again before it leaves it to that provisioner), and instantDeleter plays that provisioner.
func staticPV(class string, i int, access v1.PersistentVolumeAccessMode, source v1.PersistentVolumeSource) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%s-%03d", class, i),
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": instantProvisioner},
		},
		Spec: v1.PersistentVolumeSpec{
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			AccessModes:                   []v1.PersistentVolumeAccessMode{access},
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeSource:        source,
		},
	}
}

// instantProvisioner is the provisioner staticPV's PVs name; instantDeleter does its work.
const instantProvisioner = "dirpv.io/bench-instant"

// instantDeleter deletes each PV of class the moment it is Released, with a client that has
// dirpv's default rate limits, from a watch: an external provisioner whose deletion costs
// nothing, the ceiling of any. It returns what stops it.
func instantDeleter(t *testing.T, class string) (stop func()) {
	c := ownClient(t, 100, 200)
	factory := informers.NewSharedInformerFactory(c, 0)
	remove := func(obj any) {
		pv, ok := obj.(*v1.PersistentVolume)
		if !ok || pv.Spec.StorageClassName != class || pv.Status.Phase != v1.VolumeReleased || pv.DeletionTimestamp != nil {
			return
		}
		go func() {
			_ = c.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		}()
	}
	if _, err := factory.Core().V1().PersistentVolumes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    remove,
		UpdateFunc: func(_, obj any) { remove(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	factory.Start(done)
	factory.WaitForCacheSync(done)
	return sync.OnceFunc(func() { close(done); factory.Shutdown() })
}

// staticHostPathClass makes n node-pinned hostPath PVs on node1 (staticPV; directories made on
// first use) of a class without a provisioner, binding WaitForFirstConsumer, with instantDeleter
// running for it, and returns the class and what stops the deleter and deletes what is left of
// the PVs and their directories.
func staticHostPathClass(t *testing.T, n int) (string, func()) {
	class := staticClass(t, "e2e-bench-local-"+rand.String(5), storagev1.VolumeBindingWaitForFirstConsumer)
	orCreate := v1.HostPathDirectoryOrCreate
	var pvs []string
	for i := range n {
		pv := staticPV(class, i, v1.ReadWriteOnce, v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{
			Path: filepath.Join(basePath, "bench-static", class, strconv.Itoa(i)), Type: &orCreate}})
		pv.Spec.NodeAffinity = &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
			MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{"node1"}}},
		}}}}
		pvs = append(pvs, pv.Name)
		createPV(t, client, pv)
	}
	stop := instantDeleter(t, class)
	cleanup := func() {
		stop()
		deletePVs(client, pvs)
		_ = os.RemoveAll(filepath.Join(basePath, "bench-static", class))
	}
	t.Cleanup(cleanup)
	return class, cleanup
}

// statefulSetRun runs a StatefulSet of n replicas (Parallel) with a volume of class each on
// node1, and returns the seconds until every pod ran; then it scales the StatefulSet to 0 and
// deletes its claims, and returns the seconds from there until every PV is gone.
func statefulSetRun(t *testing.T, n int, class string) (running, deleted float64) {
	ns := namespace(t)
	sts := parallelStatefulSet(ns, "bench", n, &class)
	sts.Spec.Template.Spec.NodeSelector = map[string]string{v1.LabelHostname: "node1"}
	start := time.Now()
	if _, err := client.AppsV1().StatefulSets(ns).Create(context.Background(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 10*time.Minute, fmt.Sprintf("%d replicas running (%s)", n, class), func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
		if err != nil {
			return false, nil
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == v1.PodRunning {
				running++
			}
		}
		return running == n, nil
	})
	running = time.Since(start).Seconds()

	// What a user does: scale to 0 and delete the claims. The claims go once their pods have.
	start = time.Now()
	scale := []byte(`{"spec":{"replicas":0}}`)
	if _, err := client.AppsV1().StatefulSets(ns).Patch(context.Background(), "bench", types.MergePatchType, scale, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("data-bench-%d", i))
	}
	deleteClaims(t, client, ns, names)
	// When the last PV left Bound tells the binder's share of a deletion from dirpv's.
	var released, lastSeen time.Duration
	var last []string // the PVs still there at the last poll that found any: the tail's, for the log
	pollFor(t, 10*time.Minute, "the claims' PVs gone", func(ctx context.Context) (bool, error) {
		pvs, err := pvsWhere(ctx, client, claimedIn(ns))
		if err != nil {
			return false, nil
		}
		if released == 0 && !slices.ContainsFunc(pvs, func(pv v1.PersistentVolume) bool { return pv.Status.Phase == v1.VolumeBound }) {
			released = time.Since(start)
		}
		if len(pvs) > 0 {
			lastSeen, last = time.Since(start), nil
			for _, pv := range pvs {
				last = append(last, pv.Name)
			}
		}
		return len(pvs) == 0, nil
	})
	t.Logf("%s: the last of %d PVs left Bound after %.1f s; the last to go (%s) was there at %.1f s",
		class, n, released.Seconds(), strings.Join(last, " "), lastSeen.Seconds())
	return running, time.Since(start).Seconds()
}

func staticClass(t *testing.T, name string, mode storagev1.VolumeBindingMode) string {
	return storageClass(t, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &mode})
}

func createPV(t *testing.T, c kubernetes.Interface, pv *v1.PersistentVolume) {
	if _, err := c.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// deletePVs deletes PVs made by hand, 20 at a time (a cleanup: errors are of no use).
func deletePVs(c kubernetes.Interface, names []string) {
	_ = atOnce(len(names), func(i int) error {
		return c.CoreV1().PersistentVolumes().Delete(context.Background(), names[i], metav1.DeleteOptions{})
	})
}

// use is a process's resource use so far.
type use struct {
	peakRSSKiB, rssKiB int64
	cpu                time.Duration
}

// processUse reads the leader's dirpv process on this machine (every node's processes are this
// machine's): its peak and current RSS (VmHWM, VmRSS) and the CPU time it used (utime + stime).
func processUse(t *testing.T, pod *v1.Pod) use {
	pids := dirpvProcesses(pod.UID)
	if len(pids) != 1 {
		t.Fatalf("dirpv processes of %s on this machine: %v", pod.Name, pids)
	}
	var u use
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			u.peakRSSKiB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			u.rssKiB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // fields 14 and 15 of stat, after "pid (comm)"
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u.cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	return u
}

// apiRequests is the total of dirpv_kube_api_requests_total on the replica at ip.
func apiRequests(t *testing.T, ip string) float64 {
	resp, err := http.Get("http://" + ip + ":8080/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "dirpv_kube_api_requests_total{") {
			v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			total += v
		}
	}
	return total
}

// memoryRun fills the cluster with n dirpv nfs PVs, each bound to a claim of its own as dirpv and
// kube-controller-manager leave them (the claim names its volume, the PV its claim; policy Retain,
// so that nothing is reclaimed when they go), and returns the leader's resident memory (KiB) once
// it has taken them in: when its RSS has settled (less than 1 MiB apart over three polls 5 s
// apart). Then it deletes them, unless the cluster is torn down next.
func memoryRun(t *testing.T, bc kubernetes.Interface, lead *v1.Pod, n int) int64 {
	ns := namespace(t)
	prefix := "e2e-mem-" + ns
	pvName := func(i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }
	class := faultClassNFS
	err := atOnce(n, func(i int) error {
		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c-%05d", i), Namespace: ns},
			Spec: v1.PersistentVolumeClaimSpec{
				StorageClassName: &class,
				VolumeName:       pvName(i),
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		pvc, err := bc.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), pvc, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		path := filepath.Join("fault", ns, pvc.Name)
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName(i), Annotations: map[string]string{
				"pv.kubernetes.io/provisioned-by": "dirpv.io/provisioner",
				"dirpv.io/backend":                "nfs", "dirpv.io/path": path, "dirpv.io/on-delete": "delete",
				"dirpv.io/server": nfsServer, "dirpv.io/share": exportDir,
			},
				// As dirpv makes a PV of policy Retain (else it would add this itself, 10,000 times).
				Finalizers: []string{backend.FinalizerReclaim},
			},
			Spec: v1.PersistentVolumeSpec{
				StorageClassName:              class,
				PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
				AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: pvc.Name, UID: pvc.UID},
				PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: nfsServer, Path: filepath.Join(exportDir, path)}},
				MountOptions:                  []string{"nfsvers=4.1"},
			},
		}
		_, err = bc.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("making %d PVs and claims: %v", n, err)
	}
	defer func() {
		if os.Getenv("DIRPV_BENCH_DISPOSABLE") != "" {
			return // hack/bench.sh tears the cluster down
		}
		// Without their protection finalizers, which kube-controller-manager would take off one by
		// one at its own pace.
		_ = atOnce(n, func(i int) error {
			name := fmt.Sprintf("c-%05d", i)
			_, _ = bc.CoreV1().PersistentVolumeClaims(ns).Patch(context.Background(), name, types.MergePatchType, dropFinalizers, metav1.PatchOptions{})
			_ = bc.CoreV1().PersistentVolumeClaims(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
			_, _ = bc.CoreV1().PersistentVolumes().Patch(context.Background(), pvName(i), types.MergePatchType, dropFinalizers, metav1.PatchOptions{})
			return bc.CoreV1().PersistentVolumes().Delete(context.Background(), pvName(i), metav1.DeleteOptions{})
		})
	}()
	var last []int64
	err = wait.PollUntilContextTimeout(context.Background(), 5*time.Second, 10*time.Minute, true, func(context.Context) (bool, error) {
		last = append(last, processUse(t, lead).rssKiB)
		if len(last) < 3 {
			return false, nil
		}
		w := last[len(last)-3:]
		return slices.Max(w)-slices.Min(w) < 1024, nil
	})
	if err != nil {
		t.Fatalf("the leader's RSS did not settle: %v KiB", last)
	}
	return last[len(last)-1]
}
