package nfs3

import (
	"encoding/hex"
	"io/fs"
	"time"

	"github.com/willscott/go-nfs-client/nfs"
)

// Handle is an NFSv3 file handle: opaque, immutable and comparable, so it can
// be a map key. The zero Handle is invalid.
type Handle struct{ fh string }

// HandleFromBytes makes a Handle from its wire form (e.g. one stored earlier
// with Bytes).
func HandleFromBytes(b []byte) Handle { return Handle{string(b)} }

// Bytes returns a copy of the handle's wire form.
func (h Handle) Bytes() []byte { return []byte(h.fh) }

// IsZero reports whether h is the zero (invalid) Handle.
func (h Handle) IsZero() bool { return h.fh == "" }

// String returns the handle in hex.
func (h Handle) String() string { return hex.EncodeToString([]byte(h.fh)) }

// short is a prefix of String for error messages; handles can be 64 bytes.
func (h Handle) short() string {
	s := h.String()
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// FileType is the NFSv3 ftype3.
type FileType uint32

// The NFSv3 file types.
const (
	TypeRegular FileType = 1
	TypeDir     FileType = 2
	TypeBlock   FileType = 3
	TypeChar    FileType = 4
	TypeSymlink FileType = 5
	TypeSocket  FileType = 6
	TypeFIFO    FileType = 7
)

func (t FileType) String() string {
	switch t {
	case TypeRegular:
		return "regular file"
	case TypeDir:
		return "directory"
	case TypeBlock:
		return "block device"
	case TypeChar:
		return "character device"
	case TypeSymlink:
		return "symlink"
	case TypeSocket:
		return "socket"
	case TypeFIFO:
		return "fifo"
	}
	return "unknown file type"
}

// modeBits is the io/fs type bits for t.
func (t FileType) modeBits() fs.FileMode {
	switch t {
	case TypeDir:
		return fs.ModeDir
	case TypeBlock:
		return fs.ModeDevice
	case TypeChar:
		return fs.ModeDevice | fs.ModeCharDevice
	case TypeSymlink:
		return fs.ModeSymlink
	case TypeSocket:
		return fs.ModeSocket
	case TypeFIFO:
		return fs.ModeNamedPipe
	}
	return 0
}

// Attr is an object's attributes (fattr3).
type Attr struct {
	Type FileType
	// Mode holds the type bits (fs.ModeDir, ...), the permission bits and
	// fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky.
	Mode   fs.FileMode
	NLink  uint32
	UID    uint32
	GID    uint32
	Size   uint64
	Used   uint64 // bytes of disk used
	FSID   uint64
	FileID uint64
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
}

// IsDir reports whether the object is a directory.
func (a Attr) IsDir() bool { return a.Type == TypeDir }

func attrFromWire(f *nfs.Fattr) Attr {
	t := FileType(f.Type)
	return Attr{
		Type:   t,
		Mode:   t.modeBits() | modeFromUnix(f.FileMode),
		NLink:  f.Nlink,
		UID:    f.UID,
		GID:    f.GID,
		Size:   f.Filesize,
		Used:   f.Used,
		FSID:   f.FSID,
		FileID: f.Fileid,
		Atime:  timeFromWire(f.Atime),
		Mtime:  timeFromWire(f.Mtime),
		Ctime:  timeFromWire(f.Ctime),
	}
}

func timeFromWire(t nfs.NFS3Time) time.Time {
	return time.Unix(int64(t.Seconds), int64(t.Nseconds))
}

const (
	unixSetuid = 0o4000
	unixSetgid = 0o2000
	unixSticky = 0o1000
)

// modeFromUnix maps the wire's mode3 (permissions and the setuid, setgid and
// sticky bits, as in chmod) to io/fs bits.
func modeFromUnix(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&unixSetuid != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unixSetgid != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unixSticky != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// modeToUnix is the inverse of modeFromUnix; type bits are ignored.
func modeToUnix(mode fs.FileMode) uint32 {
	m := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		m |= unixSetuid
	}
	if mode&fs.ModeSetgid != 0 {
		m |= unixSetgid
	}
	if mode&fs.ModeSticky != 0 {
		m |= unixSticky
	}
	return m
}
