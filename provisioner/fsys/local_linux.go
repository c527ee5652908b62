package fsys

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// local is a directory open as a descriptor; every call names one entry relative to it.
type local struct {
	fd   int
	name string
}

// OpenLocal opens the directory at path (an operator's root: a symbolic link there is followed).
func OpenLocal(p string) (Dir, error) {
	fd, err := retry(func() (int, error) { return unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return &local{fd: fd, name: p}, nil
}

// NewLocal makes an open directory a Dir, which then owns its descriptor.
func NewLocal(f *os.File) (Dir, error) {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, &fs.PathError{Op: "dup", Path: f.Name(), Err: err}
	}
	unix.CloseOnExec(fd)
	name := f.Name()
	f.Close()
	return &local{fd: fd, name: name}, nil
}

func (d *local) Name() string { return d.name }

// path names an entry for messages. Past maxName the directory's own name is elided, so that a
// walk down a deep tree does not build ever longer names.
func (d *local) path(name string) string {
	if len(d.name) > maxName {
		return path.Join("...", name)
	}
	return path.Join(d.name, name)
}

// maxName bounds the directory names kept for messages.
const maxName = 1024

func (d *local) Close() error { return unix.Close(d.fd) }

func (d *local) Stat() (Info, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return Info{}, &fs.PathError{Op: "stat", Path: d.name, Err: err}
	}
	return infoOf(&st), nil
}

func (d *local) Mount() uint64 { return mountID(d.fd) }

func (d *local) Lstat(name string) (Info, error) {
	var st unix.Stat_t
	if err := fstatat(d.fd, name, &st); err != nil {
		return Info{}, &fs.PathError{Op: "lstat", Path: d.path(name), Err: err}
	}
	return infoOf(&st), nil
}

func (d *local) OpenDir(name string, want ID) (Dir, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW
	fd, err := openat(d.fd, name, flags)
	if err == unix.EACCES && name != ".." {
		if err := d.addOwnerBits(name, want); err != nil {
			return nil, &fs.PathError{Op: "chmod", Path: d.path(name), Err: err}
		}
		fd, err = openat(d.fd, name, flags)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path(name), Err: err}
	}
	sub := &local{fd: fd, name: d.path(name)}
	if want != (ID{}) {
		info, err := sub.Stat()
		if err == nil && info.ID != want {
			err = &fs.PathError{Op: "open", Path: sub.name, Err: ErrChanged}
		}
		if err != nil {
			sub.Close()
			return nil, err
		}
	}
	return sub, nil
}

// addOwnerBits adds u+rwx to the subdirectory name, which must be want if want is set. It works
// through an O_PATH descriptor, which needs no permission on the directory and cannot be
// anything but that directory.
func (d *local) addOwnerBits(name string, want ID) error {
	fd, err := openat(d.fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if want != (ID{}) && infoOf(&st).ID != want {
		return ErrChanged
	}
	return chmodPathFD(fd, st.Mode&0o7777|0o700)
}

func (d *local) EachName(f func(string)) error {
	if _, err := unix.Seek(d.fd, 0, 0); err != nil {
		return &fs.PathError{Op: "seek", Path: d.name, Err: err}
	}
	buf := make([]byte, 16<<10)
	var names []string
	for {
		n, err := unix.Getdents(d.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "readdir", Path: d.name, Err: err}
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			f(name)
		}
	}
}

func (d *local) Mkdir(name string, mode fs.FileMode) error {
	if err := again(func() error { return unix.Mkdirat(d.fd, name, unixMode(mode)) }); err != nil {
		return &fs.PathError{Op: "mkdir", Path: d.path(name), Err: err}
	}
	return nil
}

func (d *local) Create(name string, mode fs.FileMode) (File, error) {
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, unixMode(mode))
	})
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: d.path(name), Err: err}
	}
	return &localFile{os.NewFile(uintptr(fd), d.path(name))}, nil
}

func (d *local) OpenFile(name string, write bool) (File, error) {
	var st unix.Stat_t
	if err := fstatat(d.fd, name, &st); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: d.path(name), Err: err}
	}
	want := infoOf(&st)
	if !want.IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: d.path(name), Err: unix.EINVAL}
	}
	flags := unix.O_RDONLY
	if write {
		flags = unix.O_RDWR
	}
	fd, err := openat(d.fd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path(name), Err: err}
	}
	f := &localFile{os.NewFile(uintptr(fd), d.path(name))}
	info, err := f.Stat()
	if err == nil && info.ID != want.ID {
		err = &fs.PathError{Op: "open", Path: d.path(name), Err: ErrChanged}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (d *local) Link(oldname, newname string) error {
	if err := again(func() error { return unix.Linkat(d.fd, oldname, d.fd, newname, 0) }); err != nil {
		return &os.LinkError{Op: "link", Old: d.path(oldname), New: d.path(newname), Err: err}
	}
	return nil
}

func (d *local) Rename(oldname, newname string, noReplace bool) error {
	var flags uint
	if noReplace {
		flags = unix.RENAME_NOREPLACE
	}
	if err := again(func() error { return unix.Renameat2(d.fd, oldname, d.fd, newname, flags) }); err != nil {
		return &os.LinkError{Op: "rename", Old: d.path(oldname), New: d.path(newname), Err: err}
	}
	return nil
}

func (d *local) Unlink(name string) error {
	if err := again(func() error { return unix.Unlinkat(d.fd, name, 0) }); err != nil {
		return &fs.PathError{Op: "unlink", Path: d.path(name), Err: err}
	}
	return nil
}

func (d *local) Rmdir(name string) error {
	if err := again(func() error { return unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR) }); err != nil {
		return &fs.PathError{Op: "rmdir", Path: d.path(name), Err: err}
	}
	return nil
}

