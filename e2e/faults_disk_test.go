//go:build e2e

package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// mountFull mounts a 64 KiB tmpfs at fullRoot on the node (this machine), the basePath of class
// e2e-fault-full, and unmounts it when the test ends. Helper pods see it: each is made after it
// and the kubelet's hostPath bind mounts are recursive.
func mountFull(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(fullRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("dirpv-e2e-full", fullRoot, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", fullRoot, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(fullRoot, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", fullRoot, err)
		}
		_ = os.Remove(fullRoot)
	})
}

// fill writes a file at path until the filesystem is full.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// testDiskFull: a hostPath class whose basePath is a full filesystem. Its claim (with a pod, so
// WaitForFirstConsumer lets it provision) gets a ProvisioningFailed event naming "no space left
// on device" and no PV, nothing half-made stays behind (no directory, marker or temporary file),
// and once space is freed the library's retry provisions it by itself.
func testDiskFull(t *testing.T) {
	mountFull(t)
	filler := filepath.Join(fullRoot, "filler")
	filled := fill(t, filler)
	ns := namespace(t)
	claim(t, ns, "data", faultClassFull)
	startPod(t, ns, "app", "data", onNode("node1")) // node1: this machine
	msg := event(t, ns, "data", "ProvisioningFailed", "no space left on device")
	t.Logf("ProvisioningFailed: %s", msg)
	failedAt := time.Now()

	pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "data", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != v1.ClaimPending || pvc.Spec.VolumeName != "" {
		t.Errorf("claim after the failure: %v %s %q", err, pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	pvs := countPVs(t, client, claimedIn(ns))
	if pvs != 0 {
		t.Errorf("%d PVs for the claim that could not be made", pvs)
	}
	halfMade := entries(t, fullRoot)
	if len(halfMade) != 1 || halfMade[0] != "filler" {
		t.Errorf("left in the full filesystem after the failure: %v, want only the filler", halfMade)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	pv := bound(t, ns, "data")
	recovered := time.Since(freed)
	podRunning(t, ns, "app")
	dir := pvPath(pv)
	if filepath.Dir(dir) != fullRoot {
		t.Errorf("PV %s at %s, not in %s", pv.Name, dir, fullRoot)
	}
	m, err := readMarkerFile(dir)
	if err != nil || m.PV != pv.Name || m.ClaimUID != string(pvc.UID) {
		t.Errorf("marker of %s: %+v %v", dir, m, err)
	}
	reason := "other"
	if strings.Contains(msg, "no space left on device") {
		reason = "no-space-left-on-device"
	}
	reliability("disk-full", "filled-bytes", filled, "event", reason, "pvs-while-full", pvs,
		"left-behind", len(halfMade)-1, "bound-after-freeing", recovered, "failure-to-bound", time.Since(failedAt))

	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
	waitGone(t, dir)
	if left := entries(t, fullRoot); len(left) != 0 {
		t.Errorf("left in %s after the volume was deleted: %v", fullRoot, left)
	}
}
