package volumefs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/pathname"
)

func TestMarkerName(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"b", ".b.dirpv"},
		{"a/b", "a/.b.dirpv"},
		{"team/ns/claim", "team/ns/.claim.dirpv"},
	} {
		if got := MarkerName(tc.path); got != tc.want {
			t.Errorf("MarkerName(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestInvalidPaths(t *testing.T) {
	paths := []string{
		"", "/abs", "../x", "a/../../x", ".hidden", "a/.b", "a//b", "a/", "./a", ".", "..",
		"a/..", "a/./b", "a/../b", ".a/b", "a/b.c/.d",
	}
	for _, p := range paths {
		t.Run(fmt.Sprintf("%q", p), func(t *testing.T) {
			r, dir, _ := testRoot(t)
			if err := Create(r, opts(p, "pv")); !errors.Is(err, ErrInvalidPath) {
				t.Errorf("Create: err = %v, want ErrInvalidPath", err)
			}
			if err := Delete(r, p, own("pv")); !errors.Is(err, ErrInvalidPath) {
				t.Errorf("Delete: err = %v, want ErrInvalidPath", err)
			}
			if _, err := Archive(r, p, own("pv"), time.Now()); !errors.Is(err, ErrInvalidPath) {
				t.Errorf("Archive: err = %v, want ErrInvalidPath", err)
			}
			if _, err := ReadMarker(r, p); !errors.Is(err, ErrInvalidPath) {
				t.Errorf("ReadMarker: err = %v, want ErrInvalidPath", err)
			}
			assertNames(t, dir)
		})
	}
}

func TestCreateLongBase(t *testing.T) {
	r, dir, _ := testRoot(t)
	long := strings.Repeat("x", pathname.MaxComponent+1)
	if err := Create(r, opts(long, "pv")); !errors.Is(err, ErrInvalidPath) {
		t.Errorf("Create(%d bytes): err = %v, want ErrInvalidPath", len(long), err)
	}
	assertNames(t, dir)

	// The longest accepted name can be archived, with suffixes, on a 255-byte NAME_MAX.
	worst := "." + "archived-" + long[1:] + "-" + archiveTimeFormat + fmt.Sprintf("-%d", maxArchiveSuffix) + markerSuffix + ".tmp-01234567"
	if len(worst) > 255 {
		t.Errorf("worst-case archive marker temp name is %d bytes", len(worst))
	}
	ok := strings.Repeat("y", pathname.MaxComponent)
	mustCreate(t, r, ok, "pv")
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 12 {
		if err := os.Mkdir(filepath.Join(dir, ok), 0o700); err != nil && i > 0 {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, MarkerName(ok)), `{"pv":"pv"}`, 0o600)
		if _, err := Archive(r, ok, own("pv"), now); err != nil {
			t.Fatalf("archive %d: %v", i, err)
		}
	}
}

func TestCreateRejectsBadOptions(t *testing.T) {
	for name, o := range map[string]CreateOptions{
		"empty PV":     {Path: "v", Mode: 0o777, UID: -1, GID: -1},
		"device mode":  {Path: "v", Mode: 0o777 | fs.ModeDevice, UID: -1, GID: -1, Owner: owner("pv")},
		"symlink mode": {Path: "v", Mode: 0o777 | fs.ModeSymlink, UID: -1, GID: -1, Owner: owner("pv")},
	} {
		t.Run(name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			if err := Create(r, o); err == nil {
				t.Error("Create succeeded")
			}
			assertNames(t, dir)
		})
	}
}

