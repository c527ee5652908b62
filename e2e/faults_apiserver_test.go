//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	apiServerDown  = 30 * time.Second
	apiServerBurst = 100
)

// apiServer is the local cluster's kube-apiserver process, as hack/cluster-up.sh started it.
type apiServer struct {
	work    string // $WORK: its PID file, log and certificates live there
	pid     int
	argv    []string
	environ []string
}

func findAPIServer(t *testing.T) *apiServer {
	t.Helper()
	s := &apiServer{work: clusterDir()}
	b, err := os.ReadFile(filepath.Join(s.work, "apiserver.pid"))
	if err != nil {
		t.Fatalf("kube-apiserver's PID file (set DIRPV_CLUSTER_DIR to the cluster's directory): %v", err)
	}
	if s.pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", s.pid))
	if err != nil {
		t.Fatalf("kube-apiserver pid %d: %v", s.pid, err)
	}
	s.argv = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if zombie(s.pid) || filepath.Base(s.argv[0]) != "kube-apiserver" || !strings.Contains(string(cmdline), s.work+"/") {
		t.Fatalf("pid %d is not this cluster's kube-apiserver: %q", s.pid, s.argv)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.pid))
	if err != nil {
		t.Fatal(err)
	}
	s.environ = strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	return s
}

// stop sends SIGTERM and waits until the process has exited.
func (s *apiServer) stop(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(s.pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM kube-apiserver %d: %v", s.pid, err)
	}
	start := time.Now()
	pollFor(t, 2*time.Minute, "kube-apiserver to exit", func(context.Context) (bool, error) { return zombie(s.pid), nil })
	t.Logf("kube-apiserver pid %d exited %v after SIGTERM", s.pid, time.Since(start).Round(100*time.Millisecond))
}

// start runs the same command line again, detached (a session of its own), in this process's
// network namespace (the cluster's: the suite runs inside it), with the log appended to
// $WORK/apiserver.log and the new PID in $WORK/apiserver.pid for hack/cluster-down.sh.
func (s *apiServer) start(t *testing.T) {
	t.Helper()
	logPath := filepath.Join(s.work, "apiserver.log")
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	fmt.Fprintf(log, "==== %s: restarted by the e2e case %s after %v down ====\n", time.Now().Format(time.RFC3339), t.Name(), apiServerDown)
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = s.environ
	cmd.Stdout, cmd.Stderr = log, log // stdin: /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restarting kube-apiserver: %v", err)
	}
	s.pid = cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := os.WriteFile(filepath.Join(s.work, "apiserver.pid"), []byte(strconv.Itoa(s.pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restarted as pid %d", s.pid)
}

func apiServerReady(ctx context.Context) bool {
	_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err == nil
}

// testAPIServerDown: kube-apiserver stopped for 30 s in the middle of a burst of claims. Once it is
// back, provisioning resumes by itself: every claim bound to exactly one PV, no orphans.
func testAPIServerDown(t *testing.T) {
	s := findAPIServer(t)
	bc := ownClient(t, 200, 400)
	ns := namespace(t)
	subtree := filepath.Join("fault", ns)
	before := snapshot(t, exportDir)

	start := time.Now()
	// Stop it mid-burst: some volumes made, most not yet.
	claims, atStop := midBurst(t, bc, ns, faultClassNFS, apiServerBurst)
	restarted := false
	t.Cleanup(func() {
		if !restarted { // a failure between stop and start must not leave the cluster without it
			if !zombie(s.pid) {
				s.stop(t)
			}
			s.start(t)
		}
	})
	s.stop(t)
	stopped := time.Now()
	t.Logf("kube-apiserver stopped with %d of %d PVs made; keeping it down %v", atStop, len(claims), apiServerDown)
	time.Sleep(apiServerDown - time.Since(stopped)) // the fault itself, not a wait for a condition
	s.start(t)
	restarted = true
	up := time.Now()
	pollFor(t, 3*time.Minute, "kube-apiserver ready again", func(ctx context.Context) (bool, error) { return apiServerReady(ctx), nil })
	ready := time.Since(up)
	// Pods reach it through the kubernetes Service: kube-proxy must first see its endpoint again
	// (the apiserver removes it on shutdown), and dirpv's replicas retry with backoff. Provisioning
	// resumes when a replica holds the Lease again.
	pollFor(t, 3*time.Minute, "a dirpv replica leading again", func(ctx context.Context) (bool, error) {
		lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		return err == nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(up) &&
			lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "", nil
	})
	leading := time.Since(up)

	a, duplicates, _ := provisioned(t, bc, ns, faultClassNFS, subtree, claims)
	recovered := time.Since(up)
	if added := strays(before, snapshot(t, exportDir), within(subtree)); len(added) > 0 {
		t.Errorf("created outside %s: %v", subtree, added)
		a.orphans += len(added)
	}
	reliability("apiserver-down", "claims", len(claims), "down", up.Sub(stopped), "pvs-at-stop", atStop,
		"apiserver-ready-after", ready, "leader-back-after", leading, "all-bound-after-restart", recovered, "bound", len(claims), "duplicates", duplicates,
		"missing-dirs", a.missingDirs, "missing-markers", a.missingMarkers, "wrong-markers", a.badMarkers,
		"orphans", a.orphans, "leftovers", a.leftovers, "stale-temp-markers", a.staleTemps, "duration", time.Since(start))

	// The node and both replicas must be well again for the next cases; the claims go.
	pollFor(t, 3*time.Minute, "node Ready", func(ctx context.Context) (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	provisionerReady(t)
	deleteClaims(t, bc, ns, claims)
	deleted(t, bc, subtree, claimedIn(ns))
}
