//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The fault cases of the hardening issue: leader crashes during bursts of creations, deletions and
// recycles, the apiserver gone for 30 s, and a full disk. Each checks the invariants that matter
// to users once the cluster has settled (every claim bound to exactly one PV, every PV's directory
// there with its marker, no directory nobody owns, nothing else touched) and prints its figures in
// one line starting with "reliability:".
const (
	faultClassNFS     = "e2e-fault-nfs"         // pathPattern fault/<namespace>/<claim>
	faultClassRecycle = "e2e-fault-recycle-nfs" // pathPattern fault-recycle/<namespace>/<claim>
	faultClassFull    = "e2e-fault-full"        // hostPath, basePath fullRoot
	fullRoot          = basePath + "/full"
	burstSize         = 200
	leaderKills       = 10
	// settleTimeout bounds every wait for a burst to settle on this 2-core machine.
	settleTimeout = 8 * time.Minute
)

// testFaults runs the fault cases. Those about the leader run with the short election timings
// of the faults overlay (faultsOverlay), and the install overlay is restored afterwards.
func testFaults(t *testing.T) {
	t.Cleanup(func() {
		if onFaultsOverlay {
			install(t, "install")
			onFaultsOverlay = false
		}
	})
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"DiskFull", testDiskFull},
		{"APIServerDown", testAPIServerDown},
		{"NFSServerStopped", testNFSServerStopped},
		{"LeaderKills", testLeaderKills},
		{"LeaderPaused", testLeaderPaused},
		{"CutOffLeader", testCutOffLeader},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// onFaultsOverlay: dirpv runs from testdata/faults.
var onFaultsOverlay bool

// faultsOverlay switches dirpv to the faults overlay (once for all the cases that need it) and
// waits until both replicas are Ready.
func faultsOverlay(t *testing.T) {
	t.Helper()
	if !onFaultsOverlay {
		install(t, "faults")
		onFaultsOverlay = true
	}
	provisionerReady(t)
}

// clusterDir is the local cluster's state directory (hack/lib.sh's $WORK).
func clusterDir() string {
	if d := os.Getenv("DIRPV_CLUSTER_DIR"); d != "" {
		return d
	}
	return "/tmp/dirpv-cluster"
}

// ownClient returns a client with a rate limit of its own, so that a burst of requests and the
// leader killer's polling do not queue behind each other or behind the suite's client.
func ownClient(t *testing.T, qps float32, burst int) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = qps, burst
	return kubernetes.NewForConfigOrDie(cfg)
}

