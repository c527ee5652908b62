package nfs3

import (
	"context"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/willscott/go-nfs-client/nfs"
)

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

// newObject reads CREATE's and MKDIR's result (post_op_fh3, post_op_attr,
// wcc_data), filling in a missing handle or attributes with further calls.
func (c *Client) newObject(ctx context.Context, d *decoder, dir Handle, name string) (Handle, Attr, error) {
	var fh nfs.PostOpFH3
	d.value(&fh)
	a, haveAttr := d.postOpAttr()
	d.wccAfter() // the directory's
	if err := d.end(); err != nil {
		return Handle{}, Attr{}, err
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
	if err := c.wccCall(ctx, proc, diropArgs(dir, name), 1); err != nil {
		return c.opError(op, name, dir, err)
	}
	return nil
}

// wccCall runs a procedure whose result is n wcc_data and nothing else (REMOVE, RMDIR, RENAME).
// The attributes are not needed, but the result is decoded whole: a reply that is not exactly
// that is malformed, and tells nothing sure of what the server did.
func (c *Client) wccCall(ctx context.Context, proc uint32, args any, n int) error {
	d, err := c.nfsCall(ctx, proc, args)
	if err != nil {
		return err
	}
	for range n {
		d.wccAfter()
	}
	return d.end()
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
	if err := c.wccCall(ctx, procRename, renameArgs{diropArgs(fromDir, fromName), diropArgs(toDir, toName)}, 2); err != nil {
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
	a, ok := d.postOpAttr()
	d.wccAfter() // the directory's
	if err := d.end(); err != nil {
		return Attr{}, c.opError("LINK", name, dir, err)
	}
	if ok {
		return a, nil
	}
	return c.Getattr(ctx, file)
}
