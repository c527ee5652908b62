package volumefs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"dirpv.io/dirpv/provisioner/fsys"
)

// archiveNow is 02:04:05 UTC; the zone checks that names use UTC.
var archiveNow = time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))

const archiveStamp = "20240102T020405Z"

// archiveModes runs f with renameat2(RENAME_NOREPLACE) and with the fallback used where
// it is unsupported (NFS).
func archiveModes(t *testing.T, f func(t *testing.T)) {
	t.Run("renameat2", f)
	t.Run("fallback", func(t *testing.T) {
		calls := 0
		setHook(t, &renameFile, func(d fsys.Dir, oldname, newname string, noReplace bool) error {
			if !noReplace {
				return d.Rename(oldname, newname, false)
			}
			calls++
			return syscall.EINVAL
		})
		f(t)
		if calls == 0 {
			t.Error("fallback hook was never called")
		}
	})
}

func TestArchive(t *testing.T) {
	archiveModes(t, func(t *testing.T) {
		for _, tc := range []struct{ path, want string }{
			{"v", "archived-v-" + archiveStamp},
			{"team/ns/v", "team/ns/archived-v-" + archiveStamp},
		} {
			r, dir, _ := testRoot(t)
			o := opts(tc.path, "pv")
			o.Mode = 0o750 | fs.ModeSetgid
			if err := Create(r, o); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, tc.path, "sub/data"), "tenant data", 0o600)
			symlink(t, "/", filepath.Join(dir, tc.path, "slash"))

			got, err := Archive(r, tc.path, own("pv"), archiveNow)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Archive(%q) = %q, want %q", tc.path, got, tc.want)
			}
			assertGone(t, filepath.Join(dir, tc.path))
			assertGone(t, filepath.Join(dir, MarkerName(tc.path)))
			assertFile(t, filepath.Join(dir, tc.want, "sub/data"), "tenant data")
			if l, err := os.Readlink(filepath.Join(dir, tc.want, "slash")); err != nil || l != "/" {
				t.Errorf("symlink in archive: %q %v", l, err)
			}
			want := owner("pv")
			want.Released = "archived from " + filepath.Base(tc.path) + " at " + archiveNow.UTC().Format(time.RFC3339)
			if m := markerOnDisk(t, filepath.Join(dir, MarkerName(tc.want))); m != want {
				t.Errorf("archive marker = %+v, want %+v", m, want)
			}
			if got := modeBits(t, filepath.Join(dir, tc.want)); got != o.Mode {
				t.Errorf("archive mode = %v", got)
			}
			if m, err := ReadMarker(r, tc.want); err != nil || m == nil || m.PV != "pv" {
				t.Errorf("ReadMarker(archive) = %+v, %v", m, err)
			}
			assertNames(t, filepath.Join(dir, filepath.Dir(tc.path)), filepath.Base(tc.want), "."+filepath.Base(tc.want)+".dirpv")
			// A new volume of another PV can take the old name; the archive stays the old PV's.
			mustCreate(t, r, tc.path, "pv2")
			if err := Delete(r, tc.want, own("pv2")); !errors.Is(err, ErrNotOwner) {
				t.Errorf("other PV deleting the archive: %v", err)
			}
			// Nor can the old PV, or a later PV of the same name: the archive is the operator's.
			if err := Delete(r, tc.want, own("pv")); !errors.Is(err, ErrReleased) {
				t.Errorf("deleting the archive through its PV: %v, want ErrReleased", err)
			}
			assertExists(t, filepath.Join(dir, tc.want, "slash"))
		}
	})
}

