package nfs3

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"syscall"

	"github.com/willscott/go-nfs-client/nfs"
)

// NFSv3 procedure numbers (RFC 1813); the library lacks LINK among others.
const (
	procGetattr     = 1
	procSetattr     = 2
	procLookup      = 3
	procAccess      = 4
	procRead        = 6
	procWrite       = 7
	procCreate      = 8
	procMkdir       = 9
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procLink        = 15
	procReadDir     = 16
	procReadDirPlus = 17
	procCommit      = 21
)

// maxIO bounds one READ or WRITE: every server accepts 64 KiB, and the
// files this client is for are small.
const maxIO = 64 << 10

// Wire argument layouts the library does not define.
type (
	fhArgs struct{ FH []byte }

	// sattrguard3 with the ctime check always off.
	setattrArgs struct {
		FH    []byte
		Attr  nfs.Sattr3
		Guard bool
	}
	readArgs struct {
		FH     []byte
		Offset uint64
		Count  uint32
	}
	writeArgs struct {
		FH     []byte
		Offset uint64
		Count  uint32
		Stable uint32
		Data   []byte
	}
	// createhow3 is a union whose arms differ; one struct per arm.
	createAttrArgs struct {
		Where nfs.Diropargs3
		How   CreateMode
		Attr  nfs.Sattr3
	}
	createExclArgs struct {
		Where nfs.Diropargs3
		How   CreateMode
		Verf  Verifier
	}
	mkdirArgs struct {
		Where nfs.Diropargs3
		Attr  nfs.Sattr3
	}
	renameArgs struct{ From, To nfs.Diropargs3 }
	linkArgs   struct {
		FH   []byte
		Link nfs.Diropargs3
	}
	readDirArgs struct {
		Dir    []byte
		Cookie uint64
		Verf   [8]byte
		Count  uint32
	}
	readDirPlusArgs struct {
		Dir      []byte
		Cookie   uint64
		Verf     [8]byte
		DirCount uint32
		MaxCount uint32
	}
)

// Verifier is an 8-byte NFSv3 verifier: the EXCLUSIVE create verifier and the
// write verifier that WRITE and COMMIT return.
type Verifier [8]byte

// CreateMode is how CREATE treats an existing name (createmode3).
type CreateMode uint32

const (
	// Unchecked: an existing file is used as it is (size 0 in the attributes truncates).
	Unchecked CreateMode = 0
	// Guarded: an existing name fails with EEXIST.
	Guarded CreateMode = 1
	// Exclusive: like Guarded, but a file that this same verifier created is
	// accepted, so a retransmitted create succeeds.
	Exclusive CreateMode = 2
)

// StableHow is a WRITE's durability (stable_how).
type StableHow uint32

const (
	Unstable StableHow = 0 // needs a COMMIT
	DataSync StableHow = 1
	FileSync StableHow = 2
)

// SetAttr selects the attributes Setattr changes; nil fields are left alone.
type SetAttr struct {
	Mode *fs.FileMode // permission bits plus setuid, setgid and sticky; type bits ignored
	UID  *uint32
	GID  *uint32
	Size *uint64
}

func (s SetAttr) wire() nfs.Sattr3 {
	var w nfs.Sattr3
	if s.Mode != nil {
		w.Mode = nfs.SetMode{SetIt: true, Mode: modeToUnix(*s.Mode)}
	}
	if s.UID != nil {
		w.UID = nfs.SetUID{SetIt: true, UID: *s.UID}
	}
	if s.GID != nil {
		w.GID = nfs.SetUID{SetIt: true, UID: *s.GID}
	}
	if s.Size != nil {
		w.Size = nfs.SetSize{SetIt: true, Size: *s.Size}
	}
	return w
}

// checkName refuses anything but a single path component, before it reaches
// the server (which would resolve "..").
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q is not a single name", syscall.EINVAL, name)
	}
	return nil
}

func diropArgs(dir Handle, name string) nfs.Diropargs3 {
	return nfs.Diropargs3{FH: dir.Bytes(), Filename: name}
}

// postOpAttr reads a post_op_attr.
func (d *decoder) postOpAttr() (Attr, bool) {
	var a nfs.PostOpAttr
	d.value(&a)
	if d.err != nil || !a.IsSet {
		return Attr{}, false
	}
	return attrFromWire(&a.Attr), true
}

