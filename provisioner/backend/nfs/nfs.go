// Package nfs serves volumes as subdirectories of NFS exports that are mounted into dirpv's own pod
// (the kubelet mounts them, so a hung server never wedges the provisioner's mount table).
package nfs

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Backend runs every operation in-process on the local mount of the export.
type Backend struct {
	Exports config.NFSExports
	Timeout time.Duration
	// Stalls tracks operations blocked past Timeout on a hung export; while one is, the export
	// takes no new operations.
	Stalls volumeop.Stalls
}

var _ backend.Backend = (*Backend)(nil)

// Place implements backend.Backend.
func (b *Backend) Place(class *config.Class, _ controller.ProvisionOptions) (backend.Volume, error) {
	v := backend.Volume{Backend: config.BackendNFS, Server: class.Server, Share: class.Share}
	return v, b.Allowed(v)
}

// Allowed implements backend.Backend: the share must be an export this pod has mounted, or a
// directory inside one, holding no names that start with "." (those are dirpv's).
func (b *Backend) Allowed(v backend.Volume) error {
	_, _, err := b.export(v)
	return err
}

// export returns the mounted export v lies in and v's share relative to it.
func (b *Backend) export(v backend.Volume) (*config.NFSExport, string, error) {
	e, rel := b.Exports.Containing(v.Server, v.Share)
	if e == nil {
		return nil, "", fmt.Errorf("NFS export %s:%s is not mounted in the provisioner (it serves: %s); add --nfs-export=%s:%s=/local/path and its volume to the Deployment",
			v.Server, v.Share, b.served(), v.Server, v.Share)
	}
	if rel != "." {
		if err := pathname.Validate(rel); err != nil {
			return nil, "", fmt.Errorf("share %s (in export %s:%s): %w", v.Share, e.Server, e.Share, err)
		}
	}
	return e, rel, nil
}

func (b *Backend) served() string {
	if len(b.Exports) == 0 {
		return "none"
	}
	var s []string
	for _, e := range b.Exports {
		s = append(s, e.Server+":"+e.Share)
	}
	return strings.Join(s, ", ")
}

// Run implements backend.Backend. Operations run in the outermost mounted export that holds
// the share, so that volumes of every class on that export are seen by every check.
func (b *Backend) Run(ctx context.Context, v backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	e, rel, err := b.export(v)
	if err != nil {
		return volumeop.Result{}, err
	}
	op.Path = path.Join(rel, op.Path)
	ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("no answer from NFS export %s:%s within %v", e.Server, e.Share, b.Timeout))
	defer cancel()
	return b.Stalls.RunLocal(ctx, "NFS export "+e.Server+":"+e.Share, e.LocalPath, op)
}
