package nfs3

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// env is a client mounted on a fresh export of a real server.
type env struct {
	srv  *testServer
	c    *Client
	root Handle
	dir  string // the export's backing directory on the server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	srv := startServer(t, testExport{Dir: dir})
	c, root := mountAs(t, srv, srv.config(), dir)
	return &env{srv: srv, c: c, root: root, dir: dir}
}

func mountAs(t *testing.T, srv *testServer, cfg Config, export string) (*Client, Handle) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	root, a, err := c.Mount(testCtx(t), export)
	if err != nil {
		t.Fatalf("mount %s: %v", export, err)
	}
	if a.Type != TypeDir {
		t.Fatalf("export root is a %v", a.Type)
	}
	return c, root
}

// testCtx bounds each test's calls: long enough for a busy machine, short
// enough that a hang fails the test instead of the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// subdir makes a directory for one subtest, over NFS.
func (e *env) subdir(t *testing.T) (Handle, string) {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	h, _, err := e.c.Mkdir(testCtx(t), e.root, name, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	return h, filepath.Join(e.dir, name)
}

func lstat(t *testing.T, path string) (fs.FileInfo, *syscall.Stat_t) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi, fi.Sys().(*syscall.Stat_t)
}

func wantErrno(t *testing.T, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want one matching %v (%s)", err, want, want.Error())
	}
	var e *Error
	if !errors.As(err, &e) || e.Server == "" || e.Op == "" {
		t.Fatalf("error %v is not an *Error naming server and procedure", err)
	}
}