func TestCreateMode(t *testing.T) {
	withUmask(t, 0o077) // would turn 0o777 into 0o700 if Mkdir's perm were relied on
	for _, mode := range []fs.FileMode{
		0o777, 0o750, 0o700, 0o555, 0o000,
		0o775 | fs.ModeSetgid,
		0o777 | fs.ModeSticky,
		0o770 | fs.ModeSetgid | fs.ModeDir, // ModeDir is tolerated and ignored
		0o2775,                             // Unix-style setgid, as parsed from "2775"
		0o7777,
	} {
		t.Run(fmt.Sprintf("%o/%v", uint32(mode), mode), func(t *testing.T) {
			r, dir, _ := testRoot(t)
			o := opts("team/ns/vol", "pv1")
			o.Mode = mode
			if err := Create(r, o); err != nil {
				t.Fatal(err)
			}
			want, _ := dirMode(mode)
			if mode == 0o2775 && want != 0o775|fs.ModeSetgid || mode == 0o7777 && want != 0o777|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky {
				t.Fatalf("dirMode(%o) = %v", uint32(mode), want)
			}
			if got := modeBits(t, filepath.Join(dir, "team/ns/vol")); got != want {
				t.Errorf("mode = %v, want %v", got, want)
			}
			if fi, err := os.Lstat(filepath.Join(dir, "team/ns/vol")); err != nil || !fi.IsDir() {
				t.Errorf("not a directory: %v %v", fi, err)
			}
			assertNames(t, filepath.Join(dir, "team/ns"), "vol", ".vol.dirpv")
			assertNames(t, dir, "team")
		})
	}
}

func TestCreateOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	for _, tc := range []struct {
		name             string
		uid, gid         int
		wantUID, wantGID uint32
		mode             fs.FileMode
		preUID, preGID   int // applied by an earlier Create of the same PV
		retry            bool
	}{
		{name: "both", uid: 1234, gid: 5678, wantUID: 1234, wantGID: 5678, mode: 0o770 | fs.ModeSetgid},
		{name: "gid only", uid: -1, gid: 5678, wantUID: 0, wantGID: 5678, mode: 0o775 | fs.ModeSetgid},
		{name: "uid only", uid: 1234, gid: -1, wantUID: 1234, wantGID: 0, mode: 0o700},
		{name: "neither", uid: -1, gid: -1, wantUID: 0, wantGID: 0, mode: 0o777},
		{name: "retry changes owner", uid: 42, gid: 43, wantUID: 42, wantGID: 43, mode: 0o770 | fs.ModeSetgid, preUID: 1, preGID: 2, retry: true},
		{name: "retry keeps owner", uid: -1, gid: -1, wantUID: 1, wantGID: 2, mode: 0o750, preUID: 1, preGID: 2, retry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			if tc.retry {
				o := opts("v", "pv")
				o.UID, o.GID = tc.preUID, tc.preGID
				if err := Create(r, o); err != nil {
					t.Fatal(err)
				}
			}
			o := opts("v", "pv")
			o.UID, o.GID, o.Mode = tc.uid, tc.gid, tc.mode
			if err := Create(r, o); err != nil {
				t.Fatal(err)
			}
			st := statT(t, filepath.Join(dir, "v"))
			if st.Uid != tc.wantUID || st.Gid != tc.wantGID {
				t.Errorf("owner = %d:%d, want %d:%d", st.Uid, st.Gid, tc.wantUID, tc.wantGID)
			}
			if got := modeBits(t, filepath.Join(dir, "v")); got != tc.mode {
				t.Errorf("mode = %v, want %v (chown must not clear set-id bits)", got, tc.mode)
			}
			// The marker stays the provisioner's.
			if st := statT(t, filepath.Join(dir, ".v.dirpv")); st.Uid != 0 {
				t.Errorf("marker owned by %d", st.Uid)
			}
		})
	}
}

func TestCreateMarker(t *testing.T) {
	r, dir, _ := testRoot(t)
	o := opts("team/claim", "pvc-123")
	if err := Create(r, o); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "team/.claim.dirpv")
	if got := markerOnDisk(t, mp); got != o.Owner {
		t.Errorf("marker = %+v, want %+v", got, o.Owner)
	}
	if got := modeBits(t, mp); got != 0o600 {
		t.Errorf("marker mode = %v, want 0600", got)
	}
	if fi, _ := os.Lstat(mp); !fi.Mode().IsRegular() {
		t.Errorf("marker is %v", fi.Mode())
	}
	m, err := ReadMarker(r, "team/claim")
	if err != nil || m == nil || *m != o.Owner {
		t.Errorf("ReadMarker = %+v, %v; want %+v", m, err, o.Owner)
	}
	// The volume itself is empty: initdb and friends want that.
	assertNames(t, filepath.Join(dir, "team/claim"))
	assertNoTempFiles(t, dir)
}

