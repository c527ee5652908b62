package nfs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"dirpv.io/dirpv/provisioner/nfs3"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// DefaultProbeInterval is how often a server that stopped answering is asked again whether it
// is back; until then its operations fail at once, so that they do not hold workers other
// classes need.
const DefaultProbeInterval = 10 * time.Second

// probeTimeout bounds one such question.
const probeTimeout = 5 * time.Second

// Direct reaches NFS servers as a user-space NFSv3 client: one client per server, kept, and
// redialled after errors (nfs3.Client does), presenting AUTH_UNIX credentials UID and GID.
type Direct struct {
	UID int
	GID int
	// Dial connects to servers; nil: plain TCP. Tests dial into a network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ProbeInterval: see DefaultProbeInterval; 0 means the default.
	ProbeInterval time.Duration
	// CallTimeout bounds every call (see nfs3.Config.CallTimeout); 0: only the operation's
	// deadline does.
	CallTimeout time.Duration
	// Fence, if set, is asked before every call to a server; an error stops the call unsent
	// (see nfs3.Config.Fence). Set it before the first Run.
	Fence func() error

	mu      sync.Mutex
	clients map[string]*nfs3.Client
	roots   map[string]nfs3.Handle // "server:root" -> the directory's handle
	down    map[string]*silence
}

// silence is a server that stopped answering.
type silence struct {
	since     time.Time
	err       error
	lastProbe time.Time
	probing   bool
}

// Run performs op in the directory root of server (an export, or a directory inside one), with
// op.Path relative to it. ctx bounds every call.
func (d *Direct) Run(ctx context.Context, server, root string, op volumeop.Op) (volumeop.Result, error) {
	c, err := d.client(server)
	if err != nil {
		return volumeop.Result{}, err
	}
	if err := d.check(ctx, server, c); err != nil {
		return volumeop.Result{}, err
	}
	res, err := d.run(ctx, c, server, root, op)
	// A call that ran out of its own time while the operation still had some: the server did
	// not answer. An operation that ran out of time as a whole (a big scrub on a slow server)
	// says nothing of the kind.
	d.note(server, err, ctx.Err() == nil)
	if errors.Is(err, syscall.EPERM) && op.Kind == volumeop.Create && (op.UID >= 0 || op.GID >= 0) {
		err = fmt.Errorf("%w (the server refused to set the owner: an export that squashes root needs a class without uid and gid, or dirpv's --nfs-uid and --nfs-gid set to the export's anonymous user, whose ids every volume then gets)", err)
	}
	return res, err
}

func (d *Direct) run(ctx context.Context, c *nfs3.Client, server, root string, op volumeop.Op) (volumeop.Result, error) {
	h, err := d.root(ctx, c, server, root)
	if err != nil {
		return volumeop.Result{}, err
	}
	dir, err := c.OpenDir(ctx, h, server+":"+root)
	if errors.Is(err, syscall.ESTALE) {
		// The server forgot the handle (restarted, or the directory was replaced): look again.
		d.forget(server, root)
		if h, err = d.root(ctx, c, server, root); err == nil {
			dir, err = c.OpenDir(ctx, h, server+":"+root)
		}
	}
	if err != nil {
		return volumeop.Result{}, err
	}
	defer dir.Close()
	return volumeop.Apply(dir, op)
}

func (d *Direct) client(server string) (*nfs3.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.clients[server]; c != nil {
		return c, nil
	}
	c, err := nfs3.New(nfs3.Config{Server: server, UID: uint32(d.UID), GID: uint32(d.GID), MachineName: "dirpv", Dial: d.Dial, Fence: d.Fence, CallTimeout: d.CallTimeout})
	if err != nil {
		return nil, err
	}
	if d.clients == nil {
		d.clients = map[string]*nfs3.Client{}
	}
	d.clients[server] = c
	return c, nil
}

