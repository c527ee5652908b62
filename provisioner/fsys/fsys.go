// Package fsys is the filesystem seam of dirpv's volume operations: directories open by handle,
// whose entries are named one component at a time and never followed if they are symbolic links.
// Local implements it with Linux descriptors (openat and its relatives), so that the volume code
// resolves nothing by path; an NFS client implements it with file handles.
//
// Errors wrap syscall.Errno values, so errors.Is(err, syscall.ENOENT) and
// errors.Is(err, fs.ErrNotExist) both work whatever the implementation.
package fsys

import (
	"errors"
	"io"
	"io/fs"
)

// ID identifies a file on one machine or server: device and inode, or fsid and fileid.
type ID struct{ Dev, Ino uint64 }

// Info is what a directory knows of one of its entries, or of itself.
type Info struct {
	// Type is the file type bits (fs.ModeDir, fs.ModeSymlink, ...; 0 for a regular file).
	Type fs.FileMode
	// Mode is the permission bits with fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky.
	Mode  fs.FileMode
	UID   int
	GID   int
	Nlink uint64
	Size  int64
	ID    ID
}

// IsDir reports whether the entry is a directory.
func (i Info) IsDir() bool { return i.Type == fs.ModeDir }

// IsRegular reports whether the entry is a regular file.
func (i Info) IsRegular() bool { return i.Type == 0 }

// ErrChanged means an entry is no longer the file that was looked at a moment ago.
var ErrChanged = errors.New("changed while in use")

// ErrNoAnswer means a call got no answer after it was sent (its connection was lost): it may or
// may not have taken effect.
var ErrNoAnswer = errors.New("no answer, outcome unknown")

// Dir is an open directory. Every name is a single component; none is ever followed if it is a
// symbolic link. Implementations are not safe for concurrent use of one Dir.
type Dir interface {
	// Stat describes the directory itself.
	Stat() (Info, error)
	// Mount identifies the filesystem the directory lies on, so that a walk does not cross into
	// another one; 0 when unknown.
	Mount() uint64
	// Lstat describes the entry name.
	Lstat(name string) (Info, error)
	// OpenDir opens the subdirectory name, the parent "..", or the directory itself again ".".
	// An entry that is not a directory
	// (a symbolic link included) gives ENOTDIR or ELOOP. If want is not zero, the directory must
	// be that file, else ErrChanged. Without permission to read it, OpenDir first adds u+rwx to
	// it (dirpv works as root or as the owner of what it removes).
	OpenDir(name string, want ID) (Dir, error)
	// EachName calls f with the name of every entry but "." and "..", from the start, reading a
	// batch at a time, so f may remove entries.
	EachName(f func(name string)) error
	// Mkdir creates the directory name with mode (before umask, where there is one).
	Mkdir(name string, mode fs.FileMode) error
	// Create creates the regular file name exclusively (EEXIST if the name is taken) and returns
	// it open for reading and writing.
	Create(name string, mode fs.FileMode) (File, error)
	// OpenFile opens the regular file name, for writing too if write is set. Anything but a
	// regular file gives an error; a FIFO never blocks.
	OpenFile(name string, write bool) (File, error)
	// Link makes newname another name of the file oldname (EEXIST if newname is taken).
	Link(oldname, newname string) error
	// Rename renames oldname to newname. With noReplace it never replaces newname (EEXIST), or
	// fails with ENOTSUP where the filesystem cannot promise that.
	Rename(oldname, newname string, noReplace bool) error
	// Unlink removes the entry name if it is not a directory; a directory gives EISDIR.
	Unlink(name string) error
	// Rmdir removes the empty directory name.
	Rmdir(name string) error
	// Chmod sets the directory's mode (permissions and set-id/sticky bits).
	Chmod(mode fs.FileMode) error
	// Chown sets the directory's owner and group; -1 leaves one as it is.
	Chown(uid, gid int) error
	// Sync makes the directory's entries durable. Filesystems that cannot sync a directory
	// succeed.
	Sync() error
	// Name is the directory's path for messages.
	Name() string
	Close() error
}

// File is an open regular file.
type File interface {
	io.ReaderAt
	io.Writer
	Stat() (Info, error)
	// Sync makes the file's data durable.
	Sync() error
	// Lock takes an exclusive advisory lock on the file, waiting for it; it is released on
	// Close. Where the filesystem has no locks, Lock succeeds without locking: callers
	// serialize within their process themselves.
	Lock() error
	Close() error
}