func TestCreateRetrySamePV(t *testing.T) {
	r, dir, _ := testRoot(t)
	vol := filepath.Join(dir, "v")
	o := opts("v", "pv1")
	o.Mode = 0o750
	if err := Create(r, o); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vol, "data"), "tenant data", 0o644)
	if err := os.Chmod(vol, 0o700); err != nil {
		t.Fatal(err)
	}
	o.Mode = 0o770 | fs.ModeSetgid
	o.Owner.ClaimName = "changed" // the marker is not rewritten by a retry
	if err := Create(r, o); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := modeBits(t, vol); got != o.Mode {
		t.Errorf("mode after retry = %v, want %v", got, o.Mode)
	}
	assertFile(t, filepath.Join(vol, "data"), "tenant data")
	if m := markerOnDisk(t, filepath.Join(dir, ".v.dirpv")); m != owner("pv1") {
		t.Errorf("marker rewritten: %+v", m)
	}
	assertNoTempFiles(t, dir)
}

func TestCreateRetryAfterCrash(t *testing.T) {
	// A Create that died between marker and mkdir leaves just our marker.
	r, dir, _ := testRoot(t)
	writeFile(t, filepath.Join(dir, "a/.v.dirpv"), `{"pv":"pv1"}`, 0o600)
	o := opts("a/v", "pv1")
	o.Mode = 0o751
	if err := Create(r, o); err != nil {
		t.Fatal(err)
	}
	if got := modeBits(t, filepath.Join(dir, "a/v")); got != 0o751 {
		t.Errorf("mode = %v", got)
	}
	// Another PV still cannot have it.
	if err := Create(r, opts("a/v", "pv2")); !errors.Is(err, ErrNotOwner) {
		t.Errorf("other PV: err = %v, want ErrNotOwner", err)
	}
}