// atOnce runs f for 0 to n-1, 20 at a time, and returns the first error.
func atOnce(n int, f func(i int) error) error {
	errs := make(chan error, n)
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- f(i)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// createClaims creates n claims of class at once (20 at a time), named PREFIX-000, PREFIX-001, ...
func createClaims(t *testing.T, c kubernetes.Interface, ns, class, prefix string, n int) []string {
	t.Helper()
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	err := atOnce(n, func(i int) error {
		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Namespace: ns},
			Spec: v1.PersistentVolumeClaimSpec{
				StorageClassName: &class,
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		_, err := c.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), pvc, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("creating claims: %v", err)
	}
	return names
}

// midBurst creates n claims of class in ns at once (named c-000, c-001, ...) and waits until the
// first 10 have PVs: a fault injected then hits a burst in full swing, some volumes made, most
// not yet. It returns the claims and how many PVs there were.
func midBurst(t *testing.T, c kubernetes.Interface, ns, class string, n int) ([]string, int) {
	t.Helper()
	claims := createClaims(t, c, ns, class, "c", n)
	made := 0
	pollFor(t, time.Minute, "the first PVs of the burst", func(ctx context.Context) (bool, error) {
		pvs, err := pvsWhere(ctx, c, claimedIn(ns))
		made = len(pvs)
		return err == nil && made >= 10, nil
	})
	return claims, made
}

// deleteClaims deletes every claim of ns at once (20 at a time).
func deleteClaims(t *testing.T, c kubernetes.Interface, ns string, names []string) {
	t.Helper()
	err := atOnce(len(names), func(i int) error {
		err := c.CoreV1().PersistentVolumeClaims(ns).Delete(context.Background(), names[i], metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("deleting claims: %v", err)
	}
}

// settle polls state until it reports done with the same summary for `stable` polls in a row
// (1 s apart), and returns the summary. A burst is over when its outcome stops changing, not
// merely when it first looks complete.
func settle(t *testing.T, what string, d time.Duration, state func(ctx context.Context) (summary string, done bool, err error)) string {
	t.Helper()
	const stable = 5
	last, same := "", 0
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, d, true, func(ctx context.Context) (bool, error) {
		s, done, err := state(ctx)
		if err != nil {
			t.Logf("%s: %v (retrying)", what, err)
			same = 0
			return false, nil
		}
		if s != last {
			t.Logf("%s: %s", what, s)
			last, same = s, 0
		}
		if !done {
			same = 0
			return false, nil
		}
		same++
		return same >= stable, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s (last: %s): %v", what, last, err)
	}
	return last
}

// claimsOf lists the claims of ns by name.
func claimsOf(ctx context.Context, c kubernetes.Interface, ns string) (map[string]v1.PersistentVolumeClaim, error) {
	list, err := c.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	m := map[string]v1.PersistentVolumeClaim{}
	for _, pvc := range list.Items {
		m[pvc.Name] = pvc
	}
	return m, nil
}

// pvsWhere lists the PVs that keep says are wanted.
func pvsWhere(ctx context.Context, c kubernetes.Interface, keep func(*v1.PersistentVolume) bool) ([]v1.PersistentVolume, error) {
	list, err := c.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var pvs []v1.PersistentVolume
	for _, pv := range list.Items {
		if keep(&pv) {
			pvs = append(pvs, pv)
		}
	}
	return pvs, nil
}

// claimedIn selects the PVs whose claimRef points into ns.
func claimedIn(ns string) func(*v1.PersistentVolume) bool {
	return func(pv *v1.PersistentVolume) bool { return pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == ns }
}

// markerFile is an ownership marker as volumefs writes it.
type markerFile struct {
	PV             string `json:"pv"`
	ClaimUID       string `json:"claimUID"`
	ClaimNamespace string `json:"claimNamespace"`
	ClaimName      string `json:"claimName"`
	Recycled       string `json:"recycled"`
}

func markerPath(dir string) string {
	return filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".dirpv")
}

func readMarkerFile(dir string) (*markerFile, error) {
	b, err := os.ReadFile(markerPath(dir))
	if err != nil {
		return nil, err
	}
	var m markerFile
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("marker %s: %w", markerPath(dir), err)
	}
	return &m, nil
}

// audit is what a listing of one class's subtree on the export says about its volumes.
type audit struct {
	volumes        int // PVs checked
	missingDirs    int // a PV's directory is not there
	missingMarkers int // a PV's directory has no marker
	badMarkers     int // the marker names another PV or claim, or the wrong scrubbed claim
	notEmpty       int // (recycled volumes) a directory that should be empty is not
	orphans        int // directories or markers in the subtree that no PV owns
	leftovers      int // temporary marker files (.*.dirpv.tmp-*), but for staleTemps
	// staleTemps are temporary marker files that a killed writer left: a complete marker for a
	// claim of the subtree's namespace that never got linked or renamed into place. The next
	// operation of that PV removes them, so none may be left once the burst has settled.
	staleTemps int
	problems   []string
}

func (a *audit) problem(counter *int, format string, args ...any) {
	*counter++
	if len(a.problems) < 20 {
		a.problems = append(a.problems, fmt.Sprintf(format, args...))
	}
}

func (a *audit) clean() bool {
	return a.missingDirs+a.missingMarkers+a.badMarkers+a.notEmpty+a.orphans+a.leftovers+a.staleTemps == 0
}

// auditVolumes checks pvs (all in the export subtree dir) against the subtree's listing. check, if
// set, checks each PV's marker further. With empty set, every PV's directory must hold nothing.
func auditVolumes(t *testing.T, dir string, pvs []v1.PersistentVolume, empty bool, check func(*v1.PersistentVolume, *markerFile) error) *audit {
	t.Helper()
	a := &audit{volumes: len(pvs)}
	owned := map[string]bool{}
	for i := range pvs {
		pv := &pvs[i]
		vdir := onExport(t, pv)
		if filepath.Dir(vdir) != dir {
			a.problem(&a.orphans, "PV %s: directory %s outside %s", pv.Name, vdir, dir)
			continue
		}
		owned[filepath.Base(vdir)] = true
		fi, err := os.Lstat(vdir)
		if err != nil || !fi.IsDir() {
			a.problem(&a.missingDirs, "PV %s: directory %s: %v", pv.Name, vdir, err)
		}
		m, err := readMarkerFile(vdir)
		switch {
		case err != nil:
			a.problem(&a.missingMarkers, "PV %s: %v", pv.Name, err)
		case m.PV != pv.Name:
			a.problem(&a.badMarkers, "PV %s: marker names PV %q", pv.Name, m.PV)
		case check != nil:
			if err := check(pv, m); err != nil {
				a.problem(&a.badMarkers, "PV %s: marker %+v: %v", pv.Name, *m, err)
			}
		}
		if empty && err == nil {
			if des, err := os.ReadDir(vdir); err != nil || len(des) != 0 {
				a.problem(&a.notEmpty, "PV %s: %s holds %d entries (%v)", pv.Name, vdir, len(des), err)
			}
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.Contains(name, ".dirpv.tmp-"):
			// A killed writer's: named for a volume of this subtree (whose volumes are named
			// after their claims) and empty (killed before its write) or a marker for that claim.
			p := filepath.Join(dir, name)
			volume := strings.TrimPrefix(name[:strings.Index(name, ".dirpv.tmp-")], ".")
			var m markerFile
			b, err := os.ReadFile(p)
			if err == nil && staleTempName.MatchString(name) && (len(b) == 0 ||
				json.Unmarshal(b, &m) == nil && m.ClaimNamespace == filepath.Base(dir) && m.ClaimName == volume) {
				a.problem(&a.staleTemps, "temporary marker file %s left by a killed writer (%d bytes: %s)", p, len(b), bytes.TrimSpace(b))
			} else {
				a.problem(&a.leftovers, "temporary file %s left", p)
			}
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".dirpv"):
			if !owned[strings.TrimSuffix(strings.TrimPrefix(name, "."), ".dirpv")] {
				a.problem(&a.orphans, "marker %s belongs to no PV", filepath.Join(dir, name))
			}
		case de.IsDir() && owned[name]:
		default:
			a.problem(&a.orphans, "%s (%v) belongs to no PV", filepath.Join(dir, name), de.Type())
		}
	}
	return a
}

