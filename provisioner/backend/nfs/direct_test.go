package nfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/nfs3/nfs3test"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// directBackend serves access: direct over a real NFS server with the exports given.
func directBackend(t *testing.T, allow string, exports ...nfs3test.Export) (*Backend, *nfs3test.Server) {
	t.Helper()
	srv := nfs3test.Start(t, exports...)
	var a config.NFSAllow
	if err := a.Set(allow); err != nil {
		t.Fatal(err)
	}
	return &Backend{Allow: a, Direct: &Direct{Dial: srv.Dial}, Timeout: time.Minute}, srv
}

func directVolume(share, p string) backend.Volume {
	return backend.Volume{Backend: Name, Location: Location{Server: nfs3test.Addr, Share: share, Access: AccessDirect}, Path: p}
}

func createOp(p, pv string) volumeop.Op {
	return volumeop.Op{Kind: volumeop.Create, Path: p, Mode: 0o2770, UID: 1000, GID: 2000,
		Owner: volumefs.Marker{PV: pv, ClaimUID: "uid-" + pv, ClaimNamespace: "ns", ClaimName: "c"}}
}

// TestDirect: every operation over NFSv3, checked in the server's directory. The share is a
// directory inside the export, on a server allowed as a whole: dirpv mounts the export and
// walks down to it.
func TestDirect(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	export := t.TempDir()
	b, _ := directBackend(t, nfs3test.Addr, nfs3test.Export{Dir: export})
	share := export + "/team"
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := func(p string) string { return filepath.Join(share, p) }

	if _, err := b.Run(ctx, directVolume(share, "ns/a"), createOp("ns/a", "pv-a")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir("ns/a"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&(os.ModePerm|os.ModeSetgid) != os.ModeSetgid|0o770 || st.Uid != 1000 || st.Gid != 2000 {
		t.Errorf("volume: mode %v owner %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
	if data, err := os.ReadFile(dir("ns/.a.dirpv")); err != nil || !strings.Contains(string(data), `"pv":"pv-a"`) {
		t.Errorf("marker: %q, %v", data, err)
	}

	// Another PV's claim on the same path is refused; the tenant's data stays.
	if err := os.WriteFile(dir("ns/a/data"), []byte("tenant"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(ctx, directVolume(share, "ns/a"), createOp("ns/a", "pv-b")); !errors.Is(err, volumefs.ErrNotOwner) {
		t.Errorf("Create by another PV: %v", err)
	}

	// Scrub empties it, and a symlink planted there is removed, not followed.
	if err := os.Symlink(export, dir("ns/a/escape")); err != nil {
		t.Fatal(err)
	}
	scrub := volumeop.Op{Kind: volumeop.Scrub, Path: "ns/a", Owner: volumefs.Marker{PV: "pv-a", ClaimUID: "uid-a"}}
	if res, err := b.Run(ctx, directVolume(share, "ns/a"), scrub); err != nil || !res.Scrubbed {
		t.Fatalf("Scrub = %+v, %v", res, err)
	}
	if names, _ := os.ReadDir(dir("ns/a")); len(names) != 0 {
		t.Errorf("left after Scrub: %v", names)
	}
	if _, err := os.Stat(share); err != nil {
		t.Errorf("the symlink's target: %v", err)
	}

	// Archive renames it beside itself (NFS cannot rename without replacing: the check-then-
	// rename fallback), and the archive is the operator's.
	archive := volumeop.Op{Kind: volumeop.Archive, Path: "ns/a", Owner: volumefs.Marker{PV: "pv-a"}, Now: time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)}
	res, err := b.Run(ctx, directVolume(share, "ns/a"), archive)
	if err != nil || res.Archive != "ns/archived-a-20261126T030000Z" {
		t.Fatalf("Archive = %+v, %v", res, err)
	}
	if _, err := os.Stat(dir(res.Archive)); err != nil {
		t.Error(err)
	}

	// Delete removes a deep tree with a directory nobody may enter.
	if _, err := b.Run(ctx, directVolume(share, "ns/b"), createOp("ns/b", "pv-b")); err != nil {
		t.Fatal(err)
	}
	deep := dir("ns/b/" + strings.Repeat("d/", 40))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir("ns/b/d/d"), 0o000); err != nil {
		t.Fatal(err)
	}
	del := volumeop.Op{Kind: volumeop.Delete, Path: "ns/b", Owner: volumefs.Marker{PV: "pv-b"}}
	if _, err := b.Run(ctx, directVolume(share, "ns/b"), del); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(dir("ns")); len(names) != 2 { // the archive and its marker
		t.Errorf("left in ns: %v", names)
	}
}

// TestDirectAllow: a class may only name what --nfs-allow admits.
func TestDirectAllow(t *testing.T) {
	for _, tc := range []struct {
		name, server, share string
		allow               config.NFSAllow
		want                string
	}{
		{"off", "nfs1", "/e", nil, "access: direct is off in this provisioner (no --nfs-allow)"},
		{"other server", "nfs2", "/e", config.NFSAllow{{Server: "nfs1"}}, "NFS server nfs2, share /e, is not allowed for access: direct (the provisioner allows: nfs1)"},
		{"other export", "nfs1", "/f", config.NFSAllow{{Server: "nfs1", Share: "/e"}}, "is not allowed"},
		{"dot directory in the share", "nfs1", "/e/.x", config.NFSAllow{{Server: "nfs1", Share: "/e"}}, "share /e/.x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Backend{Allow: tc.allow, Direct: &Direct{}}
			class := &config.Class{Backend: Name, Params: Class{Server: tc.server, Share: tc.share, Access: AccessDirect}}
			if _, err := b.Place(context.Background(), class, controller.ProvisionOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Place = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestDirectRootSquash: on an export that squashes root, a class without uid and gid works
// (the volume belongs to the anonymous user), and one with them fails with a message that says
// what to do.
func TestDirectRootSquash(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	export := t.TempDir()
	if err := os.Chmod(export, 0o1777); err != nil {
		t.Fatal(err)
	}
	b, _ := directBackend(t, nfs3test.Addr+":"+export, nfs3test.Export{Dir: export, Squash: true})
	plain := createOp("v", "pv")
	plain.UID, plain.GID = -1, -1
	if _, err := b.Run(ctx, directVolume(export, "v"), plain); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(export, "v")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Errorf("volume: %v, %v", fi, err)
	}
	_, err := b.Run(ctx, directVolume(export, "w"), createOp("w", "pv-w"))
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "an export that squashes root needs a class without uid and gid") {
		t.Errorf("Create with uid and gid: %v", err)
	}
}

// TestDirectSilentServer: a server that stops answering fails its operations within a call's
// deadline, is named by Err, and fails later ones at once until it answers again.
func TestDirectSilentServer(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	export := t.TempDir()
	b, srv := directBackend(t, nfs3test.Addr, nfs3test.Export{Dir: export})
	b.Direct.CallTimeout = time.Second
	b.Direct.ProbeInterval = time.Hour
	if _, err := b.Run(ctx, directVolume(export, "a"), createOp("a", "pv-a")); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	stopped := true
	defer func() {
		if stopped {
			srv.Continue(t)
		}
	}()
	_, err := b.Run(ctx, directVolume(export, "b"), createOp("b", "pv-b"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Create on a stopped server: %v", err)
	}
	if err := b.Direct.Err(); err == nil || !strings.Contains(err.Error(), "NFS server "+nfs3test.Addr+" has not answered since") {
		t.Errorf("Err = %v", err)
	}
	start := time.Now()
	_, err = b.Run(ctx, directVolume(export, "c"), createOp("c", "pv-c"))
	if err == nil || !strings.Contains(err.Error(), "has not answered since") || time.Since(start) > time.Second {
		t.Errorf("Create while silent: %v after %v; want a fast failure", err, time.Since(start))
	}

	srv.Continue(t)
	stopped = false
	// With no operation to ask it (as on a standby), /readyz's asking clears the mark.
	b.Direct.ProbeInterval = time.Nanosecond
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return b.Direct.Err() == nil, nil
	})
	if err != nil {
		t.Fatalf("the server answers again, yet Err = %v", b.Direct.Err())
	}
	if _, err := b.Run(ctx, directVolume(export, "c"), createOp("c", "pv-c")); err != nil {
		t.Fatalf("Create once the server answers again: %v", err)
	}
	if err := b.Direct.Err(); err != nil || b.Direct.Silent() != 0 {
		t.Errorf("Err = %v, Silent = %d", err, b.Direct.Silent())
	}
}

// TestDirectFence: with the fence closed nothing reaches the server.
func TestDirectFence(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	export := t.TempDir()
	b, _ := directBackend(t, nfs3test.Addr, nfs3test.Export{Dir: export})
	b.Direct.Fence = func() error { return errors.New("not the leader") }
	if _, err := b.Run(ctx, directVolume(export, "a"), createOp("a", "pv-a")); err == nil || !strings.Contains(err.Error(), "not the leader") {
		t.Fatalf("Create with the fence closed: %v", err)
	}
	if names, _ := os.ReadDir(export); len(names) != 0 {
		t.Errorf("the server got calls through a closed fence: %v", names)
	}
	if b.Direct.Silent() != 0 {
		t.Error("a closed fence marked the server silent")
	}
	// NULL changes nothing: a fenced replica may still ask whether the server answers.
	c, err := b.Direct.client(nfs3test.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping with the fence closed: %v", err)
	}
}
