//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	watchtools "k8s.io/client-go/tools/watch"
)

// leaderKiller SIGKILLs dirpv's leader process again and again: a random 0.5-3 s after each new
// holder takes the Lease, until it has killed `want` times. The kubelet restarts the container
// and the standby takes over once the Lease expires. It runs until stopped, to see the last
// failover and count Lease changes it did not cause.
type leaderKiller struct {
	t      *testing.T
	c      kubernetes.Interface
	want   int
	cancel context.CancelFunc
	done   chan struct{}
	reach  chan struct{} // closed at the want-th kill

	// progress describes the work under way, and whether it is done.
	progress func(context.Context) (string, bool)

	mu         sync.Mutex
	kills      []leaderKill
	unforced   int // Lease changes not caused by a kill (a leader that stepped down by itself)
	duringWork int // kills while the work was not done yet
	restarts   sync.WaitGroup
}

type leaderKill struct {
	pod      string
	pid      int
	after    time.Duration // since the killed replica took the Lease (as seen by the poller)
	failover time.Duration // until another holder took the Lease
	restart  time.Duration // until the container's new dirpv process existed
}

func killLeaders(t *testing.T, want int, progress func(context.Context) (string, bool)) *leaderKiller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &leaderKiller{t: t, c: ownClient(t, 50, 100), want: want, progress: progress,
		cancel: cancel, done: make(chan struct{}), reach: make(chan struct{})}
	go k.run(ctx)
	t.Cleanup(k.stop)
	return k
}