func TestProcedures(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)

	t.Run("mkdir", func(t *testing.T) {
		dir, path := e.subdir(t)
		for _, tc := range []struct {
			name string
			mode fs.FileMode
		}{
			{"plain", 0o755},
			{"private", 0o700},
			{"setgid", fs.ModeSetgid | 0o775}, // ganesha drops it at MKDIR; Mkdir sets it again
			{"sticky", fs.ModeSticky | 0o777},
		} {
			t.Run(tc.name, func(t *testing.T) {
				mode := tc.mode
				h, a, err := e.c.Mkdir(ctx, dir, tc.name, mode)
				if err != nil {
					t.Fatal(err)
				}
				fi, st := lstat(t, filepath.Join(path, tc.name))
				if !fi.IsDir() || a.Type != TypeDir || a.FileID != st.Ino {
					t.Fatalf("server sees %v ino %d, client %+v", fi.Mode(), st.Ino, a)
				}
				if got := fi.Mode() &^ fs.ModeDir; got != mode {
					t.Fatalf("server mode %v, want %v", got, mode)
				}
				if a.Mode != fs.ModeDir|mode {
					t.Fatalf("returned mode %v, want %v", a.Mode, fs.ModeDir|mode)
				}
				if a2, err := e.c.Getattr(ctx, h); err != nil || a2.Mode != a.Mode {
					t.Fatalf("getattr: %+v, %v", a2, err)
				}
			})
		}
	})

	t.Run("create-write-read", func(t *testing.T) {
		dir, path := e.subdir(t)
		for i, how := range []CreateMode{Unchecked, Guarded, Exclusive} {
			name := fmt.Sprintf("file-%d", how)
			t.Run(name, func(t *testing.T) {
				h, a, err := e.c.Create(ctx, dir, name, 0o640, how, Verifier{byte(i + 1)})
				if err != nil {
					t.Fatal(err)
				}
				if a.Type != TypeRegular || a.Mode != 0o640 || a.Size != 0 {
					t.Fatalf("attrs %+v", a)
				}
				data := []byte("owner: " + name + "\n")
				wr, err := e.c.Write(ctx, h, 0, data, FileSync)
				if err != nil || wr.Count != len(data) || wr.Committed != FileSync {
					t.Fatalf("write: %+v, %v", wr, err)
				}
				got, err := e.c.ReadAll(ctx, h, 1<<10)
				if err != nil || string(got) != string(data) {
					t.Fatalf("read back %q, %v", got, err)
				}
				onServer, err := os.ReadFile(filepath.Join(path, name))
				if err != nil || string(onServer) != string(data) {
					t.Fatalf("server has %q, %v", onServer, err)
				}
				if fi, _ := lstat(t, filepath.Join(path, name)); fi.Mode() != 0o640 {
					t.Fatalf("server mode %v", fi.Mode())
				}
			})
		}
	})

	t.Run("large-unstable-write-commit", func(t *testing.T) {
		dir, path := e.subdir(t)
		h, _, err := e.c.Create(ctx, dir, "big", 0o644, Guarded, Verifier{})
		if err != nil {
			t.Fatal(err)
		}
		data := []byte(strings.Repeat("0123456789abcdef", 20000)) // 320 KB: several WRITEs
		wr, err := e.c.Write(ctx, h, 0, data, Unstable)
		if err != nil || wr.Count != len(data) {
			t.Fatalf("write: %+v, %v", wr, err)
		}
		v, err := e.c.Commit(ctx, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if v != wr.Verifier {
			t.Fatalf("commit verifier %x, write verifier %x (server restarted?)", v, wr.Verifier)
		}
		if onServer, err := os.ReadFile(filepath.Join(path, "big")); err != nil || string(onServer) != string(data) {
			t.Fatalf("server has %d bytes, %v", len(onServer), err)
		}
		part, eof, err := e.c.Read(ctx, h, uint64(len(data)-4), 100)
		if err != nil || string(part) != "cdef" || !eof {
			t.Fatalf("read tail: %q eof=%v %v", part, eof, err)
		}
		if _, err := e.c.ReadAll(ctx, h, 1000); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("ReadAll over its limit: %v", err)
		}
	})

	t.Run("create-conflicts", func(t *testing.T) {
		dir, path := e.subdir(t)
		if err := os.WriteFile(filepath.Join(path, "exists"), []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		v1, v2 := Verifier{1, 2, 3}, Verifier{9, 9, 9}
		for _, tc := range []struct {
			name string
			how  CreateMode
			verf Verifier
			want error
		}{
			{"guarded", Guarded, Verifier{}, syscall.EEXIST},
			{"exclusive", Exclusive, v1, syscall.EEXIST},
			{"unchecked", Unchecked, Verifier{}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, a, err := e.c.Create(ctx, dir, "exists", 0o644, tc.how, tc.verf)
				if tc.want != nil {
					wantErrno(t, err, tc.want.(syscall.Errno))
					return
				}
				if err != nil || a.Mode != 0o600 {
					t.Fatalf("unchecked create of an existing file: %+v, %v", a, err)
				}
			})
		}
		if data, _ := os.ReadFile(filepath.Join(path, "exists")); string(data) != "keep" {
			t.Fatalf("existing file changed to %q", data)
		}

		t.Run("exclusive-retransmit", func(t *testing.T) {
			// A repeated CREATE with the same verifier (as after a lost
			// reply) finds the file it made; another verifier does not.
			_, a1, err := e.c.create(ctx, dir, "excl", 0o644, Exclusive, v1)
			if err != nil {
				t.Fatal(err)
			}
			_, a2, err := e.c.create(ctx, dir, "excl", 0o644, Exclusive, v1)
			if err != nil {
				t.Fatalf("retransmitted exclusive create: %v", err)
			}
			if a1.FileID != a2.FileID {
				t.Fatalf("retransmit returned file %d, first create %d", a2.FileID, a1.FileID)
			}
			_, _, err = e.c.create(ctx, dir, "excl", 0o644, Exclusive, v2)
			wantErrno(t, err, syscall.EEXIST)
		})
		t.Run("exclusive-complete", func(t *testing.T) {
			// Create finishes with a SETATTR, after which the file is an
			// ordinary existing one, whatever the verifier.
			_, a, err := e.c.Create(ctx, dir, "excl2", 0o750, Exclusive, v1)
			if err != nil {
				t.Fatal(err)
			}
			if a.Mode != 0o750 {
				t.Fatalf("mode %v", a.Mode)
			}
			_, _, err = e.c.Create(ctx, dir, "excl2", 0o644, Exclusive, v1)
			wantErrno(t, err, syscall.EEXIST)
		})
	})

	t.Run("setattr", func(t *testing.T) {
		dir, path := e.subdir(t)
		fh, _, err := e.c.Create(ctx, dir, "f", 0o644, Guarded, Verifier{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.c.Write(ctx, fh, 0, []byte("0123456789"), FileSync); err != nil {
			t.Fatal(err)
		}
		dh, _, err := e.c.Mkdir(ctx, dir, "d", 0o755)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name  string
			h     Handle
			file  string
			set   SetAttr
			check func(fs.FileInfo, *syscall.Stat_t) error
		}{
			{"dir-mode-setgid", dh, "d", SetAttr{Mode: new(fs.ModeSetgid | 0o770)},
				func(fi fs.FileInfo, _ *syscall.Stat_t) error {
					return wantEq("mode", fi.Mode(), fs.ModeDir|fs.ModeSetgid|0o770)
				}},
			{"dir-chown", dh, "d", SetAttr{UID: new(uint32(1000)), GID: new(uint32(2000))},
				func(_ fs.FileInfo, st *syscall.Stat_t) error {
					return wantEq("uid:gid", [2]uint32{st.Uid, st.Gid}, [2]uint32{1000, 2000})
				}},
			{"file-gid-only", fh, "f", SetAttr{GID: new(uint32(3000))},
				func(_ fs.FileInfo, st *syscall.Stat_t) error {
					return wantEq("uid:gid", [2]uint32{st.Uid, st.Gid}, [2]uint32{0, 3000})
				}},
			{"file-truncate", fh, "f", SetAttr{Size: new(uint64(3))},
				func(fi fs.FileInfo, _ *syscall.Stat_t) error { return wantEq("size", fi.Size(), int64(3)) }},
			{"file-mode", fh, "f", SetAttr{Mode: new(fs.FileMode(0o600))},
				func(fi fs.FileInfo, _ *syscall.Stat_t) error { return wantEq("mode", fi.Mode(), fs.FileMode(0o600)) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a, err := e.c.Setattr(ctx, tc.h, tc.set)
				if err != nil {
					t.Fatal(err)
				}
				fi, st := lstat(t, filepath.Join(path, tc.file))
				if err := tc.check(fi, st); err != nil {
					t.Fatalf("on the server: %v", err)
				}
				if a.Mode&^fs.ModeType != fi.Mode()&^fs.ModeType || a.UID != st.Uid || a.GID != st.Gid || a.Size != uint64(st.Size) {
					t.Fatalf("returned %+v, server has %v %d:%d size %d", a, fi.Mode(), st.Uid, st.Gid, st.Size)
				}
			})
		}
	})

	t.Run("readdirplus", func(t *testing.T) {
		dir, path := e.subdir(t)
		const n = 3000
		for i := range n {
			name := fmt.Sprintf("entry-with-a-longish-name-%05d", i)
			if err := os.WriteFile(filepath.Join(path, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(path, "a-dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("nowhere", filepath.Join(path, "a-link")); err != nil {
			t.Fatal(err)
		}

		pages, total := 0, 0
		l := e.c.newListing(dir, true)
		for {
			eof, err := l.page(ctx, func(DirEntry) { total++ })
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if eof {
				break
			}
		}
		if pages < 2 || total != n+2 {
			t.Fatalf("%d entries in %d pages, want %d in more than one", total, pages, n+2)
		}

		entries, err := e.c.ReadDirPlus(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		onServer, err := os.ReadDir(path)
		if err != nil {
			t.Fatal(err)
		}
		var want, got []string
		for _, de := range onServer {
			want = append(want, de.Name())
		}
		types := map[string]FileType{}
		for _, de := range entries {
			got = append(got, de.Name)
			types[de.Name] = de.Attr.Type
			_, st := lstat(t, filepath.Join(path, de.Name))
			if de.FileID != st.Ino || de.Attr.FileID != st.Ino || de.Handle.IsZero() {
				t.Fatalf("entry %q: fileid %d/%d, server ino %d, handle %v", de.Name, de.FileID, de.Attr.FileID, st.Ino, de.Handle)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("got %d names, server has %d (first: %v / %v)", len(got), len(want), got[:3], want[:3])
		}
		if types["a-dir"] != TypeDir || types["a-link"] != TypeSymlink || types["entry-with-a-longish-name-00000"] != TypeRegular {
			t.Fatalf("types: %v %v %v", types["a-dir"], types["a-link"], types["entry-with-a-longish-name-00000"])
		}

		names, err := e.c.ReadDirNames(ctx, dir) // READDIR: several pages too
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Fatalf("READDIR: got %d names, server has %d", len(names), len(want))
		}
	})

	t.Run("rename", func(t *testing.T) {
		dir, path := e.subdir(t)
		other, _, err := e.c.Mkdir(ctx, dir, "other", 0o755)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"a", "b", "victim"} {
			if _, _, err := e.c.Create(ctx, dir, name, 0o644, Guarded, Verifier{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			name           string
			to             Handle
			from, toName   string
			gone, appeared string
		}{
			{"same-dir", dir, "a", "a2", "a", "a2"},
			{"across-dirs", other, "b", "b", "b", "other/b"},
			{"replace", dir, "a2", "victim", "a2", "victim"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, before := lstat(t, filepath.Join(path, tc.from))
				if err := e.c.Rename(ctx, dir, tc.from, tc.to, tc.toName); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Lstat(filepath.Join(path, tc.gone)); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s still there: %v", tc.gone, err)
				}
				if _, after := lstat(t, filepath.Join(path, tc.appeared)); after.Ino != before.Ino {
					t.Fatalf("%s is inode %d, want %d", tc.appeared, after.Ino, before.Ino)
				}
			})
		}
	})

	t.Run("link", func(t *testing.T) {
		dir, path := e.subdir(t)
		fh, _, err := e.c.Create(ctx, dir, "marker", 0o644, Guarded, Verifier{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := e.c.Link(ctx, fh, dir, "marker.link")
		if err != nil {
			t.Fatal(err)
		}
		_, st1 := lstat(t, filepath.Join(path, "marker"))
		_, st2 := lstat(t, filepath.Join(path, "marker.link"))
		if a.NLink != 2 || st1.Nlink != 2 || st1.Ino != st2.Ino {
			t.Fatalf("nlink %d (server %d), inodes %d %d", a.NLink, st1.Nlink, st1.Ino, st2.Ino)
		}
		_, err = e.c.Link(ctx, fh, dir, "marker.link")
		wantErrno(t, err, syscall.EEXIST)
	})

	t.Run("remove-rmdir", func(t *testing.T) {
		dir, path := e.subdir(t)
		if _, _, err := e.c.Create(ctx, dir, "f", 0o644, Guarded, Verifier{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.c.Mkdir(ctx, dir, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Remove(ctx, dir, "f"); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Rmdir(ctx, dir, "d"); err != nil {
			t.Fatal(err)
		}
		if left, err := os.ReadDir(path); err != nil || len(left) != 0 {
			t.Fatalf("left on the server: %v, %v", left, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		dir, path := e.subdir(t)
		fh, _, err := e.c.Create(ctx, dir, "file", 0o644, Guarded, Verifier{})
		if err != nil {
			t.Fatal(err)
		}
		full, _, err := e.c.Mkdir(ctx, dir, "full", 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.c.Mkdir(ctx, full, "child", 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			call func() error
			want syscall.Errno
			msg  string // the message must name the procedure and name
		}{
			{"lookup-missing", func() error { _, _, err := e.c.Lookup(ctx, dir, "missing"); return err },
				syscall.ENOENT, `LOOKUP "missing": NFS3ERR_NOENT`},
			{"mkdir-existing", func() error { _, _, err := e.c.Mkdir(ctx, dir, "full", 0o755); return err },
				syscall.EEXIST, `MKDIR "full": NFS3ERR_EXIST`},
			{"rmdir-not-empty", func() error { return e.c.Rmdir(ctx, dir, "full") },
				syscall.ENOTEMPTY, `RMDIR "full": NFS3ERR_NOTEMPTY`},
			{"lookup-in-file", func() error { _, _, err := e.c.Lookup(ctx, fh, "x"); return err },
				syscall.ENOTDIR, `LOOKUP "x": NFS3ERR_NOTDIR`},
			{"rmdir-file", func() error { return e.c.Rmdir(ctx, dir, "file") },
				syscall.ENOTDIR, `RMDIR "file": NFS3ERR_NOTDIR`},
			{"remove-missing", func() error { return e.c.Remove(ctx, dir, "missing") },
				syscall.ENOENT, `REMOVE "missing"`},
			{"rename-missing", func() error { return e.c.Rename(ctx, dir, "missing", dir, "x") },
				syscall.ENOENT, `RENAME "missing -> x"`},
			{"path-as-name", func() error { _, _, err := e.c.Mkdir(ctx, dir, "a/b", 0o755); return err },
				syscall.EINVAL, `MKDIR "a/b"`},
			{"dotdot", func() error { _, _, err := e.c.Lookup(ctx, dir, ".."); return err },
				syscall.EINVAL, `LOOKUP ".."`},
			{"stale-handle", func() error {
				gone, _, err := e.c.Mkdir(ctx, dir, "gone", 0o755)
				if err != nil {
					return err
				}
				if err := os.Remove(filepath.Join(path, "gone")); err != nil {
					return err
				}
				_, err = e.c.Getattr(ctx, gone)
				return err
			}, syscall.ESTALE, "GETATTR (handle "},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call()
				wantErrno(t, err, tc.want)
				if !strings.Contains(err.Error(), "nfs3 server "+serverAddr+": "+tc.msg) {
					t.Fatalf("message %q does not contain %q", err, tc.msg)
				}
			})
		}
	})

	t.Run("walk", func(t *testing.T) {
		_, path := e.subdir(t)
		base := filepath.Base(path)
		// Planted on the server, as someone with access to the export could.
		if err := os.MkdirAll(filepath.Join(path, "real", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("real", filepath.Join(path, "link")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, "file"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			rel      string
			want     syscall.Errno // 0: success
			wantType FileType
		}{
			{"real/sub", 0, TypeDir},
			{"./real//sub/", 0, TypeDir},
			{"link", 0, TypeSymlink}, // the last component is returned, not followed
			{"link/sub", syscall.ELOOP, 0},
			{"file/x", syscall.ENOTDIR, 0},
			{"real/../real", syscall.EINVAL, 0},
			{"real/missing/x", syscall.ENOENT, 0},
		} {
			t.Run(tc.rel, func(t *testing.T) {
				_, a, err := e.c.Walk(ctx, e.root, base+"/"+tc.rel)
				if tc.want != 0 {
					wantErrno(t, err, tc.want)
					return
				}
				if err != nil || a.Type != tc.wantType {
					t.Fatalf("walk: %v %v, want %v", a.Type, err, tc.wantType)
				}
			})
		}
		if h, _, err := e.c.Walk(ctx, e.root, ""); err != nil || h != e.root {
			t.Fatalf("empty walk: %v %v", h, err)
		}
	})

	t.Run("mount-errors", func(t *testing.T) {
		_, _, err := e.c.Mount(ctx, "/not/exported")
		var ne *Error
		if !errors.As(err, &ne) || ne.Op != "MNT" || ne.Status == StatusOK {
			t.Fatalf("mounting an unexported path: %v", err)
		}
		t.Logf("ganesha: %v", err)
		if err := e.c.Umount(ctx, e.dir); err != nil {
			t.Fatal(err)
		}
	})
}

func wantEq[T comparable](what string, got, want T) error {
	if got != want {
		return fmt.Errorf("%s %v, want %v", what, got, want)
	}
	return nil
}

// TestPorts reaches the server through the portmapper, through fixed ports,
// and through the fallback when no portmapper answers.
func TestPorts(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, testExport{Dir: dir})
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"portmapper", func(*Config) {}},
		{"fixed", func(c *Config) { c.NFSPort, c.MountPort = DefaultNFSPort, DefaultMountPort }},
		{"no-portmapper", func(c *Config) { c.PortmapperPort = 1 }}, // refused: falls back
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := srv.config()
			tc.cfg(&cfg)
			c, root := mountAs(t, srv, cfg, dir)
			if _, _, err := c.Mkdir(testCtx(t), root, tc.name, 0o755); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("wrong-port", func(t *testing.T) {
		cfg := srv.config()
		cfg.NFSPort = 1
		_, err := Dial(testCtx(t), cfg)
		if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("dial to a closed port: %v", err)
		}
	})
}

// TestRootSquash: with root_squash, root is the anonymous user and may not
// give files away, nor change root's files.
func TestRootSquash(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil { // the anonymous user must create here
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "roots"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, testExport{Dir: dir, Squash: true})
	c, root := mountAs(t, srv, srv.config(), dir)
	ctx := testCtx(t)

	h, a, err := c.Create(ctx, root, "mine", 0o644, Guarded, Verifier{})
	if err != nil {
		t.Fatal(err)
	}
	// ganesha's default Anonymous_Uid is -2 (4294967294), not 65534.
	if _, st := lstat(t, filepath.Join(dir, "mine")); st.Uid == 0 || a.UID != st.Uid {
		t.Fatalf("root's file belongs to uid %d (client sees %d), want the anonymous user", st.Uid, a.UID)
	}
	roots, _, err := c.Lookup(ctx, root, "roots")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    Handle
		set  SetAttr
		want syscall.Errno
	}{
		{"chown-own-file", h, SetAttr{UID: new(uint32(1000))}, syscall.EPERM},
		{"chown-roots-file", roots, SetAttr{UID: new(uint32(1000))}, syscall.EPERM},
		{"chmod-roots-file", roots, SetAttr{Mode: new(fs.FileMode(0o666))}, syscall.EPERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Setattr(ctx, tc.h, tc.set)
			wantErrno(t, err, tc.want)
			t.Logf("ganesha: %v", err)
		})
	}
}

// TestDeadline stops the server: a call with a deadline returns
// DeadlineExceeded, and once the server runs again the same Client works
// over a new connection.
func TestDeadline(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, testExport{Dir: dir})
	var dials atomic.Int32
	cfg := srv.config()
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return srv.Dial(ctx, network, addr)
	}
	c, root := mountAs(t, srv, cfg, dir)
	if _, err := c.Getattr(testCtx(t), root); err != nil {
		t.Fatal(err)
	}
	before := dials.Load()

	srv.stopGanesha(t)
	resumed := false
	resume := func() {
		if !resumed {
			srv.continueGanesha(t)
			resumed = true
		}
	}
	t.Cleanup(resume)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		_, _, err := c.Mkdir(ctx, root, "during-stop", 0o755)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), serverAddr) {
			t.Fatalf("call to a stopped server: %v", err)
		}
		t.Logf("stopped server: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("a call with a 1.5s deadline did not return within 60s")
	}
	resume()

	if _, _, err := c.Mkdir(testCtx(t), root, "after-stop", 0o755); err != nil {
		t.Fatalf("first call after SIGCONT: %v", err)
	}
	if dials.Load() == before {
		t.Fatal("the client did not redial after discarding the silent connection")
	}
	if _, err := os.Lstat(filepath.Join(dir, "after-stop")); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrent runs many calls at once on one Client (run with -race).
func TestConcurrent(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	dir, path := e.subdir(t)
	const workers, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("w%02d-%03d", w, i)
				h, a, err := e.c.Mkdir(ctx, dir, name, 0o755)
				if err != nil {
					errs <- err
					return
				}
				h2, a2, err := e.c.Lookup(ctx, dir, name)
				if err != nil {
					errs <- err
					return
				}
				if h2 != h || a2.FileID != a.FileID {
					errs <- fmt.Errorf("%s: lookup found file %d, mkdir made %d", name, a2.FileID, a.FileID)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries, err := e.c.ReadDirPlus(ctx, dir)
	if err != nil || len(entries) != workers*each {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	if onServer, err := os.ReadDir(path); err != nil || len(onServer) != workers*each {
		t.Fatalf("server has %d entries, %v", len(onServer), err)
	}
}
