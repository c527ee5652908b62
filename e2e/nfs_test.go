//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// testNFSKernelClient is the check that the nfs PVs dirpv writes are mountable: no pod can mount
// nfs on this machine, so a Linux NFS client in a VM (hack/nfs-vm.sh) mounts exactly the
// server:path the PV records, with the class's mount options, and writes a file through it;
// the file must then be in the volume's directory on the server. Deleting the claim reclaims
// the directory as usual.
func testNFSKernelClient(access nfsAccess) func(*testing.T) {
	return func(t *testing.T) { mountInVM(t, access) }
}

func mountInVM(t *testing.T, access nfsAccess) {
	ns := namespace(t)
	claim(t, ns, "vm", access.class("e2e-nfs"), func(c *v1.PersistentVolumeClaim) {
		c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
	})
	pv := bound(t, ns, "vm")
	dir := onExport(t, pv)
	spec := pv.Spec.NFS.Server + ":" + pv.Spec.NFS.Path
	options := strings.Join(pv.Spec.MountOptions, ",")
	token := "dirpv-e2e-" + rand.String(10)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join("..", "hack", "nfs-vm.sh"), dirpvNetns(t), spec, options)
	cmd.Env = append(os.Environ(), "TOKEN="+token)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("mounting %s -o %s in a VM: %v\n%s\n%s", spec, options, err, stdout.String(), stderr.String())
	}
	t.Logf("a Linux NFS client mounted %s -o %s and wrote through it (%v):\n%s", spec, options, time.Since(start).Round(time.Second), stdout.String())
	if got, err := os.ReadFile(filepath.Join(dir, "dirpv-vm-check")); err != nil || string(got) != token {
		t.Fatalf("the file written through the mount, on the server: %q, %v; want %q", got, err, token)
	}

	deleteClaim(t, ns, "vm")
	pvGone(t, pv.Name)
	waitGone(t, dir)
}

// dirpvNetns is the network namespace the suite runs in: the cluster's, where the NFS server is.
func dirpvNetns(t *testing.T) string {
	t.Helper()
	if ns := os.Getenv("DIRPV_NETNS"); ns != "" {
		return ns
	}
	return "dirpv"
}
