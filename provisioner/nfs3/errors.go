package nfs3

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"dirpv.io/dirpv/provisioner/fsys"
)

// Sentinel errors that are not NFS status codes.
var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("nfs3: client closed")
	// ErrConnLost: the connection broke after the request was sent, so the
	// server may or may not have executed it (it is an fsys.ErrNoAnswer). The
	// next call redials.
	ErrConnLost = fmt.Errorf("nfs3: connection lost (%w)", fsys.ErrNoAnswer)
	// ErrMalformed: a reply that is not its procedure's result (bytes missing, bytes left
	// over, a value out of range): a broken or hostile server, whose reply says nothing of
	// what it did. It matches syscall.EIO, as the kernel's client returns for one.
	ErrMalformed = fmt.Errorf("nfs3: malformed reply (%w)", syscall.EIO)
)

// Status is an NFSv3 (nfsstat3) or MOUNT v3 (mountstat3) status code; the two
// share their numbers.
type Status uint32

// The NFSv3 status codes (RFC 1813, section 2.6).
const (
	StatusOK          Status = 0
	StatusPerm        Status = 1
	StatusNoEnt       Status = 2
	StatusIO          Status = 5
	StatusNXIO        Status = 6
	StatusAcces       Status = 13
	StatusExist       Status = 17
	StatusXDev        Status = 18
	StatusNoDev       Status = 19
	StatusNotDir      Status = 20
	StatusIsDir       Status = 21
	StatusInval       Status = 22
	StatusFBig        Status = 27
	StatusNoSpc       Status = 28
	StatusROFS        Status = 30
	StatusMLink       Status = 31
	StatusNameTooLong Status = 63
	StatusNotEmpty    Status = 66
	StatusDQuot       Status = 69
	StatusStale       Status = 70
	StatusRemote      Status = 71
	StatusBadHandle   Status = 10001
	StatusNotSync     Status = 10002
	StatusBadCookie   Status = 10003
	StatusNotSupp     Status = 10004
	StatusTooSmall    Status = 10005
	StatusServerFault Status = 10006
	StatusBadType     Status = 10007
	StatusJukebox     Status = 10008
)

var statusInfo = map[Status]struct {
	name  string
	errno syscall.Errno
}{
	StatusPerm:        {"NFS3ERR_PERM", syscall.EPERM},
	StatusNoEnt:       {"NFS3ERR_NOENT", syscall.ENOENT},
	StatusIO:          {"NFS3ERR_IO", syscall.EIO},
	StatusNXIO:        {"NFS3ERR_NXIO", syscall.ENXIO},
	StatusAcces:       {"NFS3ERR_ACCES", syscall.EACCES},
	StatusExist:       {"NFS3ERR_EXIST", syscall.EEXIST},
	StatusXDev:        {"NFS3ERR_XDEV", syscall.EXDEV},
	StatusNoDev:       {"NFS3ERR_NODEV", syscall.ENODEV},
	StatusNotDir:      {"NFS3ERR_NOTDIR", syscall.ENOTDIR},
	StatusIsDir:       {"NFS3ERR_ISDIR", syscall.EISDIR},
	StatusInval:       {"NFS3ERR_INVAL", syscall.EINVAL},
	StatusFBig:        {"NFS3ERR_FBIG", syscall.EFBIG},
	StatusNoSpc:       {"NFS3ERR_NOSPC", syscall.ENOSPC},
	StatusROFS:        {"NFS3ERR_ROFS", syscall.EROFS},
	StatusMLink:       {"NFS3ERR_MLINK", syscall.EMLINK},
	StatusNameTooLong: {"NFS3ERR_NAMETOOLONG", syscall.ENAMETOOLONG},
	StatusNotEmpty:    {"NFS3ERR_NOTEMPTY", syscall.ENOTEMPTY},
	StatusDQuot:       {"NFS3ERR_DQUOT", syscall.EDQUOT},
	StatusStale:       {"NFS3ERR_STALE", syscall.ESTALE},
	StatusRemote:      {"NFS3ERR_REMOTE", syscall.EREMOTE},
	// A handle the server cannot even parse is as useless as a stale one:
	// the caller has to look the object up again.
	StatusBadHandle:   {"NFS3ERR_BADHANDLE", syscall.ESTALE},
	StatusNotSync:     {"NFS3ERR_NOT_SYNC", syscall.EINVAL},
	StatusBadCookie:   {"NFS3ERR_BAD_COOKIE", syscall.EINVAL},
	StatusNotSupp:     {"NFS3ERR_NOTSUPP", syscall.ENOTSUP},
	StatusTooSmall:    {"NFS3ERR_TOOSMALL", syscall.EINVAL},
	StatusServerFault: {"NFS3ERR_SERVERFAULT", syscall.EIO},
	StatusBadType:     {"NFS3ERR_BADTYPE", syscall.EINVAL},
	StatusJukebox:     {"NFS3ERR_JUKEBOX", syscall.EAGAIN},
}

// String returns the protocol name, e.g. "NFS3ERR_NOENT".
func (s Status) String() string {
	if s == StatusOK {
		return "NFS3_OK"
	}
	if i, ok := statusInfo[s]; ok {
		return i.name
	}
	return fmt.Sprintf("NFS3ERR_%d", uint32(s))
}

// Errno is the errno matching s; EIO for codes it does not know.
func (s Status) Errno() syscall.Errno {
	if i, ok := statusInfo[s]; ok {
		return i.errno
	}
	return syscall.EIO
}

// Error is what every Client method returns on failure. It unwraps to the
// syscall.Errno of an NFS status (so errors.Is(err, syscall.ENOENT) and
// errors.Is(err, fs.ErrNotExist) work), or to the transport or context error
// (errors.Is(err, context.DeadlineExceeded)).
type Error struct {
	Server string // the server, as configured
	Op     string // the procedure ("LOOKUP", "MNT", ...) or helper ("walk")
	Name   string // the name or path concerned; empty for operations on a handle
	Handle Handle // the handle operated on, if any
	Status Status // the status the server replied with; StatusOK for other errors
	Err    error  // Status.Errno() for a status reply; else the underlying error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nfs3 server %s: %s", e.Server, e.Op)
	switch {
	case e.Name != "":
		fmt.Fprintf(&b, " %q", e.Name)
	case !e.Handle.IsZero():
		fmt.Fprintf(&b, " (handle %s)", e.Handle.short())
	}
	if e.Status != StatusOK {
		name := e.Status.String()
		if e.Op == "MNT" || e.Op == "UMNT" {
			name = strings.Replace(name, "NFS3ERR_", "MNT3ERR_", 1)
		}
		fmt.Fprintf(&b, ": %s (%v)", name, e.Err)
	} else {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// statusError is the internal form of a non-OK status reply; opError turns
// it into an *Error.
type statusError Status

func (s statusError) Error() string { return Status(s).String() }
