package nfs3

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"dirpv.io/dirpv/provisioner/fsys"
)

// OpenDir returns the directory h as an fsys.Dir, whose calls all use ctx: fsys methods take no
// context, and one volume operation is one context with one deadline. Directories and files
// opened from it use ctx too. name is the directory for messages, "server:/path".
func (c *Client) OpenDir(ctx context.Context, h Handle, name string) (fsys.Dir, error) {
	a, err := c.Getattr(ctx, h)
	if err == nil && a.Type != TypeDir {
		err = notDir(a.Type)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &dir{c: c, ctx: ctx, h: h, fsid: a.FSID, name: name}, nil
}

// dir is a directory on the server, known by its handle. Nothing is held open on the server,
// so Close has nothing to release.
type dir struct {
	c    *Client
	ctx  context.Context // the operation's; see OpenDir
	h    Handle
	fsid uint64
	name string
}

// maxName bounds the directory names kept for messages, so that a walk down a deep tree does
// not build ever longer names.
const maxName = 1024

// path names the entry name for messages.
func (d *dir) path(name string) string {
	if len(d.name) > maxName {
		return ".../" + name
	}
	return strings.TrimSuffix(d.name, "/") + "/" + name
}

// parentName names the directory above for messages: "server:/a/b" gives "server:/a".
func (d *dir) parentName() string {
	if i := strings.Index(d.name, ":/"); i >= 0 {
		return d.name[:i+1] + path.Dir(d.name[i+1:])
	}
	return path.Join(d.name, "..")
}

func (d *dir) Name() string { return d.name }

func (d *dir) Close() error { return nil }

// Mount is the directory's FSID: a server gives each filesystem it exports its own.
func (d *dir) Mount() uint64 { return d.fsid }

func (d *dir) Stat() (fsys.Info, error) {
	a, err := d.c.Getattr(d.ctx, d.h)
	if err != nil {
		return fsys.Info{}, &fs.PathError{Op: "stat", Path: d.name, Err: err}
	}
	return infoOf(a), nil
}

// Lstat is a LOOKUP, which never follows a symlink.
func (d *dir) Lstat(name string) (fsys.Info, error) {
	_, a, err := d.c.Lookup(d.ctx, d.h, name)
	if err != nil {
		return fsys.Info{}, &fs.PathError{Op: "lstat", Path: d.path(name), Err: err}
	}
	return infoOf(a), nil
}

func (d *dir) OpenDir(name string, want fsys.ID) (fsys.Dir, error) {
	var (
		h   Handle
		a   Attr
		err error
		sub = d.path(name)
	)
	switch name {
	case ".":
		// The directory itself again, as a Dir of its own.
		sub = d.name
		h = d.h
		a, err = d.c.Getattr(d.ctx, d.h)
	case "..":
		sub = d.parentName()
		h, a, err = d.c.LookupParent(d.ctx, d.h)
	default:
		h, a, err = d.c.Lookup(d.ctx, d.h, name)
	}
	switch {
	case err != nil:
	case a.Type != TypeDir:
		err = notDir(a.Type)
	case want != (fsys.ID{}) && idOf(a) != want:
		err = fsys.ErrChanged
	case name != ".." && name != ".": // we came up from a child of "..", and are in "."
		err = d.c.ensureAccess(d.ctx, h, a)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: sub, Err: err}
	}
	return &dir{c: d.c, ctx: d.ctx, h: h, fsid: a.FSID, name: sub}, nil
}

// dirAccess is what working in a directory takes: listing, looking up, adding and removing.
const dirAccess = AccessRead | AccessLookup | AccessModify | AccessExtend | AccessDelete

// ensureAccess adds u+rwx to the directory h (attributes a) if it lacks one of them and the
// server says that we may not work in it. Opening takes no permission over NFS; what comes
// next would fail. The server decides (ACCESS): root over no_root_squash is let through
// anyway, so its mode is left alone, as a local open(2) would. With u+rwx already there the
// owner has access, and chmod would help no one else.
func (c *Client) ensureAccess(ctx context.Context, h Handle, a Attr) error {
	if a.Mode&0o700 == 0o700 {
		return nil
	}
	granted, err := c.Access(ctx, h, dirAccess)
	if err != nil || granted&dirAccess == dirAccess {
		return err
	}
	mode := a.Mode | 0o700
	_, err = c.Setattr(ctx, h, SetAttr{Mode: &mode})
	return err
}

