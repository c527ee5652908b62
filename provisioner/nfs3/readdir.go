package nfs3

import (
	"context"
	"fmt"
	"syscall"

	"github.com/willscott/go-nfs-client/nfs"
)

// What one listing may read. ReadDirNames and ReadDirPlus hold a whole directory, as the
// fsys.Dir's EachName must (its caller removes entries, which may invalidate the server's
// cookies), so a server that never says end-of-directory would otherwise grow them until the
// operation's deadline. Half a million entries is far past what a volume keeps in one directory
// (removing them takes as many REMOVE calls), and holding that many names, or
// 32 MiB of them, stays under 100 MiB of heap, well inside the provisioner's memory limit.
const (
	maxListEntries = 1 << 19  // entries read, "." and ".." included
	maxListBytes   = 32 << 20 // bytes of the names (and READDIRPLUS handles) handed over
)

type listMax struct{ entries, bytes int }

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
// each as it is decoded, so that it holds no more than each keeps.
func (c *Client) readDir(ctx context.Context, dir Handle, plus bool, each func(DirEntry)) error {
	l := c.newListing(dir, plus)
	for {
		eof, err := l.page(ctx, each)
		if err != nil {
			return c.opError(l.op, "", dir, err)
		}
		if eof {
			return nil
		}
	}
}

// listing is one walk through a directory's pages, with READDIRPLUS if plus, else with
// READDIR, whose entries have a name and a file ID only.
type listing struct {
	c      *Client
	dir    Handle
	plus   bool
	op     string // the procedure, for errors
	cookie uint64 // where the next page starts
	verf   [8]byte
	loop   cookieLoop
	// What has been read so far, against the Client's listMax.
	entries, bytes int
}

func (c *Client) newListing(dir Handle, plus bool) *listing {
	l := &listing{c: c, dir: dir, plus: plus, op: "READDIR", loop: cookieLoop{power: 1}}
	if plus {
		l.op = "READDIRPLUS"
	}
	return l
}

// page reads the next page, hands its entries but "." and ".." to each and reports whether it
// was the last. Its errors are for opError.
func (l *listing) page(ctx context.Context, each func(DirEntry)) (eof bool, err error) {
	proc := uint32(procReadDir)
	var args any = readDirArgs{Dir: l.dir.Bytes(), Cookie: l.cookie, Verf: l.verf, Count: 32 << 10}
	if l.plus {
		proc = procReadDirPlus
		args = readDirPlusArgs{
			Dir: l.dir.Bytes(), Cookie: l.cookie, Verf: l.verf, DirCount: 8 << 10, MaxCount: 32 << 10,
		}
	}
	d, err := l.c.nfsCall(ctx, proc, args)
	if err != nil {
		return false, err
	}
	d.postOpAttr()
	d.value(&l.verf)
	n := 0
	for {
		var follows bool
		d.value(&follows)
		if d.err != nil || !follows {
			break
		}
		e, err := l.entry(ctx, d)
		if err != nil {
			return false, err
		}
		n++
		if e.Name != "" { // not "." or ".."
			each(e)
		}
	}
	d.value(&eof)
	if err := d.end(); err != nil {
		return false, err
	}
	switch {
	case eof:
		return true, nil
	case n == 0:
		return false, fmt.Errorf("%w: server returned an empty page before the end", syscall.EIO)
	case l.loop.repeats(l.cookie):
		// Cookies are positions in the directory: one sent again reads the same pages again,
		// for ever, and nothing (not even the entries' names) need tell.
		return false, fmt.Errorf("%w: server repeated cookie %d: the listing goes round without end (a broken or hostile server)",
			syscall.EIO, l.cookie)
	}
	return false, nil
}

// entry decodes the next entry, moves the listing's cookie past it and counts it. "." and
// ".." come back without a name, as does an entry without one (which is no entry).
func (l *listing) entry(ctx context.Context, d *decoder) (DirEntry, error) {
	var e nfs.EntryPlus
	if l.plus {
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
		return DirEntry{}, d.err
	}
	l.cookie = e.Cookie
	if l.entries++; l.entries > l.c.listMax.entries {
		return DirEntry{}, l.tooLarge(fmt.Sprintf("%d entries", l.c.listMax.entries))
	}
	if e.FileName == "." || e.FileName == ".." || e.FileName == "" {
		return DirEntry{}, nil
	}
	de := DirEntry{Name: e.FileName, FileID: e.FileId}
	switch {
	case !l.plus:
	case e.Handle.IsSet && e.Attr.IsSet:
		de.Handle = HandleFromBytes(e.Handle.FH)
		de.Attr = attrFromWire(&e.Attr.Attr)
	default:
		var err error
		if de.Handle, de.Attr, err = l.c.Lookup(ctx, l.dir, e.FileName); err != nil {
			return DirEntry{}, err
		}
	}
	if l.bytes += len(de.Name) + len(de.Handle.fh); l.bytes > l.c.listMax.bytes {
		return DirEntry{}, l.tooLarge(fmt.Sprintf("%d MiB of names", l.c.listMax.bytes>>20))
	}
	return de, nil
}

func (l *listing) tooLarge(limit string) error {
	return fmt.Errorf("%w: the listing passed %s, the most one listing may hold (a directory too large to list, or a broken or hostile server)",
		syscall.EIO, limit)
}

// cookieLoop tells whether the cookies a listing sends come round again: Brent's cycle
// detection, in constant memory. A cookie that does not move is seen at once, a loop of n pages
// within about 3n pages.
type cookieLoop struct {
	last, mark   uint64 // the cookie sent last, and one sent earlier; both start at 0, the first page's
	steps, power int
}

// repeats records next, the cookie the next page would start from, and reports whether it was
// sent before.
func (l *cookieLoop) repeats(next uint64) bool {
	if next == l.last || next == l.mark {
		return true
	}
	l.last = next
	if l.steps++; l.steps == l.power {
		l.mark, l.steps, l.power = next, 0, 2*l.power
	}
	return false
}
