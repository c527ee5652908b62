package nfs3

import (
	"context"
	"fmt"
	"syscall"

	"github.com/willscott/go-nfs-client/nfs"
)

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
	if err := d.end(); err != nil {
		return fail(err)
	}
	return p, nil
}
