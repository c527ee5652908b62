//go:build e2e

package e2e

import (
	"bufio"
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
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
)

// benchClaims is the size of each nfs burst; benchReplicas the sizes of the hostPath StatefulSets.
const benchClaims = 200

var benchReplicas = []int{50, 100}

// benchRow is one line of the table: dirpv's time against the cluster's ceiling for the same
// work, the same work done by kube-controller-manager and the kubelet on PVs made beforehand.
type benchRow struct {
	Run     string  `json:"run"`
	Dirpv   float64 `json:"dirpvSeconds"`
	Ceiling float64 `json:"ceilingSeconds,omitempty"`
	// Ratio is Dirpv/Ceiling, or for the direct rows Dirpv/(the mount row's Dirpv).
	Ratio float64 `json:"ratio"`
	Of    string  `json:"ratioOf"`
}

// TestBench is what `make bench` measures (hack/bench.sh sets DIRPV_BENCH to the JSON file it
// writes); the e2e suite skips it. Every figure is from this one run, and the table gives
// ratios, which compare across machines:
//   - nfs: 200 claims of one class at once until all are Bound, and their deletion until every
//     PV and directory is gone, with access: mount and access: direct, against the ceiling: the
//     same claims bound to 200 PVs made beforehand (no provisioner at all), and deleted until
//     those PVs are Released;
//   - hostPath: a StatefulSet of 50 and of 100 replicas (Parallel) until every pod runs, against
//     the same StatefulSet over node-pinned PVs made beforehand.
//
// It also reports claim-to-Bound latencies (p50, p99, from the burst's start), the leader's peak
// RSS and CPU seconds over the run, and the API requests it made per volume.
func TestBench(t *testing.T) {
	out := os.Getenv("DIRPV_BENCH")
	if out == "" {
		t.Skip("run by make bench")
	}
	install(t, "install")
	bc := ownClient(t, 200, 400)
	lead := leaderPod(t)
	requestsBefore := apiRequests(t, lead.Status.PodIP)
	volumes := 0
	var rows []benchRow
	latency := map[string][2]float64{}

	staticBind, staticRelease := staticNFSBurst(t, bc)
	var mountBind float64
	var mountDelete float64
	for _, r := range []struct{ access, class string }{{"mount", faultClassNFS}, {"direct", faultClassDirect}} {
		bind, del, p50, p99 := nfsBurst(t, bc, r.class)
		volumes += benchClaims
		latency[r.access] = [2]float64{p50, p99}
		rows = append(rows,
			benchRow{Run: fmt.Sprintf("nfs %s, %d claims at once -> all Bound", r.access, benchClaims), Dirpv: bind, Ceiling: staticBind, Ratio: bind / staticBind, Of: "ceiling"},
			benchRow{Run: fmt.Sprintf("nfs %s, %d claims deleted -> all PVs and directories gone", r.access, benchClaims), Dirpv: del, Ceiling: staticRelease, Ratio: del / staticRelease, Of: "ceiling"})
		if r.access == "mount" {
			mountBind, mountDelete = bind, del
		} else {
			rows = append(rows,
				benchRow{Run: "nfs direct/mount, all Bound", Dirpv: bind, Ratio: bind / mountBind, Of: "mount"},
				benchRow{Run: "nfs direct/mount, deleted", Dirpv: del, Ratio: del / mountDelete, Of: "mount"})
		}
	}
	for _, n := range benchReplicas {
		ceiling := statefulSetRun(t, n, staticHostPathClass(t, n))
		took := statefulSetRun(t, n, "dirpv-hostpath")
		volumes += n
		rows = append(rows, benchRow{Run: fmt.Sprintf("hostPath, StatefulSet of %d (Parallel) -> all Running", n), Dirpv: took, Ceiling: ceiling, Ratio: took / ceiling, Of: "ceiling"})
	}

	use := processUse(t, lead)
	perVolume := (apiRequests(t, lead.Status.PodIP) - requestsBefore) / float64(volumes)
	version, _ := client.Discovery().ServerVersion()
	var b strings.Builder
	fmt.Fprintf(&b, "%d cores, Kubernetes %s, one run\n", runtime.NumCPU(), version.GitVersion)
	fmt.Fprintf(&b, "| run | ratio | dirpv | the cluster's ceiling |\n|---|---|---|---|\n")
	for _, r := range rows {
		ceiling := "(of mount)"
		if r.Ceiling > 0 {
			ceiling = fmt.Sprintf("%.1f s", r.Ceiling)
		}
		fmt.Fprintf(&b, "| %s | %.2fx | %.1f s | %s |\n", r.Run, r.Ratio, r.Dirpv, ceiling)
	}
	fmt.Fprintf(&b, "| claim to Bound, p50 / p99 (mount; direct) | | %.1f / %.1f s; %.1f / %.1f s | |\n",
		latency["mount"][0], latency["mount"][1], latency["direct"][0], latency["direct"][1])
	fmt.Fprintf(&b, "| leader: peak RSS, CPU | | %d MiB, %.0f s | |\n", use.peakRSSKiB/1024, use.cpu.Seconds())
	fmt.Fprintf(&b, "| API requests per volume | | %.1f | |\n", perVolume)
	fmt.Print(b.String())
	report := map[string]any{
		"cores": runtime.NumCPU(), "kubernetes": version.GitVersion, "rows": rows,
		"claimToBoundSeconds": map[string]any{"mount": latency["mount"], "direct": latency["direct"]},
		"leaderPeakRSSBytes":  use.peakRSSKiB * 1024, "leaderCPUSeconds": use.cpu.Seconds(),
		"apiRequestsPerVolume": perVolume,
	}
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nfsBurst creates benchClaims claims of class at once and returns the seconds until all were
// Bound and until, once deleted, every PV and directory was gone, and the claim-to-Bound
// latencies (p50, p99, from the burst's start, as seen by polling every 250 ms). The burst's
// invariants are checked as in the fault cases.
func nfsBurst(t *testing.T, bc kubernetes.Interface, class string) (bind, del, p50, p99 float64) {
	ns := namespace(t)
	subtree := filepath.Join("fault", ns)
	start := time.Now()
	claims := createClaims(t, bc, ns, class, "c", benchClaims)
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

// staticNFSBurst is the ceiling of nfsBurst: benchClaims PVs made beforehand (a class without a
// provisioner, policy Retain), the same claims at once until all are Bound, then deleted until
// the PVs are Released. Only kube-controller-manager works here.
func staticNFSBurst(t *testing.T, bc kubernetes.Interface) (bind, release float64) {
	ns := namespace(t)
	class := staticClass(t, "e2e-bench-nfs-"+ns, storagev1.VolumeBindingImmediate)
	var pvs []string
	for i := range benchClaims {
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%03d", class, i)},
			Spec: v1.PersistentVolumeSpec{
				StorageClassName:              class,
				PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
				AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: nfsServer, Path: exportDir + "/unused/" + strconv.Itoa(i)}},
			},
		}
		pvs = append(pvs, pv.Name)
		createPV(t, bc, pv)
	}
	t.Cleanup(func() { deletePVs(bc, pvs) })
	pollFor(t, time.Minute, "the static PVs Available", func(ctx context.Context) (bool, error) {
		list, err := pvsWhere(ctx, bc, func(pv *v1.PersistentVolume) bool { return pv.Spec.StorageClassName == class })
		return err == nil && countPhase(list, v1.VolumeAvailable) == benchClaims, nil
	})

	start := time.Now()
	claims := createClaims(t, bc, ns, class, "c", benchClaims)
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
	pollFor(t, settleTimeout, "static PVs Released", func(ctx context.Context) (bool, error) {
		list, err := pvsWhere(ctx, bc, func(pv *v1.PersistentVolume) bool { return pv.Spec.StorageClassName == class })
		return err == nil && countPhase(list, v1.VolumeReleased) == benchClaims, nil
	})
	return bind, time.Since(start).Seconds()
}

