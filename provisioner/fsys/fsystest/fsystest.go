// Package fsystest checks that an fsys.Dir implementation keeps the package's promises, against
// the real directory it serves: every implementation runs the same cases.
package fsystest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
)

// Open opens, as the implementation under test, the directory that is dir on this machine.
type Open func(t *testing.T, dir string) fsys.Dir

// Run runs every case on a fresh directory made with t.TempDir.
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, d fsys.Dir, dir string)
	}{
		{"LstatNeverFollows", lstatNeverFollows},
		{"OpenDirRefusesNonDirectories", openDirRefuses},
		{"OpenDirChecksIdentity", openDirChecksIdentity},
		{"OpenDirParent", openDirParent},
		{"CreateIsExclusive", createIsExclusive},
		{"OpenFileRegularOnly", openFileRegularOnly},
		{"LinkAndRename", linkAndRename},
		{"UnlinkAndRmdir", unlinkAndRmdir},
		{"ModeAndOwner", modeAndOwner},
		{"EachName", eachName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := open(t, dir)
			t.Cleanup(func() { d.Close() })
			tc.fn(t, d, dir)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErrno(t *testing.T, what string, err error, want ...syscall.Errno) {
	t.Helper()
	for _, e := range want {
		if errors.Is(err, e) {
			return
		}
	}
	t.Errorf("%s: %v, want one of %v", what, err, want)
}

func lstatNeverFollows(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	must(t, os.Symlink("sub", filepath.Join(dir, "link")))
	must(t, os.WriteFile(filepath.Join(dir, "file"), []byte("abc"), 0o644))
	for name, want := range map[string]fs.FileMode{"sub": fs.ModeDir, "link": fs.ModeSymlink, "file": 0} {
		info, err := d.Lstat(name)
		if err != nil || info.Type != want {
			t.Errorf("Lstat(%s) = %+v, %v; want type %v", name, info, err, want)
		}
	}
	if info, _ := d.Lstat("file"); info.Size != 3 || info.Mode != 0o644 {
		t.Errorf("Lstat(file) = %+v", info)
	}
	_, err := d.Lstat("missing")
	wantErrno(t, "Lstat(missing)", err, syscall.ENOENT)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat(missing) = %v, not fs.ErrNotExist", err)
	}
}

func openDirRefuses(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	must(t, os.Symlink("sub", filepath.Join(dir, "link")))
	must(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	_, err := d.OpenDir("link", fsys.ID{})
	wantErrno(t, "OpenDir(link)", err, syscall.ELOOP, syscall.ENOTDIR)
	_, err = d.OpenDir("file", fsys.ID{})
	wantErrno(t, "OpenDir(file)", err, syscall.ENOTDIR)
	_, err = d.OpenDir("missing", fsys.ID{})
	wantErrno(t, "OpenDir(missing)", err, syscall.ENOENT)
}

func openDirChecksIdentity(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.Mkdir(filepath.Join(dir, "a"), 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "b"), 0o755))
	a, err := d.Lstat("a")
	must(t, err)
	sub, err := d.OpenDir("a", a.ID)
	must(t, err)
	sub.Close()
	if _, err := d.OpenDir("b", a.ID); !errors.Is(err, fsys.ErrChanged) {
		t.Errorf("OpenDir(b, id of a) = %v, want ErrChanged", err)
	}
	// A directory without permissions is opened all the same (u+rwx is added where that is
	// what it takes), and can be worked in.
	must(t, os.Chmod(filepath.Join(dir, "b"), 0o000))
	sub, err = d.OpenDir("b", fsys.ID{})
	must(t, err)
	defer sub.Close()
	must(t, sub.Mkdir("inside", 0o755))
}

func openDirParent(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	top, err := d.Stat()
	must(t, err)
	a, err := d.OpenDir("a", fsys.ID{})
	must(t, err)
	defer a.Close()
	up, err := a.OpenDir("..", top.ID)
	must(t, err)
	up.Close()
	again, err := a.OpenDir(".", fsys.ID{})
	must(t, err)
	must(t, again.Mkdir("made-through-dot", 0o755))
	again.Close()
	if _, err := os.Stat(filepath.Join(dir, "a", "made-through-dot")); err != nil {
		t.Errorf(`a.OpenDir("."): %v`, err)
	}
	b, err := a.OpenDir("b", fsys.ID{})
	must(t, err)
	defer b.Close()
	if _, err := b.OpenDir("..", top.ID); !errors.Is(err, fsys.ErrChanged) {
		t.Errorf(`b.OpenDir("..", id of the top) = %v, want ErrChanged`, err)
	}
	if d.Mount() != 0 && a.Mount() != d.Mount() {
		t.Errorf("mount of a subdirectory %d, of the top %d", a.Mount(), d.Mount())
	}
}

