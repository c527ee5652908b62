//go:build e2e

package e2e

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"dirpv.io/dirpv/provisioner/nfs3/nfs3test"
)

// faultClassDirect is e2e-fault-nfs with access: direct (pathPattern fault/<namespace>/<claim>).
const faultClassDirect = "e2e-fault-nfs-direct"

// ganesha is the cluster's NFS server process (hack/nfs-server.sh records its PID).
type ganesha struct{ pid int }

func findGanesha(t *testing.T) *ganesha {
	t.Helper()
	return &ganesha{pid: nfs3test.ReadPID(t, filepath.Join(clusterDir(), "nfs"), "ganesha")}
}

// stop SIGSTOPs the server and waits until every one of its threads has stopped.
func (g *ganesha) stop(t *testing.T) { nfs3test.StopProcess(t, g.pid) }

func (g *ganesha) cont(t *testing.T) { nfs3test.ContinueProcess(t, g.pid) }

// readyz is what a replica's /readyz answers: its status code and body.
func readyz(ctx context.Context, ip string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":8080/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// testNFSServerStopped: the NFS server SIGSTOPped in the middle of a burst of access: direct
// claims. Its claims fail with events naming it, /readyz names it, hostPath claims go on; once it
// runs again, every claim is bound to exactly one PV, with no orphans.
func testNFSServerStopped(t *testing.T) {
	g := findGanesha(t)
	bc := ownClient(t, 200, 400)
	ns := namespace(t)
	subtree := filepath.Join("fault", ns)
	before := snapshot(t, exportDir)

	start := time.Now()
	claims, atStop := midBurst(t, bc, ns, faultClassDirect, 100)
	running := false
	t.Cleanup(func() {
		if !running { // never leave the cluster's NFS server stopped
			g.cont(t)
		}
	})
	g.stop(t)
	stopped := time.Now()
	t.Logf("NFS server stopped with %d of %d PVs made", atStop, len(claims))

	// hostPath claims do not wait for it.
	claim(t, ns, "hp", "dirpv-hostpath")
	pod(t, ns, "hp-app", "hp", onNode("node1"))
	bound(t, ns, "hp")
	hostPathBound := time.Since(stopped)

	// A claim still without a volume gets an event naming the server.
	var pending string
	pollFor(t, time.Minute, "a claim of the burst still pending", func(ctx context.Context) (bool, error) {
		pvcs, err := claimsOf(ctx, bc, ns)
		if err != nil {
			return false, nil
		}
		for _, name := range claims {
			if pvcs[name].Status.Phase == v1.ClaimPending {
				pending = name
				return true, nil
			}
		}
		return false, nil
	})
	msg := event(t, ns, pending, "ProvisioningFailed", "NFS server "+nfsServer)
	eventAfter := time.Since(stopped)
	t.Logf("claim %s: %s", pending, msg)

	// The leader's /readyz names it.
	lead := leaderPod(t)
	var body string
	pollFor(t, time.Minute, "/readyz of the leader naming the NFS server", func(ctx context.Context) (bool, error) {
		code, b, err := readyz(ctx, lead.Status.PodIP)
		body = b
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(b, "NFS server "+nfsServer+" has not answered"), nil
	})
	t.Logf("/readyz of %s while the server is stopped: %s", lead.Name, strings.TrimSpace(body))

	g.cont(t)
	running = true
	resumed := time.Now()
	a, duplicates, _ := provisioned(t, bc, ns, faultClassDirect, subtree, claims)
	recovered := time.Since(resumed)
	pollFor(t, 2*time.Minute, "/readyz of the leader ok again", func(ctx context.Context) (bool, error) {
		code, _, err := readyz(ctx, leaderPod(t).Status.PodIP)
		return err == nil && code == http.StatusOK, nil
	})
	if added := strays(before, snapshot(t, exportDir), within(subtree)); len(added) > 0 {
		t.Errorf("created outside %s: %v", subtree, added)
		a.orphans += len(added)
	}
	reliability("nfs-server-stopped", "claims", len(claims), "stopped", resumed.Sub(stopped), "pvs-at-stop", atStop,
		"hostpath-bound-while-stopped-after", hostPathBound, "event-after", eventAfter,
		"all-bound-after-resume", recovered, "bound", len(claims), "duplicates", duplicates,
		"missing-dirs", a.missingDirs, "missing-markers", a.missingMarkers, "wrong-markers", a.badMarkers,
		"orphans", a.orphans, "leftovers", a.leftovers, "stale-temp-markers", a.staleTemps, "duration", time.Since(start))

	deleteClaims(t, bc, ns, claims)
	deleted(t, bc, subtree, func(pv *v1.PersistentVolume) bool {
		return claimedIn(ns)(pv) && pv.Spec.StorageClassName == faultClassDirect
	})
}

// testLeaderPaused: the leader's process stopped (SIGSTOP) in the middle of a burst of access:
// direct claims, longer than the lease, so that the other replica takes over while the old one
// still has operations in flight; then it runs again. No NFS call can lock anything, so the
// only thing between the two is the fence: the old leader sends nothing once its Lease may have
// passed on. Every claim ends bound to exactly one PV, with no orphans.
func testLeaderPaused(t *testing.T) {
	faultsOverlay(t)
	bc := ownClient(t, 200, 400)
	ns := namespace(t)
	subtree := filepath.Join("fault", ns)
	before := snapshot(t, exportDir)

	start := time.Now()
	claims, atStop := midBurst(t, bc, ns, faultClassDirect, 150)
	old := leaderPod(t)
	oldID := leader(t)
	pids := dirpvProcesses(old.UID)
	if len(pids) == 0 {
		t.Fatalf("no dirpv process of the leader %s on this machine", old.Name)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	paused := time.Now()
	resumed := false
	resume := func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		resumed = true
	}
	t.Cleanup(func() {
		if !resumed {
			resume()
		}
	})

	// The other replica takes over once the lease has run out, and goes on with the burst.
	var atTakeover int
	pollFor(t, 2*time.Minute, "another replica leading and provisioning", func(ctx context.Context) (bool, error) {
		lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" || *lease.Spec.HolderIdentity == oldID {
			return false, nil
		}
		pvs, err := pvsWhere(ctx, bc, claimedIn(ns))
		if atTakeover == 0 {
			atTakeover = len(pvs)
		}
		return err == nil && len(pvs) >= atTakeover+10, nil
	})
	takeover := time.Since(paused)
	resume()
	t.Logf("leader %s paused for %v; the other replica took over and made volumes meanwhile", old.Name, time.Since(paused).Round(100*time.Millisecond))

	a, duplicates, _ := provisioned(t, bc, ns, faultClassDirect, subtree, claims)
	if added := strays(before, snapshot(t, exportDir), within(subtree)); len(added) > 0 {
		t.Errorf("created outside %s: %v", subtree, added)
		a.orphans += len(added)
	}
	// What the old leader's fence stopped once it ran again (its log; it may have had nothing in
	// flight).
	logs, _ := kubectlErr("-n", dirpvNamespace, "logs", old.Name)
	fenced := strings.Count(logs, "another replica may lead")
	reliability("leader-paused", "claims", len(claims), "pvs-at-pause", atStop, "taken-over-after", takeover,
		"fenced-calls-logged", fenced, "bound", len(claims), "duplicates", duplicates,
		"missing-dirs", a.missingDirs, "missing-markers", a.missingMarkers, "wrong-markers", a.badMarkers,
		"orphans", a.orphans, "leftovers", a.leftovers, "stale-temp-markers", a.staleTemps, "duration", time.Since(start))

	provisionerReady(t)
	deleteClaims(t, bc, ns, claims)
	deleted(t, bc, subtree, func(pv *v1.PersistentVolume) bool {
		return claimedIn(ns)(pv) && pv.Spec.StorageClassName == faultClassDirect
	})
}
