package quota

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is how a filesystem enforces a directory's size.
type Kind int

const (
	// KindProject: XFS or ext4 project quotas, one project ID per volume directory.
	KindProject Kind = iota + 1
	// KindBtrfs: one btrfs subvolume per volume, limited by its qgroup.
	KindBtrfs
)

func (k Kind) String() string {
	switch k {
	case KindProject:
		return "project quota"
	case KindBtrfs:
		return "btrfs qgroup"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// FirstID is the lowest project ID dirpv allocates: the kubelet's fsquota feature allocates from
// 1048577 up, and other tools mostly use small IDs.
const FirstID uint32 = 1 << 30

// Usage is what a project or a subvolume holds, in bytes.
type Usage struct {
	Used uint64
	// Limit is the hard limit; 0 means none.
	Limit uint64
	// Inodes counts files and directories; btrfs does not count them (0).
	Inodes uint64
}

// ErrNotEnforced matches the errors of Probe that say a filesystem cannot enforce sizes as it
// is (the message says what it would need).
var ErrNotEnforced = errors.New("cannot enforce sizes")

// ErrNoRoom matches the error of a limit that would promise the volumes of a filesystem more than
// its size times the overcommit factor allows.
var ErrNoRoom = errors.New("no room for the volume's size")

// notEnforcedError is one of them: its message is the whole explanation.
type notEnforcedError struct{ msg string }

func (e *notEnforcedError) Error() string        { return e.msg }
func (e *notEnforcedError) Is(target error) bool { return target == ErrNotEnforced }

func notEnforced(format string, args ...any) error {
	return &notEnforcedError{fmt.Sprintf(format, args...)}
}

// maxNameLen is the longest subvolume name btrfs takes (BTRFS_NAME_LEN).
const maxNameLen = 255

// validName checks that name is a single path component a subvolume can have.
func validName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("invalid subvolume name %q: want a single path component", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("invalid subvolume name %q: want a single path component, without / or NUL", name)
	case len(name) > maxNameLen:
		return fmt.Errorf("invalid subvolume name %.20q...: longer than %d bytes", name, maxNameLen)
	}
	return nil
}

// kib is bytes in the 1 KiB blocks quotactl counts limits in, rounded up: a limit is never
// below what was asked.
func kib(bytes uint64) uint64 {
	n := bytes / 1024
	if bytes%1024 != 0 {
		n++
	}
	return n
}
