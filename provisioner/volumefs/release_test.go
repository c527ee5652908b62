package volumefs

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestRelease: a released volume is the operator's. No operation of its PV, or of a later PV
// with the same name, changes it again; releasing it again is a no-op.
func TestRelease(t *testing.T) {
	r, dir, _ := testRoot(t)
	mustCreate(t, r, "ns/v", "pv")
	writeFile(t, dir+"/ns/v/data", "kept", 0o644)
	const why = "kept (onDelete: retain) at 2026-11-25T08:00:00Z"
	if err := Release(r, "ns/v", own("pv"), why); err != nil {
		t.Fatal(err)
	}
	want := owner("pv")
	want.Released = why
	if m := markerOnDisk(t, dir+"/ns/.v.dirpv"); m != want {
		t.Errorf("marker = %+v, want %+v", m, want)
	}
	if err := Release(r, "ns/v", own("pv"), "again"); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if m := markerOnDisk(t, dir+"/ns/.v.dirpv"); m.Released != why {
		t.Errorf("second Release rewrote the reason: %+v", m)
	}

	if err := Delete(r, "ns/v", own("pv")); !errors.Is(err, ErrReleased) {
		t.Errorf("Delete = %v, want ErrReleased", err)
	}
	if got, err := Archive(r, "ns/v", own("pv"), archiveNow); !errors.Is(err, ErrReleased) || got != "" {
		t.Errorf("Archive = %q, %v; want ErrReleased", got, err)
	}
	if scrubbed, err := Scrub(r, "ns/v", own("pv"), "uid-9"); !errors.Is(err, ErrReleased) || scrubbed {
		t.Errorf("Scrub = %v, %v; want ErrReleased", scrubbed, err)
	}
	if err := Create(r, opts("ns/v", "pv")); !errors.Is(err, ErrReleased) {
		t.Errorf("Create by the same PV name = %v, want ErrReleased", err)
	}
	if err := Release(r, "ns/v", own("pv-other"), why); !errors.Is(err, ErrNotOwner) {
		t.Errorf("Release by another PV = %v, want ErrNotOwner", err)
	}
	assertFile(t, dir+"/ns/v/data", "kept")
	assertNoTempFiles(t, dir)

	// Nothing to release: no error, nothing made.
	if err := Release(r, "ns/gone", own("pv"), why); err != nil {
		t.Errorf("Release of a missing volume: %v", err)
	}
	assertNames(t, dir+"/ns", "v", ".v.dirpv")
	if err := Release(r, "ns/v", own("pv"), ""); err == nil {
		t.Error("Release without a reason succeeded")
	}
}

// TestReleaseRefuses: Release refuses what it may not touch, like the other operations.
func TestReleaseRefuses(t *testing.T) {
	for _, tc := range notOurs() {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.setup(t, r, dir)
			err := Release(r, tc.path, own("pv"), "kept")
			switch {
			case tc.name == releasedCase:
				if err != nil {
					t.Errorf("Release of a released volume: %v", err)
				}
			case tc.wantErr == errAny && err == nil:
				t.Error("Release succeeded")
			case tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Errorf("Release: err = %v, want %v", err, tc.wantErr)
			}
			tc.check(t, dir)
		})
	}
}

// TestNodeIncarnation: a node-local volume records the Node UID it was made under; only
// operations under that UID touch it.
func TestNodeIncarnation(t *testing.T) {
	r, dir, _ := testRoot(t)
	o := opts("v", "pv")
	o.Owner.NodeUID = "uid-a"
	if err := Create(r, o); err != nil {
		t.Fatal(err)
	}
	if m := markerOnDisk(t, dir+"/.v.dirpv"); m.NodeUID != "uid-a" {
		t.Errorf("marker = %+v", m)
	}
	writeFile(t, dir+"/v/data", "x", 0o644)

	o.Owner.NodeUID = "uid-b"
	if err := Create(r, o); !errors.Is(err, ErrNotOwner) {
		t.Errorf("Create retry under another Node UID = %v, want ErrNotOwner", err)
	}
	for _, uid := range []string{"uid-b", ""} {
		if err := Delete(r, "v", Owner{PV: "pv", NodeUID: uid}); !errors.Is(err, ErrNotOwner) {
			t.Errorf("Delete under Node UID %q = %v, want ErrNotOwner", uid, err)
		}
		if scrubbed, err := Scrub(r, "v", Owner{PV: "pv", NodeUID: uid}, "c1"); !errors.Is(err, ErrNotOwner) || scrubbed {
			t.Errorf("Scrub under Node UID %q = %v, want ErrNotOwner", uid, err)
		}
	}
	assertFile(t, dir+"/v/data", "x")

	o.Owner.NodeUID = "uid-a"
	if err := Create(r, o); err != nil {
		t.Errorf("Create retry under the same Node UID: %v", err)
	}
	if err := Delete(r, "v", Owner{PV: "pv", NodeUID: "uid-a"}); err != nil {
		t.Errorf("Delete under the same Node UID: %v", err)
	}
	assertNames(t, dir)
}

// TestCreateRefusesReleasedOptions: a new volume's marker cannot be born released or recycled.
func TestCreateRefusesReleasedOptions(t *testing.T) {
	r, dir, _ := testRoot(t)
	for _, m := range []Marker{{PV: "pv", Released: "x"}, {PV: "pv", Recycled: "x"}} {
		if err := Create(r, CreateOptions{Path: "v", Mode: 0o777, UID: -1, GID: -1, Owner: m}); err == nil {
			t.Errorf("Create with owner %+v succeeded", m)
		}
	}
	if _, err := os.Lstat(dir + "/v"); err == nil {
		t.Error("directory made")
	}
	assertNames(t, dir)
}

// A marker larger than dirpv reads back is never written: neither a volume whose marker would be
// made so by its claim's names, nor a release whose words would; the volume can still be deleted.
func TestMarkerTooLarge(t *testing.T) {
	r, dir, _ := testRoot(t)
	o := opts("ns/big", "pv")
	o.Owner.ClaimName = strings.Repeat("c", 70<<10)
	if err := Create(r, o); err == nil || !strings.Contains(err.Error(), "larger than the 65536 bytes dirpv reads back") {
		t.Errorf("Create with a 70 KiB claim name = %v, want it refused", err)
	}
	assertGone(t, dir+"/ns/big")
	assertGone(t, dir+"/ns/.big.dirpv")

	mustCreate(t, r, "ns/v", "pv")
	if err := Release(r, "ns/v", own("pv"), strings.Repeat("w", 70<<10)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Release with 70 KiB of words = %v, want it refused", err)
	}
	if m := markerOnDisk(t, dir+"/ns/.v.dirpv"); m != owner("pv") {
		t.Errorf("marker = %+v after the refused release, want it as it was", m)
	}
	assertNoTempFiles(t, dir+"/ns")
	if err := Delete(r, "ns/v", own("pv")); err != nil {
		t.Errorf("Delete after the refused release: %v", err)
	}
}