func TestCreateConflicts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, r fsys.Dir, dir, outside string)
		path    string
		wantErr error // nil: any error
		check   func(t *testing.T, dir, outside string)
	}{{
		name: "other PV",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) {
			mustCreate(t, r, "v", "pv-other")
			writeFile(t, dir+"/v/data", "x", 0o644)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, _ string) {
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m.PV != "pv-other" {
				t.Errorf("marker changed: %+v", m)
			}
			if got := modeBits(t, dir+"/v"); got != 0o777 {
				t.Errorf("mode changed: %v", got)
			}
			assertFile(t, dir+"/v/data", "x")
		},
	}, {
		name: "existing directory without marker",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) {
			writeFile(t, dir+"/v/data", "x", 0o644)
			os.Chmod(dir+"/v", 0o705)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, _ string) {
			assertGone(t, dir+"/.v.dirpv") // the marker we briefly created is gone
			if got := modeBits(t, dir+"/v"); got != 0o705 {
				t.Errorf("mode changed: %v", got)
			}
			assertNames(t, dir, "v")
			assertNames(t, dir+"/v", "data")
		},
	}, {
		name:    "existing file",
		setup:   func(t *testing.T, r fsys.Dir, dir, _ string) { writeFile(t, dir+"/v", "file", 0o640) },
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, _ string) {
			assertFile(t, dir+"/v", "file")
			assertNames(t, dir, "v")
		},
	}, {
		name:    "nested in a volume",
		setup:   func(t *testing.T, r fsys.Dir, dir, _ string) { mustCreate(t, r, "a", "pv-a") },
		path:    "a/b",
		wantErr: ErrNested,
		check: func(t *testing.T, dir, _ string) {
			assertNames(t, dir+"/a") // nothing created inside the tenant's volume
		},
	}, {
		name:    "deeply nested in a volume",
		setup:   func(t *testing.T, r fsys.Dir, dir, _ string) { mustCreate(t, r, "t/a", "pv-a") },
		path:    "t/a/x/y/z",
		wantErr: ErrNested,
		check:   func(t *testing.T, dir, _ string) { assertNames(t, dir+"/t/a") },
	}, {
		name: "nested under a tenant-made directory",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) {
			mustCreate(t, r, "a", "pv-a")
			writeFile(t, dir+"/a/x/.y.dirpv", `{"pv":"pv-new"}`, 0o600) // forged by the tenant
		},
		path:    "a/x/y",
		wantErr: ErrNested,
		check:   func(t *testing.T, dir, _ string) { assertNames(t, dir+"/a/x", ".y.dirpv") },
	}, {
		name:    "parent of a volume",
		setup:   func(t *testing.T, r fsys.Dir, dir, _ string) { mustCreate(t, r, "a/b", "pv-b") },
		path:    "a",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, _ string) {
			assertNames(t, dir, "a")
			assertNames(t, dir+"/a", "b", ".b.dirpv")
		},
	}, {
		name: "symlink to a directory outside the root",
		setup: func(t *testing.T, r fsys.Dir, dir, outside string) {
			os.Chmod(outside, 0o711)
			symlink(t, outside, dir+"/v")
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, outside string) {
			if got := modeBits(t, outside); got != 0o711 {
				t.Errorf("outside mode changed: %v", got)
			}
			assertNames(t, outside)
			assertNames(t, dir, "v")
		},
	}, {
		name: "relative symlink escaping the root",
		setup: func(t *testing.T, r fsys.Dir, dir, outside string) {
			os.Chmod(outside, 0o711)
			symlink(t, "../"+filepath.Base(outside), dir+"/v")
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, outside string) {
			if got := modeBits(t, outside); got != 0o711 {
				t.Errorf("outside mode changed: %v", got)
			}
			assertNames(t, outside)
		},
	}, {
		name: "symlink to a sibling directory",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) {
			os.Mkdir(dir+"/sib", 0o711)
			symlink(t, "sib", dir+"/v")
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, _ string) {
			if got := modeBits(t, dir+"/sib"); got != 0o711 {
				t.Errorf("sibling mode changed: %v", got)
			}
			assertNames(t, dir, "sib", "v")
			assertNames(t, dir+"/sib")
		},
	}, {
		name: "symlink to a sibling volume",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) {
			o := opts("w", "pv-w")
			o.Mode = 0o700
			if err := Create(r, o); err != nil {
				t.Fatal(err)
			}
			symlink(t, "w", dir+"/v")
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir, _ string) {
			if got := modeBits(t, dir+"/w"); got != 0o700 {
				t.Errorf("sibling volume mode changed: %v", got)
			}
			assertNames(t, dir, "v", "w", ".w.dirpv")
		},
	}, {
		name:    "dangling symlink",
		setup:   func(t *testing.T, r fsys.Dir, dir, _ string) { symlink(t, "later", dir+"/v") },
		path:    "v",
		wantErr: ErrNotOwner,
		check:   func(t *testing.T, dir, _ string) { assertNames(t, dir, "v") },
	}, {
		name:  "parent symlink to outside the root",
		setup: func(t *testing.T, r fsys.Dir, dir, outside string) { symlink(t, outside, dir+"/ln") },
		path:  "ln/v",
		check: func(t *testing.T, dir, outside string) {
			assertNames(t, outside)
			assertNames(t, dir, "ln")
		},
	}, {
		name:  "parent symlink to a missing directory outside the root",
		setup: func(t *testing.T, r fsys.Dir, dir, outside string) { symlink(t, outside+"/new", dir+"/ln") },
		path:  "ln/v",
		check: func(t *testing.T, dir, outside string) { assertNames(t, outside) },
	}, {
		name: "deeper parent symlink to outside the root",
		setup: func(t *testing.T, r fsys.Dir, dir, outside string) {
			os.Mkdir(dir+"/team", 0o755)
			symlink(t, "../../"+filepath.Base(outside), dir+"/team/ln")
		},
		path:  "team/ln/x/v",
		check: func(t *testing.T, dir, outside string) { assertNames(t, outside) },
	}, {
		name: "parent symlink inside the root",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) {
			os.Mkdir(dir+"/sib", 0o755)
			symlink(t, "sib", dir+"/ln")
		},
		path:  "ln/v",
		check: func(t *testing.T, dir, _ string) { assertNames(t, dir+"/sib") },
	}, {
		name:  "parent is a file",
		setup: func(t *testing.T, r fsys.Dir, dir, _ string) { writeFile(t, dir+"/f", "x", 0o644) },
		path:  "f/v",
		check: func(t *testing.T, dir, _ string) { assertFile(t, dir+"/f", "x") },
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, outer := testRoot(t)
			outside := filepath.Join(outer, "outside")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, r, dir, outside)
			err := Create(r, opts(tc.path, "pv-new"))
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			t.Logf("error: %v", err)
			tc.check(t, dir, outside)
			assertNames(t, outer, "root", "outside")
			assertNoTempFiles(t, outer)
		})
	}
}

