package nfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// frozenExport mounts a small ext4 filesystem (a loop device) at a temporary directory and
// returns it with a function that freezes it: writes then block in the kernel as they do on a
// hung NFS server, until it is thawed (on cleanup at the latest). Skips without root or tools.
func frozenExport(t *testing.T) (dir string, freeze, thaw func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a loop device")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "fsfreeze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	base := t.TempDir()
	img, dir := filepath.Join(base, "fs.img"), filepath.Join(base, "export")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) error {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Logf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return err
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil || os.Truncate(img, 32<<20) != nil {
		t.Fatalf("image: %v", err)
	}
	if run("mkfs.ext4", "-q", "-F", img) != nil {
		t.Fatal("mkfs.ext4 failed")
	}
	if run("mount", "-o", "loop", img, dir) != nil {
		t.Skip("cannot mount a loop device here")
	}
	frozen := false
	thaw = func() {
		if frozen && run("fsfreeze", "-u", dir) == nil {
			frozen = false
		}
	}
	t.Cleanup(func() {
		thaw()
		_ = run("umount", dir)
	})
	freeze = func() {
		if run("fsfreeze", "-f", dir) != nil {
			t.Fatal("fsfreeze failed")
		}
		frozen = true
	}
	return dir, freeze, thaw
}

// TestHungExport: on a filesystem whose writes block (as on a hung NFS server), an operation
// times out, the export refuses new ones at once instead of piling up blocked calls, Stalls
// reports it, and all of that clears when the filesystem answers again; the blocked operation
// then completes.
func TestHungExport(t *testing.T) {
	dir, freeze, thaw := frozenExport(t)
	b := &Backend{Exports: config.NFSExports{{Server: "srv", Share: "/data", LocalPath: dir}}, Timeout: 300 * time.Millisecond}
	vol := backend.Volume{Backend: Name, Location: Location{Server: "srv", Share: "/data"}}
	create := func(path string) volumeop.Op {
		return volumeop.Op{Kind: volumeop.Create, Path: path, Mode: 0o777, UID: -1, GID: -1,
			Owner: volumefs.Marker{PV: "pv-" + path, ClaimUID: "uid-" + path}}
	}
	ctx := context.Background()

	freeze()
	start := time.Now()
	_, err := b.Run(ctx, vol, create("first"))
	if err == nil || !strings.Contains(err.Error(), "no answer from NFS export srv:/data within 300ms") {
		t.Fatalf("Run on a hung export: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run returned after %v", took)
	}
	_, err = b.Run(ctx, vol, create("second"))
	if err == nil || !strings.Contains(err.Error(), "NFS export srv:/data: create first has been blocked") {
		t.Fatalf("next Run: %v", err)
	}
	if err := b.Stalls.Err(); err == nil || b.Stalls.Count() != 1 {
		t.Fatalf("Stalls: %v, count %d", err, b.Stalls.Count())
	}

	thaw()
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return b.Stalls.Err() == nil, nil
	}); err != nil {
		t.Fatalf("still blocked after thawing: %v", b.Stalls.Err())
	}
	if _, err := os.Stat(filepath.Join(dir, "first")); err != nil {
		t.Errorf("the blocked create did not complete: %v", err)
	}
	if _, err := b.Run(ctx, vol, create("second")); err != nil {
		t.Errorf("Run after recovery: %v", err)
	}
}