// EachName reads the whole directory before calling f: f may remove entries, and a server may
// invalidate its READDIR cookies when the directory changes between pages. A directory larger
// than a listing may hold (maxListEntries, maxListBytes) fails with EIO.
func (d *dir) EachName(f func(name string)) error {
	names, err := d.c.ReadDirNames(d.ctx, d.h)
	if err != nil {
		return &fs.PathError{Op: "readdir", Path: d.name, Err: err}
	}
	for _, name := range names {
		f(name)
	}
	return nil
}

func (d *dir) Mkdir(name string, mode fs.FileMode) error {
	if _, _, err := d.c.Mkdir(d.ctx, d.h, name, mode); err != nil {
		return &fs.PathError{Op: "mkdir", Path: d.path(name), Err: err}
	}
	return nil
}

// Create is an EXCLUSIVE CREATE (EEXIST for any existing name, a symlink included). Its
// verifier makes it safe to send again when the connection broke before the reply: the server
// then returns the file it made instead of EEXIST.
func (d *dir) Create(name string, mode fs.FileMode) (fsys.File, error) {
	var verf Verifier
	rand.Read(verf[:])
	h, _, err := d.c.Create(d.ctx, d.h, name, mode, Exclusive, verf)
	if e, ok := errors.AsType[*Error](err); ok && e.Op == "CREATE" && errors.Is(err, ErrConnLost) {
		h, _, err = d.c.Create(d.ctx, d.h, name, mode, Exclusive, verf)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: d.path(name), Err: err}
	}
	return &file{c: d.c, ctx: d.ctx, h: h, name: d.path(name)}, nil
}

// OpenFile looks the file up. NFS has no open: nothing blocks, and permissions are checked by
// each READ and WRITE, so write changes nothing here.
func (d *dir) OpenFile(name string, write bool) (fsys.File, error) {
	h, a, err := d.c.Lookup(d.ctx, d.h, name)
	if err == nil && a.Type != TypeRegular {
		err = notRegular(a.Type)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path(name), Err: err}
	}
	return &file{c: d.c, ctx: d.ctx, h: h, name: d.path(name)}, nil
}

func (d *dir) Link(oldname, newname string) error {
	h, _, err := d.c.Lookup(d.ctx, d.h, oldname)
	if err == nil {
		_, err = d.c.Link(d.ctx, h, d.h, newname)
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: d.path(oldname), New: d.path(newname), Err: err}
	}
	return nil
}

// Rename is a RENAME, which replaces an existing newname: NFSv3 has no way to refuse that, so
// noReplace fails at once with ENOTSUP.
func (d *dir) Rename(oldname, newname string, noReplace bool) error {
	err := fmt.Errorf("NFSv3 RENAME always replaces its target: %w", syscall.ENOTSUP)
	if !noReplace {
		err = d.c.Rename(d.ctx, d.h, oldname, d.h, newname)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: d.path(oldname), New: d.path(newname), Err: err}
	}
	return nil
}

func (d *dir) Unlink(name string) error {
	if err := d.c.Remove(d.ctx, d.h, name); err != nil {
		return &fs.PathError{Op: "unlink", Path: d.path(name), Err: err}
	}
	return nil
}

func (d *dir) Rmdir(name string) error {
	if err := d.c.Rmdir(d.ctx, d.h, name); err != nil {
		return &fs.PathError{Op: "rmdir", Path: d.path(name), Err: err}
	}
	return nil
}

func (d *dir) Chmod(mode fs.FileMode) error {
	if _, err := d.c.Setattr(d.ctx, d.h, SetAttr{Mode: &mode}); err != nil {
		return &fs.PathError{Op: "chmod", Path: d.name, Err: err}
	}
	return nil
}

