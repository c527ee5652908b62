package volumeop

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/quota"
)

// ErrNotThere matches the error of a Room that must find its directory and did not.
var ErrNotThere = errors.New("not there")

// ErrNotMounted matches the error of a Room whose directory must be the root of a mounted
// filesystem and is a plain directory on its parent's.
var ErrNotMounted = errors.New("not a mounted filesystem")

// unusable says why a directory cannot take volumes; it matches kind.
type unusable struct {
	msg  string
	kind error
}

func (e *unusable) Error() string        { return e.msg }
func (e *unusable) Is(target error) bool { return target == e.kind }

// probe says how the filesystem of the directory p under root can enforce sizes: p is a class's
// base directory, "." for the root itself; where it does not exist yet (its first volume makes
// it), its deepest ancestor that does stands for it. A symbolic link on the way is refused.
func probe(root fsys.Dir, p string) (Result, error) {
	dir, err := openBase(root, "probe", p, false)
	if err != nil {
		return Result{}, err
	}
	defer dir.Close()
	fd, ok := fsys.Descriptor(dir)
	if !ok {
		return Result{}, fmt.Errorf("probe %q: sizes can only be enforced on a local filesystem", p)
	}
	kind, err := quota.Probe(fd)
	if err != nil {
		return Result{}, err
	}
	return Result{Quota: kind.String()}, nil
}

// openBase opens a class's base directory p under root ("." for the root itself), or, unless
// mustExist, its deepest ancestor that exists where it does not (its first volume makes it).
// A symbolic link on the way is refused; op names the operation in errors.
func openBase(root fsys.Dir, op, p string, mustExist bool) (fsys.Dir, error) {
	var names []string
	if p != "." {
		if err := pathname.Validate(p); err != nil {
			return nil, fmt.Errorf("%s %q: %w", op, p, err)
		}
		names = strings.Split(p, "/")
	}
	dir, err := root.OpenDir(".", fsys.ID{})
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		sub, err := dir.OpenDir(name, fsys.ID{})
		if errors.Is(err, fs.ErrNotExist) && !mustExist {
			break
		}
		if err != nil {
			dir.Close()
			if errors.Is(err, fs.ErrNotExist) {
				return nil, &unusable{fmt.Sprintf("%s is not there", p), ErrNotThere}
			}
			return nil, fmt.Errorf("%s %q: %w", op, p, err)
		}
		dir.Close()
		dir = sub
	}
	return dir, nil
}
