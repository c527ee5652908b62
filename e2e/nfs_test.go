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
	token := "dirpv-e2e-" + rand.String(10)
	vmMount(t, pv, token)
	if got, err := os.ReadFile(filepath.Join(dir, "dirpv-vm-check")); err != nil || string(got) != token {
		t.Fatalf("the file written through the mount, on the server: %q, %v; want %q", got, err, token)
	}

	deleteClaim(t, ns, "vm")
	pvGone(t, pv.Name)
	waitGone(t, dir)
}

// vmMount mounts pv's nfs source with its mount options in a VM (hack/nfs-vm.sh), which writes
// the file dirpv-vm-check holding token through it and lists the directory; it returns the
// VM's report.
func vmMount(t *testing.T, pv *v1.PersistentVolume, token string) string {
	t.Helper()
	spec := pv.Spec.NFS.Server + ":" + pv.Spec.NFS.Path
	options := strings.Join(pv.Spec.MountOptions, ",")
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
	return stdout.String()
}

// dirpvNetns is the network namespace the suite runs in: the cluster's, where the NFS server is.
func dirpvNetns(t *testing.T) string {
	t.Helper()
	if ns := os.Getenv("DIRPV_NETNS"); ns != "" {
		return ns
	}
	return "dirpv"
}

// squashDir is the cluster's second export, which squashes root (hack/nfs-server.sh).
const squashDir = "/srv/dirpv-nfs/squashed"

// testNFSDirectNewExport: a class for another export of an allowed server, made while dirpv
// runs, works at once (access: direct needs no mount and no restart). That export squashes
// root: a class without uid and gid gets volumes owned by the anonymous user; one with a uid
// gets an event that says what such an export needs.
func testNFSDirectNewExport(t *testing.T) {
	ns := namespace(t)
	class := func(name string, extra map[string]string) string {
		params := map[string]string{"backend": "nfs", "server": nfsServer, "share": squashDir, "access": "direct"}
		for k, v := range extra {
			params[k] = v
		}
		return dirpvClass(t, name+"-"+ns, params)
	}

	claim(t, ns, "anon", class("e2e-squashed", nil))
	pv := bound(t, ns, "anon")
	if pv.Spec.NFS.Server != nfsServer || !strings.HasPrefix(pv.Spec.NFS.Path, squashDir+"/") {
		t.Fatalf("PV source %+v", pv.Spec.NFS)
	}
	dir := pv.Spec.NFS.Path
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("%s is owned by %d:%d, want the anonymous user 65534:65534 of the squashing export", dir, st.Uid, st.Gid)
	}

	claim(t, ns, "owned", class("e2e-squashed-uid", map[string]string{"uid": "1000", "gid": "1000"}))
	event(t, ns, "owned", "ProvisioningFailed", "an export that squashes root needs a class without uid and gid")

	deleteClaim(t, ns, "anon")
	pvGone(t, pv.Name)
	waitGone(t, dir)
}