// wccAfter reads a wcc_data and returns its post-operation attributes.
func (d *decoder) wccAfter() (Attr, bool) {
	var w nfs.WccData
	d.value(&w)
	if d.err != nil || !w.After.IsSet {
		return Attr{}, false
	}
	return attrFromWire(&w.After.Attr), true
}

// Mount asks the MOUNT service for exportPath's root handle (MNT), and
// returns it with the root's attributes. The server must accept AUTH_SYS on
// the export.
func (c *Client) Mount(ctx context.Context, exportPath string) (Handle, Attr, error) {
	fail := func(err error) (Handle, Attr, error) {
		return Handle{}, Attr{}, c.opError("MNT", exportPath, Handle{}, err)
	}
	d, err := c.call(ctx, c.mount, nfs.MountProc3MNT, struct{ Path string }{exportPath})
	if err != nil {
		return fail(err)
	}
	st := Status(d.uint32())
	if d.err == nil && st != StatusOK {
		return fail(statusError(st))
	}
	var ok struct {
		FH     []byte
		Flavor []uint32
	}
	d.value(&ok)
	if d.err != nil {
		return fail(d.err)
	}
	if !containsFlavor(ok.Flavor, authUnix) {
		return fail(fmt.Errorf("export accepts auth flavors %v, not AUTH_SYS (%d)", ok.Flavor, authUnix))
	}
	h := HandleFromBytes(ok.FH)
	a, err := c.Getattr(ctx, h)
	if err != nil {
		return Handle{}, Attr{}, err
	}
	return h, a, nil
}

func containsFlavor(fl []uint32, f uint32) bool {
	for _, x := range fl {
		if x == f {
			return true
		}
	}
	return false
}

// Umount tells the MOUNT service the export is no longer used (UMNT).
// Servers only use this for their showmount list.
func (c *Client) Umount(ctx context.Context, exportPath string) error {
	if _, err := c.call(ctx, c.mount, nfs.MountProc3UMNT, struct{ Path string }{exportPath}); err != nil {
		return c.opError("UMNT", exportPath, Handle{}, err)
	}
	return nil
}

// Getattr returns h's attributes.
func (c *Client) Getattr(ctx context.Context, h Handle) (Attr, error) {
	d, err := c.nfsCall(ctx, procGetattr, fhArgs{h.Bytes()})
	if err == nil {
		var f nfs.Fattr
		d.value(&f)
		if err = d.err; err == nil {
			return attrFromWire(&f), nil
		}
	}
	return Attr{}, c.opError("GETATTR", "", h, err)
}

// Setattr changes the attributes selected in s and returns the new ones.
func (c *Client) Setattr(ctx context.Context, h Handle, s SetAttr) (Attr, error) {
	return c.setattr(ctx, h, s.wire())
}

func (c *Client) setattr(ctx context.Context, h Handle, s nfs.Sattr3) (Attr, error) {
	d, err := c.nfsCall(ctx, procSetattr, setattrArgs{FH: h.Bytes(), Attr: s})
	if err == nil {
		if a, ok := d.wccAfter(); ok {
			return a, nil
		}
		if d.err == nil {
			return c.Getattr(ctx, h)
		}
		err = d.err
	}
	return Attr{}, c.opError("SETATTR", "", h, err)
}

// Access bits (ACCESS3_*): what ACCESS asks for and grants.
const (
	AccessRead    uint32 = 0x01 // read a file, list a directory
	AccessLookup  uint32 = 0x02 // look up names in a directory
	AccessModify  uint32 = 0x04 // rewrite a file, change a directory's entries
	AccessExtend  uint32 = 0x08 // append to a file, add entries to a directory
	AccessDelete  uint32 = 0x10 // remove entries from a directory
	AccessExecute uint32 = 0x20 // run a file
)

// Access asks the server which of the access bits in want the client's
// credentials have on h (ACCESS), as the server decides it: with its own
// squashing and ACLs, which mode bits alone do not tell.
func (c *Client) Access(ctx context.Context, h Handle, want uint32) (uint32, error) {
	d, err := c.nfsCall(ctx, procAccess, struct {
		FH     []byte
		Access uint32
	}{h.Bytes(), want})
	if err == nil {
		d.postOpAttr()
		var granted uint32
		d.value(&granted)
		if err = d.err; err == nil {
			return granted, nil
		}
	}
	return 0, c.opError("ACCESS", "", h, err)
}