func (d *local) Chmod(mode fs.FileMode) error {
	if err := again(func() error { return unix.Fchmod(d.fd, unixMode(mode)) }); err != nil {
		return &fs.PathError{Op: "chmod", Path: d.name, Err: err}
	}
	return nil
}

func (d *local) Chown(uid, gid int) error {
	if err := again(func() error { return unix.Fchown(d.fd, uid, gid) }); err != nil {
		return &fs.PathError{Op: "chown", Path: d.name, Err: err}
	}
	return nil
}

func (d *local) Sync() error {
	if err := again(func() error { return unix.Fsync(d.fd) }); err != nil && err != unix.EINVAL {
		return &fs.PathError{Op: "sync", Path: d.name, Err: err}
	}
	return nil
}

// localFile is an open regular file.
type localFile struct{ *os.File }

func (f *localFile) Stat() (Info, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Info{}, &fs.PathError{Op: "stat", Path: f.Name(), Err: err}
	}
	return infoOf(&st), nil
}

func (f *localFile) Lock() error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = again(func() error { return unix.Flock(int(fd), unix.LOCK_EX) })
	}); err != nil {
		return err
	}
	switch lerr {
	case nil, unix.ENOLCK, unix.EOPNOTSUPP, unix.ENOSYS:
		return nil
	}
	return &fs.PathError{Op: "flock", Path: f.Name(), Err: lerr}
}

func infoOf(st *unix.Stat_t) Info {
	i := Info{
		Mode: fs.FileMode(st.Mode & 0o777), UID: int(st.Uid), GID: int(st.Gid),
		Nlink: uint64(st.Nlink), Size: st.Size, ID: ID{Dev: uint64(st.Dev), Ino: st.Ino},
	}
	if st.Mode&unix.S_ISUID != 0 {
		i.Mode |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISGID != 0 {
		i.Mode |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		i.Mode |= fs.ModeSticky
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		i.Type = fs.ModeDir
	case unix.S_IFLNK:
		i.Type = fs.ModeSymlink
	case unix.S_IFIFO:
		i.Type = fs.ModeNamedPipe
	case unix.S_IFSOCK:
		i.Type = fs.ModeSocket
	case unix.S_IFCHR:
		i.Type = fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		i.Type = fs.ModeDevice
	}
	return i
}

// unixMode is the inverse of infoOf's mode mapping.
func unixMode(m fs.FileMode) uint32 {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		n |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		n |= unix.S_ISVTX
	}
	return n
}

// chmodPathFD changes the mode of the file an O_PATH descriptor refers to (fchmod refuses such
// descriptors): fchmodat2 with AT_EMPTY_PATH (Linux 6.6), else the descriptor's /proc/self/fd
// link, which names that very file.
func chmodPathFD(fd int, mode uint32) error {
	empty, _ := unix.BytePtrFromString("")
	for {
		_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(fd), uintptr(unsafe.Pointer(empty)), uintptr(mode), unix.AT_EMPTY_PATH, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		case unix.ENOSYS, unix.EINVAL, unix.EOPNOTSUPP:
			return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
		}
		return e
	}
}

// mountID is the ID of the mount fd lies on, or 0 if the kernel does not say.
func mountID(fd int) uint64 {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil ||
		stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0
	}
	return stx.Mnt_id
}

func openat(dirfd int, name string, flags int) (int, error) {
	return retry(func() (int, error) { return unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, 0) })
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	return again(func() error { return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
}

// again runs a system call until it is not interrupted.
func again(call func() error) error {
	for {
		if err := call(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func retry(call func() (int, error)) (int, error) {
	for {
		fd, err := call()
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// Descriptor returns the descriptor of a directory that OpenLocal or NewLocal opened, for the
// kernel interfaces that take one (quotas); false for any other Dir. The Dir still owns it.
func Descriptor(d Dir) (int, bool) {
	l, ok := d.(*local)
	if !ok {
		return -1, false
	}
	return l.fd, true
}