func TestArchiveNameTaken(t *testing.T) {
	archiveModes(t, func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			taken func(t *testing.T, r fsys.Dir, dir string) // occupy "archived-v-<stamp>"
			check func(t *testing.T, dir string)             // the occupant is untouched
		}{{
			name: "earlier archive",
			taken: func(t *testing.T, r fsys.Dir, dir string) {
				mustCreate(t, r, "v", "pv-old")
				writeFile(t, dir+"/v/data", "old", 0o644)
				if got, err := Archive(r, "v", own("pv-old"), archiveNow); err != nil || got != "archived-v-"+archiveStamp {
					t.Fatalf("first archive: %q %v", got, err)
				}
			},
			check: func(t *testing.T, dir string) {
				assertFile(t, dir+"/archived-v-"+archiveStamp+"/data", "old")
				if m := markerOnDisk(t, dir+"/.archived-v-"+archiveStamp+".dirpv"); m.PV != "pv-old" {
					t.Errorf("first archive's marker = %+v", m)
				}
			},
		}, {
			// The case plain rename(2) would silently replace.
			name: "empty directory",
			taken: func(t *testing.T, r fsys.Dir, dir string) {
				os.Mkdir(dir+"/archived-v-"+archiveStamp, 0o700)
			},
			check: func(t *testing.T, dir string) {
				assertNames(t, dir+"/archived-v-"+archiveStamp)
				if got := modeBits(t, dir+"/archived-v-"+archiveStamp); got != 0o700 {
					t.Errorf("occupant mode = %v", got)
				}
				assertGone(t, dir+"/.archived-v-"+archiveStamp+".dirpv") // reservation dropped
			},
		}, {
			name: "file",
			taken: func(t *testing.T, r fsys.Dir, dir string) {
				writeFile(t, dir+"/archived-v-"+archiveStamp, "file", 0o644)
			},
			check: func(t *testing.T, dir string) {
				assertFile(t, dir+"/archived-v-"+archiveStamp, "file")
				assertGone(t, dir+"/.archived-v-"+archiveStamp+".dirpv")
			},
		}, {
			name: "symlink",
			taken: func(t *testing.T, r fsys.Dir, dir string) {
				symlink(t, "elsewhere", dir+"/archived-v-"+archiveStamp)
			},
			check: func(t *testing.T, dir string) {
				if l, err := os.Readlink(dir + "/archived-v-" + archiveStamp); l != "elsewhere" {
					t.Errorf("occupant link = %q %v", l, err)
				}
				assertGone(t, dir+"/elsewhere")
			},
		}, {
			name: "marker only",
			taken: func(t *testing.T, r fsys.Dir, dir string) {
				writeFile(t, dir+"/.archived-v-"+archiveStamp+".dirpv", `{"pv":"reserved"}`, 0o600)
			},
			check: func(t *testing.T, dir string) {
				assertGone(t, dir+"/archived-v-"+archiveStamp)
				if m := markerOnDisk(t, dir+"/.archived-v-"+archiveStamp+".dirpv"); m.PV != "reserved" {
					t.Errorf("reservation = %+v", m)
				}
			},
		}} {
			t.Run(tc.name, func(t *testing.T) {
				r, dir, _ := testRoot(t)
				tc.taken(t, r, dir)
				mustCreate(t, r, "v", "pv")
				writeFile(t, dir+"/v/data", "new", 0o644)

				got, err := Archive(r, "v", own("pv"), archiveNow)
				if err != nil {
					t.Fatal(err)
				}
				if want := "archived-v-" + archiveStamp + "-2"; got != want {
					t.Errorf("Archive = %q, want %q", got, want)
				}
				assertFile(t, dir+"/"+got+"/data", "new")
				if m := markerOnDisk(t, filepath.Join(dir, MarkerName(got))); m.PV != "pv" {
					t.Errorf("marker = %+v", m)
				}
				assertGone(t, dir+"/v")
				assertGone(t, dir+"/.v.dirpv")
				tc.check(t, dir)

				// And the next one gets -3.
				mustCreate(t, r, "v", "pv3")
				if got, err := Archive(r, "v", own("pv3"), archiveNow); err != nil || got != "archived-v-"+archiveStamp+"-3" {
					t.Errorf("third archive = %q, %v", got, err)
				}
				assertNoTempFiles(t, dir)
			})
		}
	})
}

