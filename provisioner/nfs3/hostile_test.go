package nfs3

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	xdr "github.com/rasky/go-xdr/xdr2"
	"github.com/willscott/go-nfs-client/nfs"
)

// These tests play a broken or hostile server, which a real one cannot be made into: a server
// in the test process, over in-memory connections, whose every reply the test writes.

// answerFunc returns the result of a call of procedure proc of program prog, its status first,
// given the call's encoded arguments; nil hangs up.
type answerFunc func(prog, proc uint32, args []byte) []byte

// fakeClient is a Client of a server that answers with answer.
func fakeClient(t *testing.T, answer answerFunc) *Client {
	t.Helper()
	c, err := New(Config{
		Server: "fake", NFSPort: DefaultNFSPort, MountPort: DefaultMountPort, MachineName: "nfs3-test",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			client, server := net.Pipe()
			go serveFake(server, answer)
			return client, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serveFake answers the calls on nc, one at a time, until either side hangs up.
func serveFake(nc net.Conn, answer answerFunc) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	for {
		rec, err := readRecord(br)
		if err != nil {
			return
		}
		r := bytes.NewReader(rec)
		var h callHeader
		if _, err := xdr.Unmarshal(r, &h); err != nil {
			return
		}
		res := answer(h.Prog, h.Proc, rec[len(rec)-r.Len():])
		if res == nil {
			return
		}
		// Record mark, XID, REPLY, MSG_ACCEPTED, an AUTH_NONE verifier, SUCCESS.
		msg := xdrBuf{}.u32(0).u32(h.XID).u32(msgReply).u32(0).u32(0).u32(0).u32(0)
		msg = append(msg, res...)
		binary.BigEndian.PutUint32(msg, uint32(len(msg)-4)|lastFragment)
		if _, err := nc.Write(msg); err != nil {
			return
		}
	}
}

// xdrBuf builds XDR by hand, fast enough for a million directory entries.
type xdrBuf []byte

func (b xdrBuf) u32(v uint32) xdrBuf { return binary.BigEndian.AppendUint32(b, v) }
func (b xdrBuf) u64(v uint64) xdrBuf { return binary.BigEndian.AppendUint64(b, v) }

func (b xdrBuf) opaque(p []byte) xdrBuf {
	b = append(b.u32(uint32(len(p))), p...)
	return append(b, make([]byte, -len(p)&3)...)
}

func (b xdrBuf) value(v any) xdrBuf {
	var w bytes.Buffer
	if _, err := xdr.Marshal(&w, v); err != nil {
		panic(err)
	}
	return append(b, w.Bytes()...)
}

var (
	fakeFH   = []byte{0xfa, 0x4e}
	fakeFile = nfs.Fattr{Type: uint32(TypeRegular), FileMode: 0o644, Nlink: 1, FSID: 1, Fileid: 2}
	fakeDir  = nfs.Fattr{Type: uint32(TypeDir), FileMode: 0o755, Nlink: 2, FSID: 1, Fileid: 1}
)

// Pieces of results: post_op_attr and wcc_data with attributes, and a failure.
func (b xdrBuf) attr(a nfs.Fattr) xdrBuf { return b.u32(1).value(a) }

func (b xdrBuf) wcc(a nfs.Fattr) xdrBuf {
	return b.u32(1).u64(a.Filesize).u64(0).u64(0).attr(a) // pre_op_attr: size, mtime, ctime
}

var serverFault = xdrBuf{}.u32(uint32(StatusServerFault)).u32(0) // and no attributes

// okResults are well-formed successful results of the procedures the cases below call.
var okResults = map[[2]uint32][]byte{
	{nfs.Nfs3Prog, 0}:                   {},
	{nfs.MountProg, nfs.MountProc3MNT}:  xdrBuf{}.u32(0).opaque(fakeFH).u32(1).u32(authUnix),
	{nfs.MountProg, nfs.MountProc3UMNT}: {},
	{nfs.Nfs3Prog, procGetattr}:         xdrBuf{}.u32(0).value(fakeFile),
	{nfs.Nfs3Prog, procSetattr}:         xdrBuf{}.u32(0).wcc(fakeFile),
	{nfs.Nfs3Prog, procLookup}:          xdrBuf{}.u32(0).opaque(fakeFH).attr(fakeFile).attr(fakeDir),
	{nfs.Nfs3Prog, procAccess}:          xdrBuf{}.u32(0).attr(fakeFile).u32(AccessRead),
	{nfs.Nfs3Prog, procRead}:            xdrBuf{}.u32(0).attr(fakeFile).u32(4).u32(1).opaque([]byte("data")),
	{nfs.Nfs3Prog, procWrite}:           xdrBuf{}.u32(0).wcc(fakeFile).u32(4).u32(uint32(FileSync)).u64(7),
	{nfs.Nfs3Prog, procCreate}:          xdrBuf{}.u32(0).u32(1).opaque(fakeFH).attr(fakeFile).wcc(fakeDir),
	{nfs.Nfs3Prog, procMkdir}:           xdrBuf{}.u32(0).u32(1).opaque(fakeFH).attr(fakeDir).wcc(fakeDir),
	{nfs.Nfs3Prog, procRemove}:          xdrBuf{}.u32(0).wcc(fakeDir),
	{nfs.Nfs3Prog, procRmdir}:           xdrBuf{}.u32(0).wcc(fakeDir),
	{nfs.Nfs3Prog, procRename}:          xdrBuf{}.u32(0).wcc(fakeDir).wcc(fakeDir),
	{nfs.Nfs3Prog, procLink}:            xdrBuf{}.u32(0).attr(fakeFile).wcc(fakeDir),
	// One page: "." and one name, then the end.
	{nfs.Nfs3Prog, procReadDir}: xdrBuf{}.u32(0).u32(0).u64(9).
		u32(1).u64(1).opaque([]byte(".")).u64(1).
		u32(1).u64(2).opaque([]byte("f")).u64(2).u32(0).u32(1),
	{nfs.Nfs3Prog, procReadDirPlus}: xdrBuf{}.u32(0).u32(0).u64(9).
		u32(1).u64(2).opaque([]byte("f")).u64(2).attr(fakeFile).u32(1).opaque(fakeFH).u32(0).u32(1),
	{nfs.Nfs3Prog, procCommit}: xdrBuf{}.u32(0).wcc(fakeFile).u64(7),
}

// TestMalformedReplies: a successful status followed by a result with bytes missing, bytes
// left over, or garbage fails every procedure with ErrMalformed, where REMOVE, RMDIR and
// RENAME took any reply with an OK status as success.
func TestMalformedReplies(t *testing.T) {
	h := HandleFromBytes(fakeFH)
	mode := fs.FileMode(0o644)
	for _, tc := range []struct {
		op   string
		prog uint32
		proc uint32
		call func(context.Context, *Client) error
	}{
		{"NULL", nfs.Nfs3Prog, 0, func(ctx context.Context, c *Client) error { return c.Ping(ctx) }},
		{"MNT", nfs.MountProg, nfs.MountProc3MNT, func(ctx context.Context, c *Client) error {
			_, _, err := c.Mount(ctx, "/export")
			return err
		}},
		{"UMNT", nfs.MountProg, nfs.MountProc3UMNT, func(ctx context.Context, c *Client) error { return c.Umount(ctx, "/export") }},
		{"GETATTR", nfs.Nfs3Prog, procGetattr, func(ctx context.Context, c *Client) error {
			_, err := c.Getattr(ctx, h)
			return err
		}},
		{"SETATTR", nfs.Nfs3Prog, procSetattr, func(ctx context.Context, c *Client) error {
			_, err := c.Setattr(ctx, h, SetAttr{Mode: &mode})
			return err
		}},
		{"LOOKUP", nfs.Nfs3Prog, procLookup, func(ctx context.Context, c *Client) error {
			_, _, err := c.Lookup(ctx, h, "f")
			return err
		}},
		{"ACCESS", nfs.Nfs3Prog, procAccess, func(ctx context.Context, c *Client) error {
			_, err := c.Access(ctx, h, AccessRead)
			return err
		}},
		{"READ", nfs.Nfs3Prog, procRead, func(ctx context.Context, c *Client) error {
			_, _, err := c.Read(ctx, h, 0, 4)
			return err
		}},
		{"WRITE", nfs.Nfs3Prog, procWrite, func(ctx context.Context, c *Client) error {
			_, err := c.Write(ctx, h, 0, []byte("data"), FileSync)
			return err
		}},
		{"CREATE", nfs.Nfs3Prog, procCreate, func(ctx context.Context, c *Client) error {
			_, _, err := c.Create(ctx, h, "f", 0o644, Guarded, Verifier{})
			return err
		}},
		{"MKDIR", nfs.Nfs3Prog, procMkdir, func(ctx context.Context, c *Client) error {
			_, _, err := c.Mkdir(ctx, h, "d", 0o755)
			return err
		}},
		{"REMOVE", nfs.Nfs3Prog, procRemove, func(ctx context.Context, c *Client) error { return c.Remove(ctx, h, "f") }},
		{"RMDIR", nfs.Nfs3Prog, procRmdir, func(ctx context.Context, c *Client) error { return c.Rmdir(ctx, h, "d") }},
		{"RENAME", nfs.Nfs3Prog, procRename, func(ctx context.Context, c *Client) error { return c.Rename(ctx, h, "a", h, "b") }},
		{"LINK", nfs.Nfs3Prog, procLink, func(ctx context.Context, c *Client) error {
			_, err := c.Link(ctx, h, h, "l")
			return err
		}},
		{"READDIR", nfs.Nfs3Prog, procReadDir, func(ctx context.Context, c *Client) error {
			_, err := c.ReadDirNames(ctx, h)
			return err
		}},
		{"READDIRPLUS", nfs.Nfs3Prog, procReadDirPlus, func(ctx context.Context, c *Client) error {
			_, err := c.ReadDirPlus(ctx, h)
			return err
		}},
		{"COMMIT", nfs.Nfs3Prog, procCommit, func(ctx context.Context, c *Client) error {
			_, err := c.Commit(ctx, h, 0, 0)
			return err
		}},
	} {
		ok := okResults[[2]uint32{tc.prog, tc.proc}]
		variants := []struct {
			name   string
			result []byte // nil: ok as it is, which must succeed
		}{
			{"well-formed", nil},
			{"trailing-bytes", append(append([]byte{}, ok...), 0xde, 0xad, 0xbe, 0xef)},
			{"garbage", xdrBuf{}.u32(0).u64(^uint64(0))},
		}
		if len(ok) > 4 { // more than a status: something to cut short
			variants = append(variants, struct {
				name   string
				result []byte
			}{"short", ok[:len(ok)-4]})
		}
		for _, v := range variants {
			t.Run(tc.op+"/"+v.name, func(t *testing.T) {
				c := fakeClient(t, func(prog, proc uint32, args []byte) []byte {
					if prog == tc.prog && proc == tc.proc && v.result != nil {
						return v.result
					}
					if res, found := okResults[[2]uint32{prog, proc}]; found {
						return res
					}
					t.Errorf("unexpected call of procedure %d of program %d", proc, prog)
					return nil
				})
				err := tc.call(context.Background(), c)
				if v.result == nil {
					if err != nil {
						t.Fatalf("well-formed reply: %v", err)
					}
					return
				}
				var e *Error
				if !errors.Is(err, ErrMalformed) || !errors.Is(err, syscall.EIO) || !errors.As(err, &e) || e.Op != tc.op {
					t.Fatalf("%s reply: got %v, want an %s error that is ErrMalformed", v.name, err, tc.op)
				}
				t.Log(err)
			})
		}
	}
}

// pageServer answers READDIR and READDIRPLUS with the pages page returns for the cookie sent,
// and GETATTR with a directory's attributes. It counts the pages and entries it sent, and
// fails a listing that goes on past stopAfter entries with NFS3ERR_SERVERFAULT (so that a
// client that never stops does not run the test forever).
type pageServer struct {
	page      func(cookie uint64) (entries []fakeEntry, eof bool)
	stopAfter int
	pages     atomic.Int64
	entries   atomic.Int64
}

type fakeEntry struct {
	name   string
	cookie uint64
}

func (s *pageServer) answer(t *testing.T) answerFunc {
	return func(prog, proc uint32, args []byte) []byte {
		var cookie uint64
		switch {
		case prog == nfs.Nfs3Prog && proc == procGetattr:
			return xdrBuf{}.u32(0).value(fakeDir)
		case prog == nfs.Nfs3Prog && (proc == procReadDir || proc == procReadDirPlus):
			var a struct { // how both procedures' arguments start
				Dir    []byte
				Cookie uint64
			}
			if _, err := xdr.Unmarshal(bytes.NewReader(args), &a); err != nil {
				t.Errorf("READDIR(PLUS) arguments: %v", err)
				return nil
			}
			cookie = a.Cookie
		default:
			t.Errorf("unexpected call of procedure %d of program %d", proc, prog)
			return nil
		}
		if s.entries.Load() > int64(s.stopAfter) {
			return serverFault
		}
		entries, eof := s.page(cookie)
		s.pages.Add(1)
		s.entries.Add(int64(len(entries)))
		res := xdrBuf{}.u32(0).u32(0).u64(1) // NFS3_OK, no directory attributes, a verifier
		attr := xdrBuf{}.attr(fakeFile)
		for i, e := range entries {
			res = res.u32(1).u64(uint64(i + 3)).opaque([]byte(e.name)).u64(e.cookie)
			if proc == procReadDirPlus {
				res = append(res, attr...)
				res = res.u32(1).opaque(fakeFH)
			}
		}
		if eof {
			return res.u32(0).u32(1)
		}
		return res.u32(0).u32(0)
	}
}

// listers are the ways a directory is listed whole: ReadDirNames (READDIR), ReadDirPlus
// (READDIRPLUS) and the fsys.Dir's EachName (READDIR), whose errors name the directory too.
var listers = []struct {
	name string
	op   string
	list func(context.Context, *Client) error
}{
	{"ReadDirNames", "READDIR", func(ctx context.Context, c *Client) error {
		_, err := c.ReadDirNames(ctx, HandleFromBytes(fakeFH))
		return err
	}},
	{"ReadDirPlus", "READDIRPLUS", func(ctx context.Context, c *Client) error {
		_, err := c.ReadDirPlus(ctx, HandleFromBytes(fakeFH))
		return err
	}},
	{"EachName", "READDIR", func(ctx context.Context, c *Client) error {
		d, err := c.OpenDir(ctx, HandleFromBytes(fakeFH), "fake:/vol")
		if err != nil {
			return err
		}
		return d.EachName(func(string) {})
	}},
}

// wantListingError checks that err is a listing's EIO, from the lister's procedure, naming the
// server (and with EachName the directory), and saying what contains.
func wantListingError(t *testing.T, err error, lister, op, contains string) {
	t.Helper()
	var e *Error
	if !errors.Is(err, syscall.EIO) || !errors.As(err, &e) || e.Op != op || !strings.Contains(err.Error(), "nfs3 server fake: "+op) ||
		!strings.Contains(err.Error(), contains) {
		t.Fatalf("got %v, want an EIO from %s saying %q", err, op, contains)
	}
	if lister == "EachName" && !strings.HasPrefix(err.Error(), "readdir fake:/vol: ") {
		t.Fatalf("%v does not name the directory", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v is a deadline", err)
	}
	t.Log(err)
}

// TestListingBounded: a server that answers with page after page of new names, never saying
// end-of-directory, fails the listing once it passes the Client's bound on entries or on bytes
// of names, having held no more than that. The bounds are lowered from maxListEntries and
// maxListBytes, a million entries being more than the race detector reads in a test's time.
func TestListingBounded(t *testing.T) {
	bound := listMax{entries: 8 << 10, bytes: 1 << 20}
	for _, tc := range []struct {
		name     string
		nameLen  int
		perPage  int
		most     int    // the entries the listing may read, at the most
		contains string // what the error says
	}{
		{"entries", 8, 256, bound.entries, fmt.Sprintf("passed %d entries", bound.entries)},
		{"bytes", 255, 64, bound.bytes / 255, "passed 1 MiB of names"},
	} {
		for _, l := range listers {
			t.Run(tc.name+"/"+l.name, func(t *testing.T) {
				pad := strings.Repeat("n", tc.nameLen-8)
				s := &pageServer{stopAfter: 2 * tc.most}
				s.page = func(cookie uint64) ([]fakeEntry, bool) {
					entries := make([]fakeEntry, tc.perPage)
					for i := range entries {
						cookie++
						entries[i] = fakeEntry{fmt.Sprintf("%s%08d", pad, cookie), cookie}
					}
					return entries, false
				}
				c := fakeClient(t, s.answer(t))
				c.listMax = bound
				err := l.list(context.Background(), c)
				wantListingError(t, err, l.name, l.op, tc.contains)
				// The client stopped within a page of the bound: it held no more.
				if sent := s.entries.Load(); sent > int64(tc.most+tc.perPage) {
					t.Fatalf("the client read %d entries, more than %d and a page", sent, tc.most)
				}
			})
		}
	}
	// The bound holds within a page too: one page of twice as many entries is not all handed
	// over.
	t.Run("one-page", func(t *testing.T) {
		s := &pageServer{stopAfter: 4 * bound.entries}
		s.page = func(cookie uint64) ([]fakeEntry, bool) {
			entries := make([]fakeEntry, 2*bound.entries)
			for i := range entries {
				entries[i] = fakeEntry{fmt.Sprintf("%08d", i+1), uint64(i + 1)}
			}
			return entries, true
		}
		c := fakeClient(t, s.answer(t))
		c.listMax = bound
		held := 0
		err := c.readDir(context.Background(), HandleFromBytes(fakeFH), false, func(DirEntry) { held++ })
		wantListingError(t, err, "", "READDIR", fmt.Sprintf("passed %d entries", bound.entries))
		if held > bound.entries {
			t.Fatalf("the client was handed %d entries, more than %d", held, bound.entries)
		}
	})
}

// TestListingCookies: a server whose cookies do not advance, or come round again, fails the
// listing at once with an error that says so, without a deadline to end it; one whose cookies
// advance to the end is listed whole.
func TestListingCookies(t *testing.T) {
	// names are n new names with the cookies after from, the last one to.
	seq := 0
	names := func(n int, from, to uint64) []fakeEntry {
		var entries []fakeEntry
		for i := range n {
			seq++
			entries = append(entries, fakeEntry{fmt.Sprintf("name-%d", seq), from + uint64(i) + 1})
		}
		entries[n-1].cookie = to
		return entries
	}
	for _, tc := range []struct {
		name  string
		page  func(cookie uint64) ([]fakeEntry, bool)
		pages int64 // the most pages the client may ask for; 0: the listing ends well
	}{
		{"ends", func(cookie uint64) ([]fakeEntry, bool) {
			entries := names(100, cookie, cookie+100)
			if cookie == 0 {
				entries[0].name, entries[1].name = ".", ".."
			}
			return entries, cookie == 200
		}, 0},
		{"stands-still", func(cookie uint64) ([]fakeEntry, bool) {
			return names(100, cookie, cookie), false
		}, 1},
		{"same-page-again", func(uint64) ([]fakeEntry, bool) {
			return names(100, 0, 100), false
		}, 2},
		{"back-to-the-start", func(cookie uint64) ([]fakeEntry, bool) {
			return names(100, cookie, 0), false
		}, 1},
		{"round-of-three-pages", func(cookie uint64) ([]fakeEntry, bool) {
			next := map[uint64]uint64{0: 100, 100: 200, 200: 300, 300: 100}[cookie]
			return names(100, cookie, next), false
		}, 12},
	} {
		for _, l := range listers {
			t.Run(tc.name+"/"+l.name, func(t *testing.T) {
				s := &pageServer{page: tc.page, stopAfter: 100 * 100}
				// No deadline: only the client's own check ends a listing that goes round.
				err := l.list(context.Background(), fakeClient(t, s.answer(t)))
				if tc.pages == 0 {
					if err != nil || s.pages.Load() != 3 {
						t.Fatalf("a listing of 3 pages: %d pages read, %v", s.pages.Load(), err)
					}
					return
				}
				wantListingError(t, err, l.name, l.op, "repeated cookie")
				if n := s.pages.Load(); n > tc.pages {
					t.Fatalf("the client read %d pages before it saw the loop, want at most %d", n, tc.pages)
				}
			})
		}
	}
}