// staleTempName is the name of volumefs's temporary marker files.
var staleTempName = regexp.MustCompile(`^\..+\.dirpv\.tmp-[0-9a-f]{8}$`)

// snapshot lists every path below root (relative), to find what a case added or removed
// outside the volumes it is about.
func snapshot(t *testing.T, root string) map[string]bool {
	t.Helper()
	paths := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			paths[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// strays returns the paths added to (or removed from) the export between two snapshots, leaving
// out those that allowed accepts.
func strays(from, to map[string]bool, allowed func(string) bool) []string {
	var out []string
	for p := range to {
		if !from[p] && !allowed(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// within accepts the paths in or below any of dirs (relative to the export), and their ancestors.
func within(dirs ...string) func(string) bool {
	return func(p string) bool {
		for _, d := range dirs {
			if p == d || strings.HasPrefix(p, d+"/") || strings.HasPrefix(d, p+"/") {
				return true
			}
		}
		return false
	}
}

// provisioned waits until the claims (of class, in ns) are Bound and the PVs of class claimed
// from ns stop changing, then checks the invariants of a provisioning burst: each claim bound to
// exactly one PV, which names it, whose directory exists in the class's subtree with the claim's
// marker, and nothing in the subtree that no PV owns. It returns the audit, the number of PVs
// per claim above one, and the PVs.
func provisioned(t *testing.T, c kubernetes.Interface, ns, class, subtree string, claims []string) (*audit, int, []v1.PersistentVolume) {
	t.Helper()
	var pvs []v1.PersistentVolume
	var pvcs map[string]v1.PersistentVolumeClaim
	settle(t, class+" claims of "+ns+" bound", settleTimeout, func(ctx context.Context) (string, bool, error) {
		var err error
		if pvcs, err = claimsOf(ctx, c, ns); err != nil {
			return "", false, err
		}
		if pvs, err = pvsWhere(ctx, c, func(pv *v1.PersistentVolume) bool {
			return claimedIn(ns)(pv) && pv.Spec.StorageClassName == class
		}); err != nil {
			return "", false, err
		}
		n := 0
		for _, name := range claims {
			if pvcs[name].Status.Phase == v1.ClaimBound {
				n++
			}
		}
		return fmt.Sprintf("%d/%d claims bound, %d PVs", n, len(claims), len(pvs)), n == len(claims) && len(pvs) == len(claims), nil
	})
	perClaim := map[types.UID][]string{}
	for _, pv := range pvs {
		perClaim[pv.Spec.ClaimRef.UID] = append(perClaim[pv.Spec.ClaimRef.UID], pv.Name)
	}
	duplicates := 0
	for uid, names := range perClaim {
		if len(names) > 1 {
			duplicates += len(names) - 1
			t.Errorf("claim UID %s has %d PVs: %v", uid, len(names), names)
		}
	}
	for _, name := range claims {
		pvc, ok := pvcs[name]
		if !ok {
			t.Errorf("claim %s/%s is gone", ns, name)
			continue
		}
		if got := perClaim[pvc.UID]; len(got) != 1 || got[0] != pvc.Spec.VolumeName {
			t.Errorf("claim %s/%s: bound to %q, PVs naming it: %v", ns, name, pvc.Spec.VolumeName, got)
		}
	}
	a := auditVolumes(t, filepath.Join(exportDir, subtree), pvs, false, func(pv *v1.PersistentVolume, m *markerFile) error {
		ref := pv.Spec.ClaimRef
		if m.ClaimUID != string(ref.UID) || m.ClaimNamespace != ref.Namespace || m.ClaimName != ref.Name {
			return fmt.Errorf("claim %s/%s %s", ref.Namespace, ref.Name, ref.UID)
		}
		return nil
	})
	reportAudit(t, a)
	return a, duplicates, pvs
}

func reportAudit(t *testing.T, a *audit) {
	t.Helper()
	msg := fmt.Sprintf("volumes on the export: %d missing directories, %d missing markers, %d wrong markers, %d not empty, %d orphans, %d leftovers, %d stale temporary markers:\n%s",
		a.missingDirs, a.missingMarkers, a.badMarkers, a.notEmpty, a.orphans, a.leftovers, a.staleTemps, strings.Join(a.problems, "\n"))
	if !a.clean() {
		t.Error(msg)
	}
}

// deleted waits until no PV that keep selects is left, then checks that the class's subtree is
// empty (no directory, marker or temporary file left).
func deleted(t *testing.T, c kubernetes.Interface, subtree string, keep func(*v1.PersistentVolume) bool) *audit {
	t.Helper()
	settle(t, "PVs of "+subtree+" deleted", settleTimeout, func(ctx context.Context) (string, bool, error) {
		pvs, err := pvsWhere(ctx, c, keep)
		if err != nil {
			return "", false, err
		}
		return fmt.Sprintf("%d PVs left", len(pvs)), len(pvs) == 0, nil
	})
	a := auditVolumes(t, filepath.Join(exportDir, subtree), nil, false, nil)
	reportAudit(t, a)
	return a
}

// zombie reports whether pid has exited (or is gone) and only waits to be reaped.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	return len(fields) == 0 || fields[0] == "Z" || fields[0] == "X"
}

// provisionerReady waits until both provisioner replicas run and are Ready again.
func provisionerReady(t *testing.T) {
	t.Helper()
	kubectl(t, "-n", dirpvNamespace, "rollout", "status", "deployment/dirpv", "--timeout=3m")
	pollFor(t, 3*time.Minute, "both provisioner pods Ready", func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(dirpvNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=provisioner"})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == v1.PodReady && c.Status == v1.ConditionTrue && p.DeletionTimestamp == nil {
					ready++
				}
			}
		}
		return ready == 2 && len(pods.Items) == 2, nil
	})
}

func (a *audit) add(b *audit) {
	a.volumes += b.volumes
	a.missingDirs += b.missingDirs
	a.missingMarkers += b.missingMarkers
	a.badMarkers += b.badMarkers
	a.notEmpty += b.notEmpty
	a.orphans += b.orphans
	a.leftovers += b.leftovers
	a.staleTemps += b.staleTemps
	a.problems = append(a.problems, b.problems...)
}

func countPVs(t *testing.T, c kubernetes.Interface, keep func(*v1.PersistentVolume) bool) int {
	t.Helper()
	pvs, err := pvsWhere(context.Background(), c, keep)
	if err != nil {
		t.Logf("listing PVs: %v", err)
		return -1
	}
	return len(pvs)
}

func countPhase(pvs []v1.PersistentVolume, phase v1.PersistentVolumePhase) int {
	n := 0
	for _, pv := range pvs {
		if pv.Status.Phase == phase {
			n++
		}
	}
	return n
}