// root returns the handle of the directory root on server. MOUNT gives the handle of an
// export; a root inside one (a class's share on a server allowed as a whole) is reached from
// the nearest ancestor the server lets us mount, one LOOKUP at a time, never through a link.
func (d *Direct) root(ctx context.Context, c *nfs3.Client, server, root string) (nfs3.Handle, error) {
	key := server + ":" + root
	d.mu.Lock()
	h, ok := d.roots[key]
	d.mu.Unlock()
	if ok {
		return h, nil
	}
	var below []string
	for dir := root; ; dir = path.Dir(dir) {
		h, _, err := c.Mount(ctx, dir)
		if err == nil {
			if len(below) > 0 {
				slices.Reverse(below)
				if h, _, err = c.Walk(ctx, h, strings.Join(below, "/")); err != nil {
					return nfs3.Handle{}, fmt.Errorf("NFS server %s: %s: %w", server, root, err)
				}
			}
			d.mu.Lock()
			if d.roots == nil {
				d.roots = map[string]nfs3.Handle{}
			}
			d.roots[key] = h
			d.mu.Unlock()
			return h, nil
		}
		if dir == "/" || !(errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOENT)) {
			return nfs3.Handle{}, fmt.Errorf("NFS server %s: mounting %s: %w", server, root, err)
		}
		below = append(below, path.Base(dir))
	}
}

func (d *Direct) forget(server, root string) {
	d.mu.Lock()
	delete(d.roots, server+":"+root)
	d.mu.Unlock()
}

// check fails at once while server is known not to answer, asking it again every probe
// interval (one caller at a time).
func (d *Direct) check(ctx context.Context, server string, c *nfs3.Client) error {
	d.mu.Lock()
	s := d.down[server]
	if s == nil {
		d.mu.Unlock()
		return nil
	}
	if !d.probeDue(s) {
		err := d.silent(server, s)
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	return d.probe(ctx, server, c, s)
}

// probeDue reports whether s is to be asked again now, and if so marks it being asked. Call it
// with d.mu held.
func (d *Direct) probeDue(s *silence) bool {
	interval := d.ProbeInterval
	if interval == 0 {
		interval = DefaultProbeInterval
	}
	if s.probing || time.Since(s.lastProbe) < interval {
		return false
	}
	s.probing, s.lastProbe = true, time.Now()
	return true
}

// probe asks server, silent as s, whether it answers again (probeDue said to).
func (d *Direct) probe(ctx context.Context, server string, c *nfs3.Client, s *silence) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err := c.Ping(pctx)
	cancel()

	d.mu.Lock()
	defer d.mu.Unlock()
	s.probing = false
	if err == nil {
		delete(d.down, server)
		return nil
	}
	return d.silent(server, s)
}

func (d *Direct) silent(server string, s *silence) error {
	return fmt.Errorf("NFS server %s has not answered since %s (%v); its operations fail until it does", server, s.since.UTC().Format(time.RFC3339), s.err)
}

// note records whether server answered: a call that ran out of time while the operation had
// some left (opInTime) marks it silent; any operation that succeeded clears that.
func (d *Direct) note(server string, err error, opInTime bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		delete(d.down, server)
	case opInTime && errors.Is(err, context.DeadlineExceeded):
		if d.down == nil {
			d.down = map[string]*silence{}
		}
		if d.down[server] == nil {
			d.down[server] = &silence{since: time.Now(), err: err, lastProbe: time.Now()}
		}
	}
}

// Err names the servers that stopped answering, for /readyz; nil if there are none. It also
// starts asking those due to be asked again, in the background: a replica that runs no
// operations (a standby, whose calls the fence stops) learns so that a server answers again.
func (d *Direct) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, server := range slices.Sorted(maps.Keys(d.down)) {
		s := d.down[server]
		if c := d.clients[server]; c != nil && d.probeDue(s) {
			go func() { _ = d.probe(context.Background(), server, c, s) }()
		}
		errs = append(errs, d.silent(server, s))
	}
	return errors.Join(errs...)
}

// Silent counts the servers that stopped answering.
func (d *Direct) Silent() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.down)
}
