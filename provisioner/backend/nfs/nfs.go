// Package nfs serves volumes as subdirectories of NFS exports. A class reaches its export in one
// of two ways (parameter access): mounted into dirpv's own pod (mount: the kubelet mounts it, so
// a hung server never wedges the provisioner's mount table), or as a user-space NFSv3 client
// (direct: no mount at all, any server the operator allows, and a deadline on every call).
package nfs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// Name is the class parameter "backend" and the PV annotation dirpv.io/backend of NFS volumes.
const Name = "nfs"

// Class parameters and PV annotations of NFS volumes.
const (
	ParamServer = "server"
	ParamShare  = "share"
	ParamAccess = "access"
	AnnServer   = "dirpv.io/server"
	AnnShare    = "dirpv.io/share"
	// AnnAccess is "direct" on volumes made with access: direct; absent means mount.
	AnnAccess = "dirpv.io/nfs-access"
)

// Access is how dirpv reaches an export.
type Access string

const (
	// AccessMount works on the export's mount in dirpv's pod (--nfs-export).
	AccessMount Access = "mount"
	// AccessDirect talks NFSv3 to the server from user space (--nfs-allow).
	AccessDirect Access = "direct"
)

// Class is the nfs part of a StorageClass.
type Class struct {
	// Server and Share name the NFS export, or a directory inside one, that holds the volumes.
	Server string
	Share  string
	Access Access
}

// Location is where an NFS volume lives: Path is relative to Share on Server.
type Location struct {
	Server string
	Share  string
	Access Access
}

var _ backend.Location = Location{}

// Root implements backend.Location.
func (l Location) Root() string { return l.Share }

// Describe implements backend.Location.
func (l Location) Describe(fullPath string) string { return l.Server + ":" + fullPath }

// Annotations implements backend.Location.
func (l Location) Annotations() map[string]string {
	a := map[string]string{AnnServer: l.Server, AnnShare: l.Share}
	if l.Access == AccessDirect {
		a[AnnAccess] = string(AccessDirect)
	}
	return a
}

// Spec implements backend.Location: the kubelet mounts the directory with the class's mount options.
func (l Location) Spec(spec *v1.PersistentVolumeSpec, fullPath string, sc *storagev1.StorageClass) {
	spec.NFS = &v1.NFSVolumeSource{Server: l.Server, Path: fullPath}
	spec.MountOptions = sc.MountOptions
}

// Backend runs every operation in-process: on the local mount of the export, or over NFSv3.
type Backend struct {
	Exports config.NFSExports
	// Allow lists what access: direct may reach; Direct reaches it. Empty: direct access is off.
	Allow   config.NFSAllow
	Direct  *Direct
	Timeout time.Duration
	// Stalls tracks operations blocked past Timeout on a hung export; while one is, the export
	// takes no new operations.
	Stalls volumeop.Stalls
}

var _ backend.Backend = (*Backend)(nil)

// New is the backend as the options configure it: direct access is on when --nfs-allow names
// something. fence, when set, is asked before every call to a server (see Direct.Fence): the
// leader's, so that a replica that lost its Lease sends nothing. reg, when set, gets the
// backend's metrics.
func New(o *config.Options, fence func() error, reg prometheus.Registerer) *Backend {
	b := &Backend{Exports: o.NFSExports, Allow: o.NFSAllow, Timeout: o.OperationTimeout}
	if len(o.NFSAllow) > 0 {
		b.Direct = &Direct{UID: o.NFSUID, GID: o.NFSGID, CallTimeout: o.NFSCallTimeout, Fence: fence}
	}
	if reg != nil {
		b.register(reg)
	}
	return b
}

// register registers the gauges of a hung or silent server with reg.
func (b *Backend) register(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "nfs_operations_blocked",
		Help: "Operations on NFS exports still blocked past their deadline (a hung server).",
	}, func() float64 { return float64(b.Stalls.Count()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "nfs_servers_silent",
		Help: "NFS servers reached with access: direct that stopped answering (their operations fail until they answer).",
	}, func() float64 {
		if b.Direct == nil {
			return 0
		}
		return float64(b.Direct.Silent())
	}))
}

// Name implements config.Backend.
func (b *Backend) Name() string { return Name }

// Params implements config.Backend.
func (b *Backend) Params() []string { return []string{ParamServer, ParamShare, ParamAccess} }

// ParseParams implements config.Backend; it returns a Class.
func (b *Backend) ParseParams(params map[string]string, bad func(key, format string, args ...any)) any {
	var c Class
	c.Server = params[ParamServer]
	if c.Server == "" {
		bad(ParamServer, "is required for backend nfs")
	} else if err := config.CheckServer(c.Server); err != nil {
		bad(ParamServer, "%v", err)
	}
	if share := params[ParamShare]; share == "" {
		bad(ParamShare, "is required for backend nfs")
	} else if s, err := config.CleanRoot(share); err != nil {
		bad(ParamShare, "%v", err)
	} else {
		c.Share = s
	}
	c.Access = AccessMount
	config.OneOf(params, ParamAccess, bad, &c.Access, AccessMount, AccessDirect)
	if params[config.ParamCapacity] == string(config.CapacityEnforce) {
		// Limits live in the server's filesystem, which dirpv reaches only through NFS.
		bad(config.ParamCapacity, "%s is not possible with backend nfs: only the NFS server can enforce sizes (set quotas there); use %s", config.CapacityEnforce, config.CapacityLabel)
	}
	return c
}