// Lookup returns the handle and attributes of name in dir. Like every NFS
// LOOKUP it does not follow a symlink: it returns the link itself
// (Type TypeSymlink), so callers can refuse one.
func (c *Client) Lookup(ctx context.Context, dir Handle, name string) (Handle, Attr, error) {
	if err := checkName(name); err != nil {
		return Handle{}, Attr{}, c.opError("LOOKUP", name, dir, err)
	}
	return c.lookup(ctx, dir, name)
}

// LookupParent returns the handle and attributes of dir's parent (a LOOKUP
// of ".."). At the root of an export ganesha returns the root itself.
func (c *Client) LookupParent(ctx context.Context, dir Handle) (Handle, Attr, error) {
	return c.lookup(ctx, dir, "..")
}

// lookup is the LOOKUP call, name unchecked.
func (c *Client) lookup(ctx context.Context, dir Handle, name string) (Handle, Attr, error) {
	fail := func(err error) (Handle, Attr, error) {
		return Handle{}, Attr{}, c.opError("LOOKUP", name, dir, err)
	}
	d, err := c.nfsCall(ctx, procLookup, diropArgs(dir, name))
	if err != nil {
		return fail(err)
	}
	var fh []byte
	d.value(&fh)
	a, ok := d.postOpAttr()
	if d.err != nil {
		return fail(d.err)
	}
	h := HandleFromBytes(fh)
	if !ok { // the attributes are optional in the reply
		if a, err = c.Getattr(ctx, h); err != nil {
			return Handle{}, Attr{}, err
		}
	}
	return h, a, nil
}

// Walk looks up relPath ("a/b/c", relative to root) one component at a time
// and returns the last one's handle and attributes; the last component may be
// of any type (a symlink is returned, not followed). Every earlier component
// must be a directory: a symlink fails with an error matching syscall.ELOOP,
// anything else with syscall.ENOTDIR. Empty and "." components are skipped;
// ".." is refused (EINVAL), so a walk never leaves root.
func (c *Client) Walk(ctx context.Context, root Handle, relPath string) (Handle, Attr, error) {
	var comps []string
	for _, p := range strings.Split(relPath, "/") {
		if p == "" || p == "." {
			continue
		}
		if p == ".." {
			return Handle{}, Attr{}, c.opError("walk", relPath, root, fmt.Errorf("%w: \"..\" in path", syscall.EINVAL))
		}
		comps = append(comps, p)
	}
	if len(comps) == 0 {
		a, err := c.Getattr(ctx, root)
		return root, a, err
	}
	h := root
	var a Attr
	for i, name := range comps {
		var err error
		if h, a, err = c.Lookup(ctx, h, name); err != nil {
			return Handle{}, Attr{}, err
		}
		if i == len(comps)-1 || a.Type == TypeDir {
			continue
		}
		errno := syscall.ENOTDIR
		if a.Type == TypeSymlink {
			errno = syscall.ELOOP
		}
		at := strings.Join(comps[:i+1], "/")
		return Handle{}, Attr{}, c.opError("walk", relPath, root, fmt.Errorf("%w: %q is a %v", errno, at, a.Type))
	}
	return h, a, nil
}

// newObject reads CREATE's and MKDIR's result (post_op_fh3, post_op_attr,
// wcc_data), filling in a missing handle or attributes with further calls.
func (c *Client) newObject(ctx context.Context, d *decoder, dir Handle, name string) (Handle, Attr, error) {
	var fh nfs.PostOpFH3
	d.value(&fh)
	a, haveAttr := d.postOpAttr()
	if d.err != nil {
		return Handle{}, Attr{}, d.err
	}
	if !fh.IsSet {
		return c.Lookup(ctx, dir, name)
	}
	h := HandleFromBytes(fh.FH)
	if !haveAttr {
		var err error
		if a, err = c.Getattr(ctx, h); err != nil {
			return Handle{}, Attr{}, err
		}
	}
	return h, a, nil
}

// Mkdir creates directory name in dir with mode (permissions plus setgid and
// sticky, as in chmod; the server applies no umask). Bits the server drops at
// creation are set with a SETATTR.
func (c *Client) Mkdir(ctx context.Context, dir Handle, name string, mode fs.FileMode) (Handle, Attr, error) {
	fail := func(err error) (Handle, Attr, error) {
		return Handle{}, Attr{}, c.opError("MKDIR", name, dir, err)
	}
	if err := checkName(name); err != nil {
		return fail(err)
	}
	d, err := c.nfsCall(ctx, procMkdir, mkdirArgs{diropArgs(dir, name), SetAttr{Mode: &mode}.wire()})
	if err != nil {
		return fail(err)
	}
	h, a, err := c.newObject(ctx, d, dir, name)
	if err != nil {
		return fail(err)
	}
	return c.ensureMode(ctx, h, a, mode)
}

