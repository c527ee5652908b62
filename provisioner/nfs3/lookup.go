package nfs3

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	"github.com/willscott/go-nfs-client/nfs"
)

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
	if err := d.end(); err != nil {
		return fail(err)
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
	d, err := c.call(ctx, c.mount, nfs.MountProc3UMNT, struct{ Path string }{exportPath})
	if err == nil {
		err = d.end() // UMNT's result is void
	}
	if err != nil {
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
		if err = d.end(); err == nil {
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
		a, ok := d.wccAfter()
		if err = d.end(); err == nil {
			if ok {
				return a, nil
			}
			return c.Getattr(ctx, h)
		}
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
		if err = d.end(); err == nil {
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
	d.postOpAttr() // the directory's
	if err := d.end(); err != nil {
		return fail(err)
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
