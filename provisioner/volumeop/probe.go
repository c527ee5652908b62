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

// probe says how the filesystem of the directory p under root can enforce sizes: p is a class's
// base directory, "." for the root itself; where it does not exist yet (its first volume makes
// it), its deepest ancestor that does stands for it. A symbolic link on the way is refused.
func probe(root fsys.Dir, p string) (Result, error) {
	var names []string
	if p != "." {
		if err := pathname.Validate(p); err != nil {
			return Result{}, fmt.Errorf("probe %q: %w", p, err)
		}
		names = strings.Split(p, "/")
	}
	dir, err := root.OpenDir(".", fsys.ID{})
	if err != nil {
		return Result{}, err
	}
	defer func() { dir.Close() }()
	for _, name := range names {
		sub, err := dir.OpenDir(name, fsys.ID{})
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return Result{}, fmt.Errorf("probe %q: %w", p, err)
		}
		dir.Close()
		dir = sub
	}
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