func createIsExclusive(t *testing.T, d fsys.Dir, dir string) {
	f, err := d.Create("m", 0o600)
	must(t, err)
	must(t, f.Lock())
	if _, err := f.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	must(t, f.Sync())
	info, err := f.Stat()
	must(t, err)
	must(t, f.Close())
	if got, err := os.ReadFile(filepath.Join(dir, "m")); err != nil || string(got) != "hello\n" || info.Size != 6 {
		t.Errorf("m = %q, %v; size %d", got, err, info.Size)
	}
	_, err = d.Create("m", 0o600)
	wantErrno(t, "Create(m) again", err, syscall.EEXIST)
	must(t, os.Symlink("elsewhere", filepath.Join(dir, "link")))
	_, err = d.Create("link", 0o600)
	wantErrno(t, "Create(link)", err, syscall.EEXIST)
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Create through a symlink made its target: %v", err)
	}
}

func openFileRegularOnly(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.WriteFile(filepath.Join(dir, "file"), []byte("content"), 0o644))
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(t, os.Symlink("file", filepath.Join(dir, "link")))
	f, err := d.OpenFile("file", false)
	must(t, err)
	buf := make([]byte, 16)
	n, _ := f.ReadAt(buf, 0)
	if string(buf[:n]) != "content" {
		t.Errorf("read %q", buf[:n])
	}
	f.Close()
	for _, name := range []string{"fifo", "link"} {
		if f, err := d.OpenFile(name, true); err == nil {
			f.Close()
			t.Errorf("OpenFile(%s) succeeded", name)
		}
	}
}

func linkAndRename(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "taken"), []byte("t"), 0o644))
	must(t, d.Link("a", "b"))
	if info, err := d.Lstat("a"); err != nil || info.Nlink != 2 {
		t.Errorf("Lstat(a) after Link = %+v, %v", info, err)
	}
	wantErrno(t, "Link onto a taken name", d.Link("a", "taken"), syscall.EEXIST)
	err := d.Rename("b", "taken", true)
	if !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EINVAL) {
		wantErrno(t, "Rename onto a taken name without replacing", err, syscall.EEXIST)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "taken")); string(got) != "t" {
		t.Errorf("taken = %q after a no-replace rename", got)
	}
	must(t, d.Rename("b", "c", false))
	if _, err := os.Lstat(filepath.Join(dir, "c")); err != nil {
		t.Error(err)
	}
	must(t, d.Rename("c", "taken", false))
	if got, _ := os.ReadFile(filepath.Join(dir, "taken")); string(got) != "a" {
		t.Errorf("taken = %q after a replacing rename", got)
	}
}

func unlinkAndRmdir(t *testing.T, d fsys.Dir, dir string) {
	must(t, os.MkdirAll(filepath.Join(dir, "full", "x"), 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755))
	must(t, os.Symlink("full", filepath.Join(dir, "link")))
	wantErrno(t, "Unlink(empty)", d.Unlink("empty"), syscall.EISDIR)
	must(t, d.Unlink("link"))
	if _, err := os.Lstat(filepath.Join(dir, "full", "x")); err != nil {
		t.Errorf("Unlink of a symlink touched its target: %v", err)
	}
	wantErrno(t, "Rmdir(full)", d.Rmdir("full"), syscall.ENOTEMPTY, syscall.EEXIST)
	must(t, d.Rmdir("empty"))
	wantErrno(t, "Unlink(missing)", d.Unlink("missing"), syscall.ENOENT)
}

func modeAndOwner(t *testing.T, d fsys.Dir, dir string) {
	must(t, d.Mkdir("v", 0o700))
	sub, err := d.OpenDir("v", fsys.ID{})
	must(t, err)
	defer sub.Close()
	if os.Getuid() == 0 {
		must(t, sub.Chown(1000, 2000))
	}
	mode := fs.ModeSetgid | fs.ModeSticky | 0o770
	must(t, sub.Chmod(mode))
	info, err := sub.Stat()
	must(t, err)
	if info.Mode != mode || !info.IsDir() {
		t.Errorf("Stat after Chmod(%v) = %+v", mode, info)
	}
	if os.Getuid() == 0 && (info.UID != 1000 || info.GID != 2000) {
		t.Errorf("owner %d:%d after Chown(1000, 2000)", info.UID, info.GID)
	}
	must(t, sub.Sync())
}

func eachName(t *testing.T, d fsys.Dir, dir string) {
	const n = 1000
	for i := range n {
		must(t, os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), nil, 0o644))
	}
	seen := 0
	// Removing entries while reading must still see every one of them.
	must(t, d.EachName(func(name string) {
		seen++
		must(t, d.Unlink(name))
	}))
	left, _ := os.ReadDir(dir)
	if seen != n || len(left) != 0 {
		t.Errorf("EachName saw %d of %d entries; %d left", seen, n, len(left))
	}
}