// TestCreateConcurrent runs Create races with and without the in-process lock: without it,
// only the marker protocol (exclusive link, flock) arbitrates, as between two processes.
func TestCreateConcurrent(t *testing.T) {
	const n = 20
	for _, serial := range []bool{true, false} {
		for _, link := range []bool{true, false} {
			t.Run(fmt.Sprintf("inprocesslock=%v/hardlinks=%v", serial, link), func(t *testing.T) {
				setHook(t, &serializeInProcess, serial)
				if !link {
					setHook(t, &linkFile, func(fsys.Dir, string, string) error {
						return &os.LinkError{Op: "link", Err: syscall.EPERM}
					})
				}
				t.Run("different PVs", func(t *testing.T) {
					for range 5 {
						r, dir, _ := testRoot(t)
						errs := make([]error, n)
						var wg sync.WaitGroup
						for i := range n {
							wg.Go(func() { errs[i] = Create(r, opts("ns/v", fmt.Sprintf("pv-%d", i))) })
						}
						wg.Wait()
						winner := -1
						for i, err := range errs {
							switch {
							case err == nil && winner >= 0:
								t.Fatalf("both pv-%d and pv-%d got the volume", winner, i)
							case err == nil:
								winner = i
							case !errors.Is(err, ErrNotOwner):
								t.Errorf("pv-%d: %v, want ErrNotOwner", i, err)
							}
						}
						if winner < 0 {
							t.Fatal("nobody got the volume")
						}
						if m := markerOnDisk(t, filepath.Join(dir, "ns/.v.dirpv")); m.PV != fmt.Sprintf("pv-%d", winner) {
							t.Errorf("marker names %s, winner was pv-%d", m.PV, winner)
						}
						assertNames(t, filepath.Join(dir, "ns"), "v", ".v.dirpv")
					}
				})
				t.Run("same PV", func(t *testing.T) {
					for range 5 {
						r, dir, _ := testRoot(t)
						errs := make([]error, n)
						var wg sync.WaitGroup
						for i := range n {
							wg.Go(func() { errs[i] = Create(r, opts("ns/v", "pv")) })
						}
						wg.Wait()
						for i, err := range errs {
							if err != nil {
								t.Errorf("caller %d: %v", i, err)
							}
						}
						if m := markerOnDisk(t, filepath.Join(dir, "ns/.v.dirpv")); m.PV != "pv" {
							t.Errorf("marker = %+v", m)
						}
						if got := modeBits(t, filepath.Join(dir, "ns/v")); got != 0o777 {
							t.Errorf("mode = %v", got)
						}
						assertNames(t, filepath.Join(dir, "ns"), "v", ".v.dirpv")
					}
				})
			})
		}
	}
}

