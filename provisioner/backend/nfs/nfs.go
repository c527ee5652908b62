// Package nfs serves volumes as subdirectories of NFS exports that are mounted into dirpv's own pod
// (the kubelet mounts them, so a hung server never wedges the provisioner's mount table).
package nfs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
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

// Allowed implements backend.Backend: the export must be one this pod has mounted.
func (b *Backend) Allowed(v backend.Volume) error {
	if b.Exports.Find(v.Server, v.Share) == nil {
		return fmt.Errorf("NFS export %s:%s is not mounted in the provisioner (it serves: %s); add --nfs-export=%s:%s=/local/path and its volume to the Deployment",
			v.Server, v.Share, b.served(), v.Server, v.Share)
	}
	return nil
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

// Run implements backend.Backend.
func (b *Backend) Run(ctx context.Context, v backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	e := b.Exports.Find(v.Server, v.Share)
	if e == nil {
		return volumeop.Result{}, b.Allowed(v)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("no answer from NFS export %s:%s within %v", v.Server, v.Share, b.Timeout))
	defer cancel()
	return b.Stalls.RunLocal(ctx, "NFS export "+v.Server+":"+v.Share, e.LocalPath, "", op)
}