// ensureMode sets mode with a SETATTR if the server did not apply all of it
// at creation: ganesha, like Linux mkdir(2), drops the setgid bit.
func (c *Client) ensureMode(ctx context.Context, h Handle, a Attr, mode fs.FileMode) (Handle, Attr, error) {
	const bits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if a.Mode&bits == mode&bits {
		return h, a, nil
	}
	a, err := c.Setattr(ctx, h, SetAttr{Mode: &mode})
	if err != nil {
		return Handle{}, Attr{}, err
	}
	return h, a, nil
}

// Create creates regular file name in dir. For Unchecked and Guarded, mode
// is sent with the CREATE; for Guarded, bits the server dropped are then set
// with a SETATTR (an Unchecked create may have found an existing file, whose
// mode is left alone). For Exclusive the server stores verf in place of
// attributes, so a retransmitted CREATE with the same verifier succeeds
// (returning the same file) instead of failing with EEXIST; Create then sets
// mode with a SETATTR (as RFC 1813 asks), which also overwrites the stored
// verifier: from then on the name is an ordinary existing file.
func (c *Client) Create(ctx context.Context, dir Handle, name string, mode fs.FileMode, how CreateMode, verf Verifier) (Handle, Attr, error) {
	h, a, err := c.create(ctx, dir, name, mode, how, verf)
	if err != nil {
		return Handle{}, Attr{}, err
	}
	switch how {
	case Guarded: // the file is new: make its mode right
		return c.ensureMode(ctx, h, a, mode)
	case Unchecked: // the file may have existed: leave its mode alone
		return h, a, nil
	}
	s := SetAttr{Mode: &mode}.wire()
	s.Atime.SetIt = nfs.SetToServerTime
	s.Mtime.SetIt = nfs.SetToServerTime
	a, err = c.setattr(ctx, h, s)
	if err != nil {
		return Handle{}, Attr{}, err
	}
	return h, a, nil
}

// create is the CREATE call alone.
func (c *Client) create(ctx context.Context, dir Handle, name string, mode fs.FileMode, how CreateMode, verf Verifier) (Handle, Attr, error) {
	fail := func(err error) (Handle, Attr, error) {
		return Handle{}, Attr{}, c.opError("CREATE", name, dir, err)
	}
	if err := checkName(name); err != nil {
		return fail(err)
	}
	var args any
	switch how {
	case Unchecked, Guarded:
		args = createAttrArgs{diropArgs(dir, name), how, SetAttr{Mode: &mode}.wire()}
	case Exclusive:
		args = createExclArgs{diropArgs(dir, name), how, verf}
	default:
		return fail(fmt.Errorf("%w: create mode %d", syscall.EINVAL, how))
	}
	d, err := c.nfsCall(ctx, procCreate, args)
	if err != nil {
		return fail(err)
	}
	h, a, err := c.newObject(ctx, d, dir, name)
	if err != nil {
		return fail(err)
	}
	return h, a, nil
}

// WriteResult is what Write reports.
type WriteResult struct {
	Count     int       // bytes written
	Committed StableHow // the weakest durability any part got
	Verifier  Verifier  // the server's write verifier, to compare with Commit's
}

// Write writes data at off, in as many WRITE calls as it takes.
func (c *Client) Write(ctx context.Context, h Handle, off uint64, data []byte, stable StableHow) (WriteResult, error) {
	res := WriteResult{Committed: FileSync}
	for len(data) > 0 || res.Count == 0 {
		chunk := data[:min(len(data), maxIO)]
		d, err := c.nfsCall(ctx, procWrite, writeArgs{
			FH: h.Bytes(), Offset: off, Count: uint32(len(chunk)), Stable: uint32(stable), Data: chunk,
		})
		if err != nil {
			return res, c.opError("WRITE", "", h, err)
		}
		d.wccAfter()
		var ok struct {
			Count     uint32
			Committed StableHow
			Verf      Verifier
		}
		d.value(&ok)
		if d.err == nil && (ok.Count == 0 && len(chunk) > 0 || int(ok.Count) > len(chunk)) {
			d.err = fmt.Errorf("server wrote %d of %d bytes", ok.Count, len(chunk))
		}
		if d.err != nil {
			return res, c.opError("WRITE", "", h, d.err)
		}
		res.Count += int(ok.Count)
		res.Committed = min(res.Committed, ok.Committed)
		res.Verifier = ok.Verf
		off += uint64(ok.Count)
		data = data[ok.Count:]
		if len(chunk) == 0 {
			break // an empty write, done once
		}
	}
	return res, nil
}