// TestCreateConcurrentNested races a volume against a volume inside it: they must never
// both succeed, and the outer volume, if created, must not contain anything of the other.
func TestCreateConcurrentNested(t *testing.T) {
	for i := range 100 {
		r, dir, _ := testRoot(t)
		var outer, inner error
		var wg sync.WaitGroup
		wg.Go(func() { outer = Create(r, opts("x", "pv-outer")) })
		wg.Go(func() { inner = Create(r, opts("x/y", "pv-inner")) })
		wg.Wait()
		if outer == nil && inner == nil {
			t.Fatalf("round %d: both volumes created", i)
		}
		if outer == nil {
			assertNames(t, filepath.Join(dir, "x"))
		}
		if inner == nil {
			assertGone(t, filepath.Join(dir, ".x.dirpv"))
		}
		for _, err := range []error{outer, inner} {
			if err != nil && !errors.Is(err, ErrNotOwner) && !errors.Is(err, ErrNested) {
				t.Errorf("round %d: unexpected error %v", i, err)
			}
		}
		// Whoever lost can succeed on a clean retry once the other is gone, or is refused
		// for the right reason.
		if outer != nil && inner != nil {
			if err := Create(r, opts("x", "pv-outer")); err != nil {
				t.Errorf("round %d: retry of outer after both failed: %v", i, err)
			}
		}
	}
}

