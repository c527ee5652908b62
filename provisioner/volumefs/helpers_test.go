package volumefs

import (
	"bytes"
	"dirpv.io/dirpv/provisioner/fsys"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// testRoot makes <tmp>/root and opens it. It returns the root, its directory, and the
// directory above it (a place "outside the root" on the same filesystem).
func testRoot(t *testing.T) (fsys.Dir, string, string) {
	t.Helper()
	outer := t.TempDir()
	dir := filepath.Join(outer, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := fsys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir, outer
}

func owner(pv string) Marker {
	return Marker{PV: pv, ClaimUID: "uid-" + pv, ClaimNamespace: "ns", ClaimName: "claim-" + pv}
}

func opts(path, pv string) CreateOptions {
	return CreateOptions{Path: path, Mode: 0o777, UID: -1, GID: -1, Owner: owner(pv)}
}

func mustCreate(t *testing.T, r fsys.Dir, path, pv string) {
	t.Helper()
	if err := Create(r, opts(path, pv)); err != nil {
		t.Fatalf("Create(%q, %q): %v", path, pv, err)
	}
}

// modeBits is the permission and special bits of the thing at path, not following links.
func modeBits(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func assertNames(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := names(t, dir)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("entries of %s = %q, want %q", dir, got, want)
	}
}

func assertGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: want not to exist, Lstat err = %v", path, err)
	}
}

func assertExists(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("%s: want to exist: %v", path, err)
	}
}

func assertFile(t *testing.T, path, content string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if string(b) != content {
		t.Errorf("%s = %q, want %q", path, b, content)
	}
}

func writeFile(t *testing.T, path, content string, perm fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// markerOnDisk decodes the marker file directly, bypassing the package.
func markerOnDisk(t *testing.T, path string) Marker {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read marker: %v", err)
	}
	var m Marker
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("marker %s: %v (%q)", path, err, b)
	}
	return m
}

// assertNoTempFiles fails if a temporary marker file was left anywhere below dir.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), markerSuffix+".tmp-") {
			t.Errorf("temporary marker left behind: %s", p)
		}
		return nil
	})
}