// AccessModes implements backend.Backend: every node can mount an export.
func (b *Backend) AccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadOnlyMany, v1.ReadWriteMany, v1.ReadWriteOncePod}
}

// Place implements backend.Backend.
func (b *Backend) Place(_ context.Context, class *config.Class, _ controller.ProvisionOptions) (backend.Location, error) {
	c, ok := class.Params.(Class)
	if !ok {
		return nil, fmt.Errorf("not an nfs class: %T", class.Params)
	}
	l := Location(c)
	return l, b.reachable(l)
}

// Locate implements backend.Backend: the share must be an export this pod has mounted, or a
// directory inside one, holding no names that start with "." (those are dirpv's).
func (b *Backend) Locate(pv *v1.PersistentVolume, p string) (backend.Location, error) {
	l := Location{Server: pv.Annotations[AnnServer], Share: pv.Annotations[AnnShare], Access: AccessMount}
	if _, err := config.CleanAbsolute(l.Share); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnShare, err)
	}
	if a, ok := pv.Annotations[AnnAccess]; ok {
		if Access(a) != AccessDirect {
			return nil, fmt.Errorf("annotation %s: %q is not %s", AnnAccess, a, AccessDirect)
		}
		l.Access = AccessDirect
	}
	if s := pv.Spec.NFS; s == nil || s.Server != l.Server || s.Path != path.Join(l.Share, p) {
		return nil, fmt.Errorf("the PV's nfs source does not match its dirpv.io/ annotations (%s)", l.Describe(path.Join(l.Share, p)))
	}
	return l, b.reachable(l)
}

// reachable checks that this process may reach l the way l says.
func (b *Backend) reachable(l Location) error {
	if l.Access == AccessDirect {
		_, _, err := b.allowed(l)
		return err
	}
	_, _, err := b.export(l)
	return err
}

// allowed returns the directory of l's server that direct operations on l run from (see
// config.NFSAllow.Root) and l's share relative to it.
func (b *Backend) allowed(l Location) (string, string, error) {
	if len(b.Allow) == 0 || b.Direct == nil {
		return "", "", fmt.Errorf("access: direct is off in this provisioner (no --nfs-allow); allow NFS server %s with --nfs-allow=%s:%s", l.Server, l.Server, l.Share)
	}
	root, rel, ok := b.Allow.Root(l.Server, l.Share)
	if !ok {
		return "", "", fmt.Errorf("NFS server %s, share %s, is not allowed for access: direct (the provisioner allows: %s); add --nfs-allow=%s:%s",
			l.Server, l.Share, b.Allow.String(), l.Server, l.Share)
	}
	if rel != "." {
		if err := pathname.Validate(rel); err != nil {
			return "", "", fmt.Errorf("share %s (in export %s:%s): %w", l.Share, l.Server, root, err)
		}
	}
	return root, rel, nil
}

// export returns the mounted export v lies in and v's share relative to it.
func (b *Backend) export(v Location) (*config.NFSExport, string, error) {
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

// Run implements backend.Backend. Operations run in the outermost export that holds the share
// (mounted, or allowed), so that volumes of every class on that export are seen by every check.
func (b *Backend) Run(ctx context.Context, v backend.Volume, op volumeop.Op) (volumeop.Result, error) {
	l, ok := v.Location.(Location)
	if !ok {
		return volumeop.Result{}, fmt.Errorf("not an nfs volume: %s", v)
	}
	if l.Access == AccessDirect {
		root, rel, err := b.allowed(l)
		if err != nil {
			return volumeop.Result{}, err
		}
		op.Path = path.Join(rel, op.Path)
		ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("no answer from NFS server %s within %v", l.Server, b.Timeout))
		defer cancel()
		return b.Direct.Run(ctx, l.Server, root, op)
	}
	e, rel, err := b.export(l)
	if err != nil {
		return volumeop.Result{}, err
	}
	op.Path = path.Join(rel, op.Path)
	ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("no answer from NFS export %s:%s within %v", e.Server, e.Share, b.Timeout))
	defer cancel()
	return b.Stalls.RunLocal(ctx, "NFS export "+e.Server+":"+e.Share, e.LocalPath, op)
}

// Err says which exports and servers do not answer (a hung mount, a silent server), for
// /readyz; nil if all do.
func (b *Backend) Err() error {
	err := b.Stalls.Err()
	if b.Direct != nil {
		err = errors.Join(err, b.Direct.Err())
	}
	return err
}