// TestCreateWaitsForCreator simulates another process in the middle of creating the same
// volume (it holds the marker lock): a retry for the same PV must wait for it instead of
// making the directory itself, which would make that creator see EEXIST and give up.
func TestCreateWaitsForCreator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		finish func(t *testing.T, dir string) // what the other creator does before unlocking
		check  func(t *testing.T, dir string, err error)
	}{{
		name: "creator succeeds",
		finish: func(t *testing.T, dir string) {
			writeFile(t, dir+"/v/made-by-creator", "", 0o644)
		},
		check: func(t *testing.T, dir string, err error) {
			if err != nil {
				t.Fatal(err)
			}
			assertNames(t, dir+"/v", "made-by-creator")
			if got := modeBits(t, dir+"/v"); got != 0o777 {
				t.Errorf("mode = %v", got)
			}
		},
	}, {
		name: "creator gives up",
		finish: func(t *testing.T, dir string) {
			os.Remove(dir + "/.v.dirpv")
		},
		check: func(t *testing.T, dir string, err error) {
			if err != nil {
				t.Fatal(err)
			}
			assertNames(t, dir, "v", ".v.dirpv")
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m.PV != "pv" {
				t.Errorf("marker = %+v", m)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			setHook(t, &serializeInProcess, false)
			r, dir, _ := testRoot(t)
			writeFile(t, dir+"/.v.dirpv", `{"pv":"pv"}`, 0o600)
			lock, err := os.OpenFile(dir+"/.v.dirpv", os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer lock.Close()
			if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- Create(r, opts("v", "pv")) }()
			select {
			case err := <-done:
				t.Fatalf("Create did not wait for the marker lock: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
			assertGone(t, dir+"/v") // it must not have made the directory meanwhile
			if tc.name == "creator succeeds" {
				os.Mkdir(dir+"/v", 0o700)
			}
			tc.finish(t, dir)
			unix.Flock(int(lock.Fd()), unix.LOCK_UN)
			select {
			case err := <-done:
				tc.check(t, dir, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Create still blocked after unlock")
			}
		})
	}
}

func TestCreateWithoutHardLinks(t *testing.T) {
	setHook(t, &linkFile, func(fsys.Dir, string, string) error {
		return &os.LinkError{Op: "link", Err: syscall.EPERM}
	})
	r, dir, _ := testRoot(t)
	if err := Create(r, opts("a/v", "pv1")); err != nil {
		t.Fatal(err)
	}
	if m := markerOnDisk(t, filepath.Join(dir, "a/.v.dirpv")); m != owner("pv1") {
		t.Errorf("marker = %+v", m)
	}
	if err := Create(r, opts("a/v", "pv2")); !errors.Is(err, ErrNotOwner) {
		t.Errorf("other PV: %v", err)
	}
	if err := Create(r, opts("a/v", "pv1")); err != nil {
		t.Errorf("retry: %v", err)
	}
	assertNames(t, filepath.Join(dir, "a"), "v", ".v.dirpv")
}

func TestCreateEmptyMarkerIsNotAdopted(t *testing.T) {
	// An empty marker (a creator without hard links died before writing) is not ours.
	r, dir, _ := testRoot(t)
	writeFile(t, dir+"/.v.dirpv", "", 0o600)
	if err := Create(r, opts("v", "pv")); err == nil {
		t.Fatal("Create adopted an empty marker")
	}
	assertNames(t, dir, ".v.dirpv")
}

// TestCreateRaces makes the races of Create deterministic with raceHook.
func TestCreateRaces(t *testing.T) {
	t.Run("volume created at a parent while we make it", func(t *testing.T) {
		// Another creator publishes the marker of "x" just after we made directory "x" as
		// a parent of "x/y": we must back off and take our directory back, so that its
		// Mkdir succeeds.
		r, dir, _ := testRoot(t)
		setHook(t, &raceHook, func(point, p string) {
			if point == "parent-mkdir" && p == "x" {
				writeFile(t, dir+"/.x.dirpv", `{"pv":"pv-outer"}`, 0o600)
			}
		})
		if err := Create(r, opts("x/y", "pv-inner")); !errors.Is(err, ErrNested) {
			t.Fatalf("err = %v, want ErrNested", err)
		}
		assertNames(t, dir, ".x.dirpv")
	})
	t.Run("parent with a marker but no directory yet", func(t *testing.T) {
		// A creator of "x" is between marker and mkdir: we must not make "x" at all.
		r, dir, _ := testRoot(t)
		writeFile(t, dir+"/.x.dirpv", `{"pv":"pv-outer"}`, 0o600)
		setHook(t, &raceHook, func(point, p string) {
			if point == "parent-mkdir" {
				t.Errorf("made parent %q of a volume in creation", p)
			}
		})
		if err := Create(r, opts("x/y", "pv-inner")); !errors.Is(err, ErrNested) {
			t.Fatalf("err = %v, want ErrNested", err)
		}
		assertNames(t, dir, ".x.dirpv")
	})
	t.Run("directory appears during a retry", func(t *testing.T) {
		// Our marker, no directory; someone else's directory shows up before our mkdir
		// (e.g. a parent being made for a path below it): not adopted.
		r, dir, _ := testRoot(t)
		writeFile(t, dir+"/.v.dirpv", `{"pv":"pv"}`, 0o600)
		setHook(t, &raceHook, func(point, p string) {
			if point == "retry-mkdir" {
				os.Mkdir(dir+"/v", 0o705)
			}
		})
		if err := Create(r, opts("v", "pv")); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("err = %v, want ErrNotOwner", err)
		}
		if got := modeBits(t, dir+"/v"); got != 0o705 {
			t.Errorf("foreign directory's mode changed to %v", got)
		}
	})
}

// lateMkdir is a directory whose Mkdir gets no answer (err) although the server goes on to make
// the directory: the call timed out, or its connection was lost after it was sent.
type lateMkdir struct {
	fsys.Dir
	err error
}

func (d lateMkdir) Mkdir(name string, mode fs.FileMode) error {
	if err := d.Dir.Mkdir(name, mode); err != nil {
		return err
	}
	return d.err
}

func (d lateMkdir) OpenDir(name string, want fsys.ID) (fsys.Dir, error) {
	sub, err := d.Dir.OpenDir(name, want)
	if err != nil {
		return nil, err
	}
	return lateMkdir{sub, d.err}, nil
}

// TestCreateMkdirWithoutAnswer: a mkdir whose outcome is unknown keeps the marker, so that the
// same PV's retry takes over the directory the server made after all.
func TestCreateMkdirWithoutAnswer(t *testing.T) {
	for _, noAnswer := range []error{context.DeadlineExceeded, fmt.Errorf("MKDIR: %w", fsys.ErrNoAnswer)} {
		t.Run(noAnswer.Error(), func(t *testing.T) {
			r, dir, _ := testRoot(t)
			if err := Create(lateMkdir{r, noAnswer}, opts("v", "pv")); !errors.Is(err, noAnswer) {
				t.Fatalf("Create without an answer: %v", err)
			}
			mustCreate(t, r, "v", "pv")
			assertNames(t, dir, "v", ".v.dirpv")
		})
	}
}