// withUmask sets the process umask for the test (tests in this package are not parallel).
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// setHook replaces a package hook for the duration of the test.
func setHook[T any](t *testing.T, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

func statT(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// nonRootEnv carries the directory a child test process works in as nobody.
const nonRootEnv = "DIRPV_VOLUMEFS_NONROOT_DIR"

// asNonRoot runs run(t, dir) as the unprivileged owner of a fresh dir: directly when the test
// is not root, else (root ignores permissions) in a subprocess of the test binary running as
// nobody, which runs only the test named child; child must call nonRootChild with run.
func asNonRoot(t *testing.T, child string, run func(*testing.T, string)) {
	if os.Geteuid() != 0 {
		run(t, t.TempDir())
		return
	}
	const nobody = 65534
	base, err := os.MkdirTemp("", "volumefs-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary usually sits in a private build directory: copy it where nobody can run it.
	bin := filepath.Join(base, "volumefs.test")
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Skipf("cannot copy test binary: %v", err)
	}
	dir := filepath.Join(base, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+child+"$", "-test.v", "-test.count=1")
	cmd.Dir = base
	cmd.Env = append(os.Environ(), nonRootEnv+"="+dir, "HOME="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(nonRootOK)) {
		if err != nil && strings.Contains(err.Error(), "permission denied") {
			t.Skipf("cannot run the test binary as nobody (noexec /tmp?): %v", err)
		}
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// nonRootOK is what a child prints when run passed.
const nonRootOK = "NONROOT-CHILD-OK"

// nonRootChild is the body of a child test of asNonRoot; outside the subprocess it skips.
func nonRootChild(t *testing.T, run func(*testing.T, string)) {
	dir := os.Getenv(nonRootEnv)
	if dir == "" {
		t.Skip("helper process for a non-root test")
	}
	run(t, dir)
	if !t.Failed() {
		fmt.Println(nonRootOK)
	}
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// refusal is a volume layout an operation must refuse (wantErr; errAny: some other error) or,
// where wantErr is nil, skip as done; check then verifies that nothing was harmed.
type refusal struct {
	name    string
	setup   func(t *testing.T, r fsys.Dir, dir string)
	path    string
	wantErr error
	check   func(t *testing.T, dir string)
}

// noVolume are layouts without a volume directory of the PV "pv" to work in: Scrub and the
// limit operations refuse them (ErrMissing where it is not there) and leave them as they are.
func noVolume() []refusal {
	return []refusal{{
		name: "another PV's marker, no directory",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			writeFile(t, dir+"/.v.dirpv", `{"pv":"pv-other"}`, 0o600)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check:   func(t *testing.T, dir string) { assertNames(t, dir, ".v.dirpv") },
	}, {
		name:    "nothing there",
		setup:   func(t *testing.T, r fsys.Dir, dir string) {},
		path:    "v",
		wantErr: ErrMissing,
		check:   func(t *testing.T, dir string) { assertNames(t, dir) },
	}, {
		name:    "parent missing",
		setup:   func(t *testing.T, r fsys.Dir, dir string) {},
		path:    "a/b/v",
		wantErr: ErrMissing,
		check:   func(t *testing.T, dir string) { assertNames(t, dir) },
	}, {
		name: "our marker, directory missing",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "v", "pv")
			if err := os.Remove(dir + "/v"); err != nil {
				t.Fatal(err)
			}
		},
		path:    "v",
		wantErr: ErrMissing,
		check: func(t *testing.T, dir string) {
			// Neither recreated nor cleaned up: the PV is broken and someone must look.
			assertNames(t, dir, ".v.dirpv")
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m != owner("pv") {
				t.Errorf("marker = %+v", m)
			}
		},
	}, {
		name: "a file at the volume path",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			writeFile(t, dir+"/.v.dirpv", `{"pv":"pv"}`, 0o600)
			writeFile(t, dir+"/v", "file", 0o644)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check:   func(t *testing.T, dir string) { assertFile(t, dir+"/v", "file") },
	}}
}

// notOurs are layouts holding what is not the PV "pv"'s to touch: Delete, Archive and Scrub
// must all refuse them and leave them as they are.
func notOurs() []refusal {
	return []refusal{{
		name: "another PV's volume",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "v", "pv-other")
			writeFile(t, dir+"/v/data", "x", 0o644)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir string) {
			assertFile(t, dir+"/v/data", "x")
			assertNames(t, dir, "v", ".v.dirpv")
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m != owner("pv-other") {
				t.Errorf("marker = %+v", m)
			}
		},
	}, {
		name:    "no marker",
		setup:   func(t *testing.T, r fsys.Dir, dir string) { writeFile(t, dir+"/v/data", "x", 0o644) },
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir string) {
			assertFile(t, dir+"/v/data", "x")
			assertNames(t, dir, "v")
		},
	}, {
		name: "corrupt marker",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			writeFile(t, dir+"/v/data", "x", 0o644)
			writeFile(t, dir+"/.v.dirpv", `{"pv":`, 0o600)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check:   func(t *testing.T, dir string) { assertFile(t, dir+"/v/data", "x") },
	}, {
		name: "marker is a symlink to our marker",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			writeFile(t, dir+"/x/data", "x", 0o644)
			writeFile(t, dir+"/.y.dirpv", `{"pv":"pv"}`, 0o600)
			symlink(t, ".y.dirpv", dir+"/.x.dirpv")
		},
		path:    "x",
		wantErr: ErrNotOwner,
		check:   func(t *testing.T, dir string) { assertFile(t, dir+"/x/data", "x") },
	}, {
		name: "volume replaced by a symlink to a sibling",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "v", "pv")
			os.Remove(dir + "/v")
			mustCreate(t, r, "sib", "pv")
			writeFile(t, dir+"/sib/data", "x", 0o644)
			symlink(t, "sib", dir+"/v")
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir string) {
			assertFile(t, dir+"/sib/data", "x")
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m != owner("pv") {
				t.Errorf("marker = %+v", m)
			}
		},
	}, {
		name: "parent is a symlink",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "real/v", "pv")
			writeFile(t, dir+"/real/v/data", "x", 0o644)
			symlink(t, "real", dir+"/ln")
		},
		path: "ln/v",
		// Not ErrNotOwner, but an error: links in volume paths are never resolved.
		wantErr: errAny,
		check:   func(t *testing.T, dir string) { assertFile(t, dir+"/real/v/data", "x") },
	}, {
		// A tenant writes what looks like a volume and its marker inside its own volume "a";
		// a PV naming "a/x" must not get to it (nor could its tenant's data be "a/x"'s).
		name: "marker planted inside another volume",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "a", "pv-a")
			writeFile(t, dir+"/a/.x.dirpv", `{"pv":"pv"}`, 0o644)
			writeFile(t, dir+"/a/x/data", "x", 0o644)
		},
		path:    "a/x",
		wantErr: ErrNested,
		check: func(t *testing.T, dir string) {
			assertFile(t, dir+"/a/x/data", "x")
			assertFile(t, dir+"/a/.x.dirpv", `{"pv":"pv"}`)
		},
	}, {
		name: releasedCase,
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			mustCreate(t, r, "v", "pv")
			writeFile(t, dir+"/v/data", "x", 0o644)
			if err := Release(r, "v", own("pv"), "kept (onDelete: retain)"); err != nil {
				t.Fatal(err)
			}
		},
		path:    "v",
		wantErr: ErrReleased,
		check: func(t *testing.T, dir string) {
			assertFile(t, dir+"/v/data", "x")
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m.PV != "pv" || m.Released != "kept (onDelete: retain)" {
				t.Errorf("marker = %+v", m)
			}
		},
	}, {
		// The node was deleted and joined again: the volume was left behind when it went.
		name: "made on an earlier incarnation of the node",
		setup: func(t *testing.T, r fsys.Dir, dir string) {
			o := opts("v", "pv")
			o.Owner.NodeUID = "node-uid-old"
			if err := Create(r, o); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir+"/v/data", "x", 0o644)
		},
		path:    "v",
		wantErr: ErrNotOwner,
		check: func(t *testing.T, dir string) {
			assertFile(t, dir+"/v/data", "x")
			if m := markerOnDisk(t, dir+"/.v.dirpv"); m.NodeUID != "node-uid-old" || m.Released != "" {
				t.Errorf("marker = %+v", m)
			}
		},
	}}
}

// releasedCase names the notOurs case of a released volume (Release itself accepts it again).
const releasedCase = "released to the operator"

// own is the Owner of PV pv on a volume that is not node-local.
func own(pv string) Owner { return Owner{PV: pv} }