func TestArchiveRefusesOrSkips(t *testing.T) {
	cases := append([]refusal{{
		name:  "gone",
		setup: func(t *testing.T, r fsys.Dir, dir string) {},
		path:  "v",
		check: func(t *testing.T, dir string) { assertNames(t, dir) },
	}, {
		name:  "only our marker left",
		setup: func(t *testing.T, r fsys.Dir, dir string) { writeFile(t, dir+"/.v.dirpv", `{"pv":"pv"}`, 0o600) },
		path:  "v",
		check: func(t *testing.T, dir string) { assertNames(t, dir) },
	}}, notOurs()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.setup(t, r, dir)
			got, err := Archive(r, tc.path, own("pv"), archiveNow)
			switch {
			case got != "":
				t.Errorf("Archive = %q, %v; want no archive", got, err)
			case tc.wantErr == nil && err != nil:
				t.Errorf("Archive: %v", err)
			case tc.wantErr == errAny && err == nil:
				t.Error("Archive succeeded")
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Errorf("Archive: err = %v, want %v", err, tc.wantErr)
			}
			tc.check(t, dir)
		})
	}
}

func TestReadMarker(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, dir string)
		path    string
		want    *Marker
		wantErr error // errAny: some error
	}{{
		name:  "none",
		setup: func(t *testing.T, dir string) { os.Mkdir(dir+"/v", 0o755) },
		path:  "v",
	}, {
		name:  "parent missing",
		setup: func(t *testing.T, dir string) {},
		path:  "a/b/v",
	}, {
		name: "present",
		setup: func(t *testing.T, dir string) {
			writeFile(t, dir+"/a/.v.dirpv", `{"pv":"p","claimName":"c","future":1}`, 0o600)
		},
		path: "a/v",
		want: &Marker{PV: "p", ClaimName: "c"},
	}, {
		name:    "corrupt",
		setup:   func(t *testing.T, dir string) { writeFile(t, dir+"/.v.dirpv", "not json", 0o600) },
		path:    "v",
		wantErr: ErrNotOwner,
	}, {
		name:    "no PV",
		setup:   func(t *testing.T, dir string) { writeFile(t, dir+"/.v.dirpv", `{"claimName":"c"}`, 0o600) },
		path:    "v",
		wantErr: ErrNotOwner,
	}, {
		name:    "empty",
		setup:   func(t *testing.T, dir string) { writeFile(t, dir+"/.v.dirpv", "", 0o600) },
		path:    "v",
		wantErr: errAny,
	}, {
		name: "symlink",
		setup: func(t *testing.T, dir string) {
			writeFile(t, dir+"/.w.dirpv", `{"pv":"p"}`, 0o600)
			symlink(t, ".w.dirpv", dir+"/.v.dirpv")
		},
		path:    "v",
		wantErr: ErrNotOwner,
	}, {
		name: "fifo",
		setup: func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(dir+"/.v.dirpv", 0o600); err != nil {
				t.Fatal(err)
			}
		},
		path:    "v",
		wantErr: ErrNotOwner,
	}, {
		name: "directory",
		setup: func(t *testing.T, dir string) {
			os.Mkdir(dir+"/.v.dirpv", 0o700)
		},
		path:    "v",
		wantErr: ErrNotOwner,
	}, {
		name: "parent symlink",
		setup: func(t *testing.T, dir string) {
			writeFile(t, dir+"/a/.v.dirpv", `{"pv":"p"}`, 0o600)
			symlink(t, "a", dir+"/b")
		},
		path:    "b/v",
		wantErr: errAny,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.setup(t, dir)
			type result struct {
				m   *Marker
				err error
			}
			done := make(chan result, 1)
			go func() { m, err := ReadMarker(r, tc.path); done <- result{m, err} }()
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ReadMarker blocked")
			}
			switch {
			case tc.wantErr == errAny:
				if res.err == nil {
					t.Errorf("ReadMarker = %+v, want an error", res.m)
				}
			case tc.wantErr != nil:
				if !errors.Is(res.err, tc.wantErr) {
					t.Errorf("ReadMarker err = %v, want %v", res.err, tc.wantErr)
				}
			case res.err != nil:
				t.Errorf("ReadMarker: %v", res.err)
			case (res.m == nil) != (tc.want == nil) || (res.m != nil && *res.m != *tc.want):
				t.Errorf("ReadMarker = %+v, want %+v", res.m, tc.want)
			}
			t.Logf("error: %v", res.err)
		})
	}
}
