package volumefs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAdopt(t *testing.T) {
	r, dir, _ := testRoot(t)
	mkdirs(t, filepath.Join(dir, "nsp/ns-c-pvc-1"))
	if err := os.WriteFile(filepath.Join(dir, "nsp/ns-c-pvc-1/data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Adopt(r, "nsp/ns-c-pvc-1", owner("pvc-1"), true); err != nil {
		t.Fatalf("check: %v", err)
	}
	assertNames(t, filepath.Join(dir, "nsp"), "ns-c-pvc-1") // a check writes nothing
	for range 2 {                                           // a retry is a no-op
		if err := Adopt(r, "nsp/ns-c-pvc-1", owner("pvc-1"), false); err != nil {
			t.Fatalf("adopt: %v", err)
		}
	}
	assertNames(t, filepath.Join(dir, "nsp"), "ns-c-pvc-1", ".ns-c-pvc-1.dirpv")
	if m, err := ReadMarker(r, "nsp/ns-c-pvc-1"); err != nil || m == nil || *m != owner("pvc-1") {
		t.Fatalf("marker %+v, %v", m, err)
	}
	// Another PV naming the same directory (a forged PV copying a real path) is refused.
	if err := Adopt(r, "nsp/ns-c-pvc-1", owner("pvc-2"), false); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("another PV: %v, want ErrNotOwner", err)
	}
	// Adopted, it is reclaimed like any volume, archived under the plain name.
	got, err := ArchivePlain(r, "nsp/ns-c-pvc-1", Owner{PV: "pvc-1"}, time.Unix(0, 0))
	if err != nil || got != "nsp/archived-ns-c-pvc-1" {
		t.Fatalf("archive: %q, %v", got, err)
	}
	assertNames(t, filepath.Join(dir, "nsp"), "archived-ns-c-pvc-1", ".archived-ns-c-pvc-1.dirpv")
	// Released, it is adopted by no one again.
	if err := Adopt(r, "nsp/archived-ns-c-pvc-1", owner("pvc-1"), false); !errors.Is(err, ErrReleased) {
		t.Fatalf("released: %v, want ErrReleased", err)
	}
}

func TestArchivePlainNeverOverwrites(t *testing.T) {
	r, dir, _ := testRoot(t)
	mkdirs(t, filepath.Join(dir, "ns-c-pvc-1"), filepath.Join(dir, "archived-ns-c-pvc-1"))
	if err := Adopt(r, "ns-c-pvc-1", owner("pvc-1"), false); err != nil {
		t.Fatal(err)
	}
	got, err := ArchivePlain(r, "ns-c-pvc-1", Owner{PV: "pvc-1"}, time.Unix(0, 0))
	if err != nil || got != "archived-ns-c-pvc-1-19700101T000000Z" {
		t.Fatalf("archive: %q, %v", got, err)
	}
}

func TestAdoptHostile(t *testing.T) {
	r, dir, outer := testRoot(t)
	mkdirs(t, filepath.Join(outer, "secret"), filepath.Join(dir, "real"), filepath.Join(dir, "parent/holder"))
	mustCreate(t, r, "vol", "pvc-v")          // a dirpv volume
	mustCreate(t, r, "parent/inner", "pvc-i") // a volume inside a plain directory
	for _, link := range []struct{ target, name string }{
		{filepath.Join(outer, "secret"), "link"},     // a symlinked directory
		{filepath.Join(outer), "uplink"},             // a symlinked parent
		{filepath.Join(dir, "real"), "link-to-real"}, // a link to a directory in the root
	} {
		if err := os.Symlink(link.target, filepath.Join(dir, link.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       error
	}{
		{"dot-dot", "../secret", ErrInvalidPath},
		{"dot-dot inside", "real/../vol", ErrInvalidPath},
		{"hidden", ".vol.dirpv", ErrInvalidPath},
		{"absolute", "/etc", ErrInvalidPath},
		{"symlinked directory", "link", ErrNotAdoptable},
		{"link to a directory in the root", "link-to-real", ErrNotAdoptable},
		{"through a symlinked parent", "uplink/secret", nil},
		{"a regular file", "file", ErrNotAdoptable},
		{"missing", "nothing", ErrNotAdoptable},
		{"another volume's directory", "vol", ErrNotOwner},
		{"inside another volume", "vol/sub", ErrNested},
		{"a directory holding a volume", "parent", ErrNotAdoptable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Adopt(r, tc.path, owner("pvc-x"), false)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Adopt(%q) = %v, want %v", tc.path, err, tc.want)
			}
		})
	}
	// Nothing was written anywhere.
	assertNames(t, dir, "vol", ".vol.dirpv", "real", "parent", "link", "uplink", "link-to-real", "file")
	assertNames(t, filepath.Join(dir, "parent"), "holder", "inner", ".inner.dirpv")
	assertNames(t, filepath.Join(outer, "secret"))
}