// Commit makes the range [off, off+count) of earlier Unstable writes durable
// (count 0: to the end of the file) and returns the write verifier; if it
// differs from the one the writes returned, the server restarted in between
// and the data must be written again.
func (c *Client) Commit(ctx context.Context, h Handle, off uint64, count uint32) (Verifier, error) {
	d, err := c.nfsCall(ctx, procCommit, readArgs{FH: h.Bytes(), Offset: off, Count: count})
	if err == nil {
		d.wccAfter()
		var v Verifier
		d.value(&v)
		if err = d.err; err == nil {
			return v, nil
		}
	}
	return Verifier{}, c.opError("COMMIT", "", h, err)
}

// Read reads up to count bytes (at most 64 KiB) at off. eof reports that the
// read reached the end of the file.
func (c *Client) Read(ctx context.Context, h Handle, off uint64, count int) (data []byte, eof bool, err error) {
	d, err := c.nfsCall(ctx, procRead, readArgs{FH: h.Bytes(), Offset: off, Count: uint32(min(max(count, 0), maxIO))})
	if err == nil {
		d.postOpAttr()
		var ok struct {
			Count uint32
			EOF   bool
			Data  []byte
		}
		d.value(&ok)
		if err = d.err; err == nil {
			return ok.Data, ok.EOF, nil
		}
	}
	return nil, false, c.opError("READ", "", h, err)
}

// ReadAll reads the whole file; one larger than limit bytes fails with EFBIG.
func (c *Client) ReadAll(ctx context.Context, h Handle, limit int) ([]byte, error) {
	var all []byte
	for {
		data, eof, err := c.Read(ctx, h, uint64(len(all)), maxIO)
		if err != nil {
			return nil, err
		}
		all = append(all, data...)
		if len(all) > limit {
			return nil, c.opError("READ", "", h, fmt.Errorf("%w: file larger than %d bytes", syscall.EFBIG, limit))
		}
		if eof || len(data) == 0 {
			return all, nil
		}
	}
}

// ReadDirNames returns the names of all entries of dir but "." and "..",
// reading as many READDIR pages as it takes: less work for the server and
// less memory than ReadDirPlus where names are all that is needed.
func (c *Client) ReadDirNames(ctx context.Context, dir Handle) ([]string, error) {
	var names []string
	if err := c.readDir(ctx, dir, false, func(e DirEntry) { names = append(names, e.Name) }); err != nil {
		return nil, err
	}
	return names, nil
}

// DirEntry is one READDIRPLUS entry.
type DirEntry struct {
	Name   string
	FileID uint64
	Handle Handle
	Attr   Attr
}

// ReadDirPlus returns all entries of dir but "." and "..", reading as many
// pages as it takes. Entries the server sent without a handle or attributes
// are looked up.
func (c *Client) ReadDirPlus(ctx context.Context, dir Handle) ([]DirEntry, error) {
	var all []DirEntry
	if err := c.readDir(ctx, dir, true, func(e DirEntry) { all = append(all, e) }); err != nil {
		return nil, err
	}
	return all, nil
}

// readDir is the one pager of READDIR and READDIRPLUS (plus): it reads dir a
// page at a time from the start and hands each entry but "." and ".." to
// each, page by page, so that only one page of DirEntry is held at a time.
func (c *Client) readDir(ctx context.Context, dir Handle, plus bool, each func(DirEntry)) error {
	var (
		cookie uint64
		verf   [8]byte
	)
	for {
		page, err := c.readDirPage(ctx, dir, plus, &cookie, &verf)
		if err != nil {
			return err
		}
		for _, e := range page.entries {
			each(e)
		}
		if page.eof {
			return nil
		}
		if len(page.entries) == 0 && !page.skipped {
			return c.opError(page.op, "", dir, fmt.Errorf("%w: server returned an empty page before the end", syscall.EIO))
		}
	}
}

type dirPage struct {
	op      string // the procedure, for errors
	entries []DirEntry
	eof     bool
	skipped bool // the page held only "." and/or ".."
}

