package nfs3

import (
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