// staticHostPathClass makes n node-pinned hostPath PVs on node1 (directories made on first use)
// of a class without a provisioner, binding WaitForFirstConsumer, and returns the class.
func staticHostPathClass(t *testing.T, n int) string {
	class := staticClass(t, "e2e-bench-local-"+rand.String(5), storagev1.VolumeBindingWaitForFirstConsumer)
	orCreate := v1.HostPathDirectoryOrCreate
	var pvs []string
	for i := range n {
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%03d", class, i)},
			Spec: v1.PersistentVolumeSpec{
				StorageClassName:              class,
				PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
				AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{
					Path: filepath.Join(basePath, "bench-static", class, strconv.Itoa(i)), Type: &orCreate}},
				NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
					MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{"node1"}}},
				}}}},
			},
		}
		pvs = append(pvs, pv.Name)
		createPV(t, client, pv)
	}
	t.Cleanup(func() {
		deletePVs(client, pvs)
		_ = os.RemoveAll(filepath.Join(basePath, "bench-static", class))
	})
	return class
}

// statefulSetRun runs a StatefulSet of n replicas (Parallel) with a volume of class each on
// node1, and returns the seconds until every pod ran; then it deletes the StatefulSet and its
// claims.
func statefulSetRun(t *testing.T, n int, class string) float64 {
	ns := namespace(t)
	replicas := int32(n)
	labels := map[string]string{"app": "bench"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					NodeSelector:                  map[string]string{v1.LabelHostname: "node1"},
					TerminationGracePeriodSeconds: ptr(int64(0)),
					Containers: []v1.Container{{Name: "app", Image: busybox, ImagePullPolicy: v1.PullNever,
						Command: []string{"sleep", "3600"}, VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
				},
			},
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: v1.PersistentVolumeClaimSpec{
					StorageClassName: &class,
					AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
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
	took := time.Since(start).Seconds()

	if err := client.AppsV1().StatefulSets(ns).Delete(context.Background(), "bench", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Minute, "the replicas gone", func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			_ = client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
		}
		return len(pods.Items) == 0, nil
	})
	pvcs, err := claimsOf(context.Background(), client, ns)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range pvcs {
		names = append(names, name)
	}
	deleteClaims(t, client, ns, names)
	pollFor(t, 5*time.Minute, "the claims' dirpv PVs gone", func(ctx context.Context) (bool, error) {
		pvs, err := pvsWhere(ctx, client, func(pv *v1.PersistentVolume) bool {
			return claimedIn(ns)(pv) && pv.Spec.StorageClassName == "dirpv-hostpath"
		})
		return err == nil && len(pvs) == 0, nil
	})
	return took
}

func staticClass(t *testing.T, name string, mode storagev1.VolumeBindingMode) string {
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &mode}
	if _, err := client.StorageV1().StorageClasses().Create(context.Background(), sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
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
	peakRSSKiB int64
	cpu        time.Duration
}

// processUse reads the leader's dirpv process on this machine (node1): its peak RSS (VmHWM) and
// the CPU time it used (utime + stime).
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