// readDirPage reads one page from *cookie and advances *cookie and *verf:
// with READDIRPLUS if plus, else with READDIR, whose entries have a name and
// a file ID only.
func (c *Client) readDirPage(ctx context.Context, dir Handle, plus bool, cookie *uint64, verf *[8]byte) (dirPage, error) {
	p := dirPage{op: "READDIR"}
	proc := uint32(procReadDir)
	var args any = readDirArgs{Dir: dir.Bytes(), Cookie: *cookie, Verf: *verf, Count: 32 << 10}
	if plus {
		p.op, proc = "READDIRPLUS", procReadDirPlus
		args = readDirPlusArgs{
			Dir: dir.Bytes(), Cookie: *cookie, Verf: *verf, DirCount: 8 << 10, MaxCount: 32 << 10,
		}
	}
	fail := func(err error) (dirPage, error) {
		return dirPage{}, c.opError(p.op, "", dir, err)
	}
	d, err := c.nfsCall(ctx, proc, args)
	if err != nil {
		return fail(err)
	}
	d.postOpAttr()
	d.value(verf)
	for {
		var follows bool
		d.value(&follows)
		if d.err != nil || !follows {
			break
		}
		var e nfs.EntryPlus
		if plus {
			d.value(&e)
		} else {
			var e3 struct { // entry3
				FileID uint64
				Name   string
				Cookie uint64
			}
			d.value(&e3)
			e.FileId, e.FileName, e.Cookie = e3.FileID, e3.Name, e3.Cookie
		}
		if d.err != nil {
			break
		}
		*cookie = e.Cookie
		if e.FileName == "." || e.FileName == ".." {
			p.skipped = true
			continue
		}
		de := DirEntry{Name: e.FileName, FileID: e.FileId}
		switch {
		case !plus:
		case e.Handle.IsSet && e.Attr.IsSet:
			de.Handle = HandleFromBytes(e.Handle.FH)
			de.Attr = attrFromWire(&e.Attr.Attr)
		default:
			if de.Handle, de.Attr, err = c.Lookup(ctx, dir, e.FileName); err != nil {
				return dirPage{}, err
			}
		}
		p.entries = append(p.entries, de)
	}
	d.value(&p.eof)
	if d.err != nil {
		return fail(d.err)
	}
	return p, nil
}

// Remove removes the non-directory name from dir.
func (c *Client) Remove(ctx context.Context, dir Handle, name string) error {
	return c.removeOp(ctx, "REMOVE", procRemove, dir, name)
}

// Rmdir removes the empty directory name from dir.
func (c *Client) Rmdir(ctx context.Context, dir Handle, name string) error {
	return c.removeOp(ctx, "RMDIR", procRmdir, dir, name)
}

func (c *Client) removeOp(ctx context.Context, op string, proc uint32, dir Handle, name string) error {
	if err := checkName(name); err != nil {
		return c.opError(op, name, dir, err)
	}
	if _, err := c.nfsCall(ctx, proc, diropArgs(dir, name)); err != nil {
		return c.opError(op, name, dir, err)
	}
	return nil
}

// Rename renames fromName in fromDir to toName in toDir, replacing an
// existing toName as rename(2) does.
func (c *Client) Rename(ctx context.Context, fromDir Handle, fromName string, toDir Handle, toName string) error {
	desc := fromName + " -> " + toName
	for _, n := range []string{fromName, toName} {
		if err := checkName(n); err != nil {
			return c.opError("RENAME", desc, fromDir, err)
		}
	}
	if _, err := c.nfsCall(ctx, procRename, renameArgs{diropArgs(fromDir, fromName), diropArgs(toDir, toName)}); err != nil {
		return c.opError("RENAME", desc, fromDir, err)
	}
	return nil
}

// Link makes name in dir a hard link to file (LINK) and returns file's new
// attributes.
func (c *Client) Link(ctx context.Context, file Handle, dir Handle, name string) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, c.opError("LINK", name, dir, err)
	}
	d, err := c.nfsCall(ctx, procLink, linkArgs{file.Bytes(), diropArgs(dir, name)})
	if err != nil {
		return Attr{}, c.opError("LINK", name, dir, err)
	}
	if a, ok := d.postOpAttr(); ok {
		return a, nil
	}
	if d.err != nil {
		return Attr{}, c.opError("LINK", name, dir, d.err)
	}
	return c.Getattr(ctx, file)
}