func (k *leaderKiller) run(ctx context.Context) {
	defer close(k.done)
	killed := map[string]time.Time{}
	var prev, target string // last holder seen; holder to kill
	var since time.Time
	var delay time.Duration
	for ctx.Err() == nil {
		lease, err := k.c.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err == nil && lease.Spec.HolderIdentity != nil {
			holder := *lease.Spec.HolderIdentity
			if holder != prev {
				k.mu.Lock()
				if at, ok := killed[prev]; ok && len(k.kills) > 0 && k.kills[len(k.kills)-1].failover == 0 {
					k.kills[len(k.kills)-1].failover = time.Since(at)
				} else if prev != "" && !ok {
					k.unforced++
					k.t.Logf("leader kills: Lease went from %q to %q without a kill", prev, holder)
				}
				k.mu.Unlock()
				prev, target, since = holder, "", time.Now()
				if holder != "" && k.count() < k.want {
					target, delay = holder, 500*time.Millisecond+rand.N(2500*time.Millisecond)
				}
			}
			if target != "" && time.Since(since) >= delay {
				if err := k.kill(ctx, target, time.Since(since)); err != nil {
					k.t.Logf("leader kills: %v (retrying)", err)
				} else {
					killed[target] = time.Now()
					target = ""
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (k *leaderKiller) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.kills)
}

// kill SIGKILLs the dirpv process of the holder's pod, found through its cgroup on this node.
func (k *leaderKiller) kill(ctx context.Context, holder string, after time.Duration) error {
	podName := holderPod(holder)
	pod, err := k.c.CoreV1().Pods(dirpvNamespace).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pids := dirpvProcesses(pod.UID)
	if len(pids) != 1 {
		return fmt.Errorf("pod %s (%s): dirpv processes %v, want one", podName, pod.UID, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %d: %w", pids[0], err)
	}
	killedAt := time.Now()
	k.mu.Lock()
	k.kills = append(k.kills, leaderKill{pod: podName, pid: pids[0], after: after})
	n := len(k.kills)
	if n == k.want {
		close(k.reach)
	}
	k.mu.Unlock()
	work, done := k.progress(ctx)
	if !done {
		k.mu.Lock()
		k.duringWork++
		k.mu.Unlock()
	}
	k.t.Logf("leader kills: #%d: SIGKILL pid %d of %s, %.1fs after it took the Lease (%s)", n, pids[0], podName, after.Seconds(), work)
	// The kubelet restarts the container: measure how soon a new dirpv process runs there.
	k.restarts.Go(func() {
		_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Minute, false, func(context.Context) (bool, error) {
			for _, p := range dirpvProcesses(pod.UID) {
				if p != pids[0] {
					k.mu.Lock()
					k.kills[n-1].restart = time.Since(killedAt)
					k.mu.Unlock()
					return true, nil
				}
			}
			return false, nil
		})
	})
	return nil
}

// waitKills waits until the killer has killed the leader `want` times.
func (k *leaderKiller) waitKills(d time.Duration) {
	k.t.Helper()
	select {
	case <-k.reach:
	case <-time.After(d):
		k.t.Fatalf("only %d of %d leader kills after %v", k.count(), k.want, d)
	}
}

// stop ends the killer (idempotent).
func (k *leaderKiller) stop() {
	k.cancel()
	<-k.done
	k.restarts.Wait()
}

// figures stops the killer and returns its figures for the reliability line.
func (k *leaderKiller) figures() []any {
	k.stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	var failover, restart time.Duration
	for _, kl := range k.kills {
		failover, restart = max(failover, kl.failover), max(restart, kl.restart)
	}
	return []any{"leader-kills", len(k.kills), "kills-during-work", k.duringWork, "unforced-lease-changes", k.unforced,
		"failover-max", failover, "restart-max", restart}
}

// dirpvProcesses returns the provisioner processes (not helpers) of the pod with uid on this
// node: the kubelet's cgroupfs driver puts a pod's containers in /kubepods/<qos>/pod<uid>/<id>
// (the systemd driver would use ...-pod<uid with underscores>.slice).
func dirpvProcesses(uid types.UID) []int {
	cgfs, cgsd := "/pod"+string(uid)+"/", "-pod"+strings.ReplaceAll(string(uid), "-", "_")+".slice"
	des, _ := os.ReadDir("/proc")
	var pids []int
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil || !(strings.Contains(string(cg), cgfs) || strings.Contains(string(cg), cgsd)) {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		if err != nil || args[0] != "/dirpv" || (len(args) > 1 && args[1] == "helper") || zombie(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// testLeaderKills: 400 claims (200 of a Delete class, 200 of a recycling class) created at once,
// then all released at once (200 deletions, 200 recycles), each burst while the leader is
// SIGKILLed 10 times at random moments.
func testLeaderKills(t *testing.T) {
	faultsOverlay(t)
	bc := ownClient(t, 200, 400)
	ns := namespace(t)
	t.Cleanup(func() {
		// Whatever happened, leave no recycling PV of the class in the pool (it would be bound
		// to the class's next claim, in the next run on this cluster): deleted, each is reclaimed
		// by onDelete as soon as its claim (going with the namespace) is gone.
		pvs, _ := pvsWhere(context.Background(), client, func(pv *v1.PersistentVolume) bool { return pv.Spec.StorageClassName == faultClassRecycle })
		for _, pv := range pvs {
			_ = client.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		}
	})
	del := burst{class: faultClassNFS, subtree: filepath.Join("fault", ns), prefix: "d"}
	rec := burst{class: faultClassRecycle, subtree: filepath.Join("fault-recycle", ns), prefix: "r"}
	total := 2 * burstSize

	// 1. Creation burst.
	before := snapshot(t, exportDir)
	start := time.Now()
	k := killLeaders(t, leaderKills, func(ctx context.Context) (string, bool) {
		pvs, err := pvsWhere(ctx, bc, claimedIn(ns))
		if err != nil {
			return err.Error(), false
		}
		return fmt.Sprintf("%d/%d PVs made", len(pvs), total), len(pvs) == total
	})
	for _, b := range []*burst{&del, &rec} {
		b.claims = createClaims(t, bc, ns, b.class, b.prefix, burstSize)
	}
	k.waitKills(settleTimeout)
	var sum audit
	duplicates := 0
	for _, b := range []*burst{&del, &rec} {
		var a *audit
		var dups int
		a, dups, b.pvs = provisioned(t, bc, ns, b.class, b.subtree, b.claims)
		sum.add(a)
		duplicates += dups
	}
	took := time.Since(start)
	kf := k.figures()
	added := strays(before, snapshot(t, exportDir), within(del.subtree, rec.subtree))
	if len(added) > 0 {
		t.Errorf("created outside %s and %s: %v", del.subtree, rec.subtree, added)
	}
	reliability("create-burst", append([]any{"claims", total, "classes", 2}, append(kf,
		"bound", total, "duplicates", duplicates, "missing-dirs", sum.missingDirs, "missing-markers", sum.missingMarkers,
		"wrong-markers", sum.badMarkers, "orphans", sum.orphans+len(added), "leftovers", sum.leftovers, "stale-temp-markers", sum.staleTemps, "duration", took)...)...)
	if t.Failed() {
		return
	}
	provisionerReady(t)

	// 2. Release burst: every claim deleted at once. The Delete class's volumes are removed; the
	// recycling class's, each holding data, are scrubbed and made Available again.
	names := map[string]bool{}
	dirs := map[string]string{}
	oldClaim := map[string]string{}
	for i := range rec.pvs {
		pv := &rec.pvs[i]
		names[pv.Name] = true
		dirs[pv.Name] = onExport(t, pv)
		oldClaim[pv.Name] = string(pv.Spec.ClaimRef.UID)
		// Data a tenant leaves behind: a file and a non-empty subdirectory.
		if err := os.MkdirAll(filepath.Join(dirs[pv.Name], "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"data", "sub/nested"} {
			if err := os.WriteFile(filepath.Join(dirs[pv.Name], f), []byte("old tenant's data\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	deleting := func(pv *v1.PersistentVolume) bool { return claimedIn(ns)(pv) && pv.Spec.StorageClassName == del.class }
	recycledPV := func(pv *v1.PersistentVolume) bool { return names[pv.Name] && pv.Status.Phase == v1.VolumeAvailable }
	before = snapshot(t, exportDir)
	offered := watchAvailable(t, bc, dirs)
	start = time.Now()
	k = killLeaders(t, leaderKills, func(ctx context.Context) (string, bool) {
		pvs, err := pvsWhere(ctx, bc, func(pv *v1.PersistentVolume) bool { return deleting(pv) || recycledPV(pv) })
		if err != nil {
			return err.Error(), false
		}
		left, available := 0, 0
		for i := range pvs {
			if deleting(&pvs[i]) {
				left++
			} else {
				available++
			}
		}
		return fmt.Sprintf("%d/%d PVs left to delete, %d/%d recycled", left, burstSize, available, burstSize), left == 0 && available == burstSize
	})
	all := append(slices.Clone(del.claims), rec.claims...)
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	deleteClaims(t, bc, ns, all)
	k.waitKills(settleTimeout)

	a := deleted(t, bc, del.subtree, deleting)
	deleteTook := time.Since(start)
	var current []v1.PersistentVolume
	settle(t, "recycled PVs Available", settleTimeout, func(ctx context.Context) (string, bool, error) {
		var err error
		if current, err = pvsWhere(ctx, bc, func(pv *v1.PersistentVolume) bool {
			return names[pv.Name] || (claimedIn(ns)(pv) && pv.Spec.StorageClassName == rec.class)
		}); err != nil {
			return "", false, err
		}
		phases := map[v1.PersistentVolumePhase]int{}
		for _, pv := range current {
			phases[pv.Status.Phase]++
		}
		return fmt.Sprintf("%d PVs: %v", len(current), phases), len(current) == len(names) && phases[v1.VolumeAvailable] == len(names), nil
	})
	recycleTook := time.Since(start)
	kf = k.figures()
	withData := offered()
	newPVs := 0
	for _, pv := range current {
		if !names[pv.Name] {
			newPVs++
			t.Errorf("new PV %s", pv.Name)
		}
	}
	ra := auditVolumes(t, filepath.Join(exportDir, rec.subtree), current, true, func(pv *v1.PersistentVolume, m *markerFile) error {
		if m.Recycled != oldClaim[pv.Name] {
			return fmt.Errorf("recycled %q, want the released claim %s", m.Recycled, oldClaim[pv.Name])
		}
		return nil
	})
	reportAudit(t, ra)
	after := snapshot(t, exportDir)
	removed := strays(after, before, func(p string) bool {
		// Only these may go: the deleted volumes and their markers (fault/<ns>/d-NNN and
		// fault/<ns>/.d-NNN.dirpv) and the recycled volumes' contents (fault-recycle/<ns>/r-NNN/...;
		// their markers are replaced, not removed).
		if rel, ok := strings.CutPrefix(p, del.subtree+"/"); ok {
			return strings.HasPrefix(strings.TrimPrefix(rel, "."), del.prefix+"-")
		}
		rel, ok := strings.CutPrefix(p, rec.subtree+"/")
		return ok && strings.HasPrefix(rel, rec.prefix+"-") && strings.Contains(rel, "/")
	})
	if len(removed) > 0 {
		t.Errorf("removed besides the released volumes: %v", removed)
	}
	if added := strays(before, after, func(string) bool { return false }); len(added) > 0 {
		t.Errorf("created during the release burst: %v", added)
	}
	concurrent := fmt.Sprintf("%s-%d", "recycles", burstSize)
	reliability("delete-burst", append([]any{"claims", burstSize, "concurrent", concurrent}, append(kf,
		"pvs-left", 0, "dirs-or-markers-left", a.orphans, "leftovers", a.leftovers, "stale-temp-markers", a.staleTemps, "others-removed", len(removed), "duration", deleteTook)...)...)
	reliability("recycle-burst", append([]any{"claims", burstSize, "concurrent", "deletions-" + strconv.Itoa(burstSize)}, append(kf,
		"available", countPhase(current, v1.VolumeAvailable), "offered-with-data", len(withData), "not-empty", ra.notEmpty,
		"wrong-recycled", ra.badMarkers, "missing-dirs", ra.missingDirs, "missing-markers", ra.missingMarkers,
		"orphans", ra.orphans, "leftovers", ra.leftovers, "stale-temp-markers", ra.staleTemps, "new-pvs", newPVs, "others-removed", len(removed), "duration", recycleTook)...)...)
	if t.Failed() {
		return
	}

	// Shrink the pool: deleted recycling PVs are reclaimed by their onDelete (delete).
	for name := range names {
		if err := bc.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deleted(t, bc, rec.subtree, func(pv *v1.PersistentVolume) bool { return names[pv.Name] })
}

// burst is one class's share of a burst of claims.
type burst struct {
	class, subtree, prefix string
	claims                 []string
	pvs                    []v1.PersistentVolume
}

// pvWatcher adapts a PV watch function for a RetryWatcher.
type pvWatcher struct{ c kubernetes.Interface }

func (w pvWatcher) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return w.c.CoreV1().PersistentVolumes().Watch(ctx, o)
}

// watchAvailable checks, each time one of the PVs in dirs is seen unbound (claimRef cleared) or
// Available, that its directory is empty at that moment: a recycled volume must never be offered
// with data in it. It returns the names of the PVs seen offered with data, when stopped.
func watchAvailable(t *testing.T, c kubernetes.Interface, dirs map[string]string) (stop func() []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	list, err := c.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, pvWatcher{c})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	bad := map[string]bool{}
	done := make(chan struct{})
	var once sync.Once
	halt := func() {
		once.Do(func() {
			cancel()
			rw.Stop()
			<-done
		})
	}
	t.Cleanup(halt)
	go func() {
		defer close(done)
		for e := range rw.ResultChan() {
			pv, ok := e.Object.(*v1.PersistentVolume)
			if !ok || dirs[pv.Name] == "" || (pv.Spec.ClaimRef != nil && pv.Status.Phase != v1.VolumeAvailable) {
				continue
			}
			if des, err := os.ReadDir(dirs[pv.Name]); err != nil || len(des) > 0 {
				mu.Lock()
				if !bad[pv.Name] {
					t.Errorf("PV %s offered (phase %s, claimRef %v) while %s holds %d entries (%v)", pv.Name, pv.Status.Phase, pv.Spec.ClaimRef, dirs[pv.Name], len(des), err)
				}
				bad[pv.Name] = true
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		halt()
		mu.Lock()
		defer mu.Unlock()
		return slices.Sorted(func(yield func(string) bool) {
			for n := range bad {
				if !yield(n) {
					return
				}
			}
		})
	}
}