func (d *dir) Chown(uid, gid int) error {
	var s SetAttr
	if uid != -1 {
		s.UID = new(uint32(uid))
	}
	if gid != -1 {
		s.GID = new(uint32(gid))
	}
	if _, err := d.c.Setattr(d.ctx, d.h, s); err != nil {
		return &fs.PathError{Op: "chown", Path: d.name, Err: err}
	}
	return nil
}

// Sync has nothing to do: an NFSv3 server makes every change to a directory (CREATE, MKDIR,
// REMOVE, RENAME, LINK, SETATTR) durable before it replies; only WRITE may be unstable
// (RFC 1813).
func (d *dir) Sync() error { return nil }

// file is a regular file on the server, known by its handle.
type file struct {
	c    *Client
	ctx  context.Context
	h    Handle
	name string
	off  uint64 // where the next Write goes

	// unstable: a WRITE came back less than FILE_SYNC, so Sync must COMMIT; verf is the write
	// verifier COMMIT must return, else the server restarted and lost the data.
	unstable bool
	verf     Verifier
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EINVAL}
	}
	n := 0
	for n < len(p) {
		data, eof, err := f.c.Read(f.ctx, f.h, uint64(off)+uint64(n), len(p)-n)
		if err != nil {
			return n, &fs.PathError{Op: "read", Path: f.name, Err: err}
		}
		n += copy(p[n:], data)
		if eof || len(data) == 0 {
			break
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Write writes p at the file's offset with FILE_SYNC: the files are small, and this way Sync
// has nothing left to do.
func (f *file) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	res, err := f.c.Write(f.ctx, f.h, f.off, p, FileSync)
	f.off += uint64(res.Count)
	if res.Count > 0 && res.Committed < FileSync {
		// The server should not do this when asked for FILE_SYNC; if it does, COMMIT in Sync.
		f.unstable, f.verf = true, res.Verifier
	}
	if err != nil {
		return res.Count, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	return res.Count, nil
}

func (f *file) Sync() error {
	if !f.unstable {
		return nil
	}
	v, err := f.c.Commit(f.ctx, f.h, 0, 0)
	if err == nil && v != f.verf {
		err = fmt.Errorf("%w: the server restarted before COMMIT and may have lost written data", syscall.EIO)
	}
	if err != nil {
		return &fs.PathError{Op: "sync", Path: f.name, Err: err}
	}
	f.unstable = false
	return nil
}

func (f *file) Stat() (fsys.Info, error) {
	a, err := f.c.Getattr(f.ctx, f.h)
	if err != nil {
		return fsys.Info{}, &fs.PathError{Op: "stat", Path: f.name, Err: err}
	}
	return infoOf(a), nil
}

// Lock succeeds without locking, as fsys allows: NFSv3 locks need the NLM protocol and
// rpc.statd, which this client does not speak (and the test server has disabled).
func (f *file) Lock() error { return nil }

func (f *file) Close() error { return nil }

func infoOf(a Attr) fsys.Info {
	return fsys.Info{
		Type:  a.Type.modeBits(),
		Mode:  a.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky),
		UID:   int(a.UID),
		GID:   int(a.GID),
		Nlink: uint64(a.NLink),
		Size:  int64(a.Size),
		ID:    idOf(a),
	}
}

func idOf(a Attr) fsys.ID { return fsys.ID{Dev: a.FSID, Ino: a.FileID} }

// notDir is the error for using a t as a directory: ELOOP for a symlink, as O_NOFOLLOW gives.
func notDir(t FileType) error {
	if t == TypeSymlink {
		return fmt.Errorf("a symlink: %w", syscall.ELOOP)
	}
	return fmt.Errorf("a %v: %w", t, syscall.ENOTDIR)
}

// notRegular is the error for opening a t as a regular file.
func notRegular(t FileType) error {
	errno := syscall.EINVAL
	switch t {
	case TypeDir:
		errno = syscall.EISDIR
	case TypeSymlink:
		errno = syscall.ELOOP
	}
	return fmt.Errorf("a %v, not a regular file: %w", t, errno)
}
