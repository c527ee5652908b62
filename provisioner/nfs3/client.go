package nfs3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	xdr "github.com/rasky/go-xdr/xdr2"
	"github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// Well-known ports, used when the portmapper cannot be asked.
const (
	DefaultNFSPort        = 2049
	DefaultMountPort      = 20048 // ganesha's and Linux distributions' usual mountd port
	DefaultPortmapperPort = 111
)

// Config says how to reach one server and which credentials to send.
type Config struct {
	// Server is the server's host name or IP address (no port); an IPv6 address may be in
	// brackets, as dirpv's flags and classes allow.
	Server string
	// NFSPort and MountPort fix the ports of the NFS and MOUNT programs. Zero
	// asks the server's portmapper on each (re)connect and falls back to
	// DefaultNFSPort / DefaultMountPort if it cannot answer.
	NFSPort, MountPort int
	// PortmapperPort is the portmapper's port; zero means 111.
	PortmapperPort int

	// AUTH_SYS credentials: the uid, gid and up to 16 auxiliary gids the
	// server checks permissions against, and the machine name sent with them
	// (default: os.Hostname).
	UID, GID    uint32
	AuxGIDs     []uint32
	MachineName string

	// Dial opens the TCP connections (e.g. from inside a network namespace);
	// nil means a net.Dialer. The network passed is always "tcp".
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Fence, if set, is asked before every call is sent; an error stops the
	// call unsent. dirpv fences its calls with its leadership: a replica that
	// may no longer lead sends nothing.
	Fence func() error
	// CallTimeout, if positive, bounds every call besides its context, so a
	// server that stops answering is noticed long before a whole operation's
	// deadline.
	CallTimeout time.Duration
}

// Client talks NFSv3 and MOUNT v3 to one server. It is safe for concurrent
// use: calls are multiplexed over one TCP connection per program.
type Client struct {
	server string
	// host is server as a dial address takes it: without an IPv6 address's brackets.
	host   string
	pmPort int
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	cred   rpc.Auth
	fence  func() error
	// callTimeout: see Config.CallTimeout.
	callTimeout time.Duration
	xid         atomic.Uint32
	closed      atomic.Bool
	// listMax bounds each listing: maxListEntries and maxListBytes, lowered by tests.
	listMax listMax

	nfs, mount *endpoint
}

// endpoint is one RPC program on the server and its current connection.
type endpoint struct {
	prog, vers uint32
	port       int // fixed port, or 0 for the portmapper
	defPort    int
	sem        chan struct{} // guards cur and dialing; a channel so waiting honours ctx
	cur        *conn
}

func newEndpoint(prog, vers uint32, port, defPort int) *endpoint {
	return &endpoint{prog: prog, vers: vers, port: port, defPort: defPort, sem: make(chan struct{}, 1)}
}

// New checks cfg and returns a Client. It does no I/O: the first call
// connects.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("nfs3: no server given")
	}
	if len(cfg.AuxGIDs) > 16 {
		return nil, fmt.Errorf("nfs3: %d auxiliary gids, AUTH_SYS allows 16", len(cfg.AuxGIDs))
	}
	machine := cfg.MachineName
	if machine == "" {
		machine, _ = os.Hostname()
	}
	if len(machine) > 255 {
		return nil, fmt.Errorf("nfs3: machine name longer than 255 bytes")
	}
	var cred bytes.Buffer
	if _, err := xdr.Marshal(&cred, authUnixBody{
		Stamp: uint32(time.Now().Unix()), Machine: machine,
		UID: cfg.UID, GID: cfg.GID, GIDs: append([]uint32{}, cfg.AuxGIDs...),
	}); err != nil {
		return nil, fmt.Errorf("nfs3: encoding credentials: %w", err)
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	pm := cfg.PortmapperPort
	if pm == 0 {
		pm = DefaultPortmapperPort
	}
	c := &Client{
		server:      cfg.Server,
		host:        strings.TrimSuffix(strings.TrimPrefix(cfg.Server, "["), "]"),
		pmPort:      pm,
		dial:        dial,
		fence:       cfg.Fence,
		callTimeout: cfg.CallTimeout,
		listMax:     listMax{entries: maxListEntries, bytes: maxListBytes},
		cred:        rpc.Auth{Flavor: authUnix, Body: cred.Bytes()},
		nfs:         newEndpoint(nfs.Nfs3Prog, nfs.Nfs3Vers, cfg.NFSPort, DefaultNFSPort),
		mount:       newEndpoint(nfs.MountProg, nfs.MountVers, cfg.MountPort, DefaultMountPort),
	}
	c.xid.Store(rand.Uint32())
	return c, nil
}

// Dial is New followed by a NULL call to the NFS program, so a bad address
// or port shows up at once.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the connections. Calls in flight fail; later calls return
// ErrClosed.
func (c *Client) Close() error {
	c.closed.Store(true)
	for _, ep := range []*endpoint{c.nfs, c.mount} {
		ep.sem <- struct{}{}
		if ep.cur != nil {
			ep.cur.fail(ErrClosed)
			ep.cur = nil
		}
		<-ep.sem
	}
	return nil
}

// Ping calls the NFS program's NULL procedure. It is not fenced: NULL changes nothing, and a
// replica that may not change anything still needs to know whether the server answers.
func (c *Client) Ping(ctx context.Context) error {
	d, err := c.exchange(ctx, c.nfs, 0, nil)
	if err == nil {
		err = d.end() // NULL's result is void
	}
	if err != nil {
		return c.opError("NULL", "", Handle{}, err)
	}
	return nil
}

func (c *Client) opError(op, name string, h Handle, err error) error {
	e := &Error{Server: c.server, Op: op, Name: name, Handle: h, Err: err}
	if s, ok := errors.AsType[statusError](err); ok {
		e.Status = Status(s)
		e.Err = Status(s).Errno()
	}
	return e
}

// call runs one procedure of ep's program and returns a decoder at its
// results.
func (c *Client) call(ctx context.Context, ep *endpoint, proc uint32, args any) (*decoder, error) {
	if c.fence != nil {
		if err := c.fence(); err != nil {
			return nil, err
		}
	}
	return c.exchange(ctx, ep, proc, args)
}

// exchange sends one call, fence or not, and waits for its reply.
func (c *Client) exchange(ctx context.Context, ep *endpoint, proc uint32, args any) (*decoder, error) {
	if c.callTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.callTimeout)
		defer cancel()
	}
	cn, err := c.connect(ctx, ep)
	if err != nil {
		return nil, err
	}
	xid := c.xid.Add(1)
	msg, err := encodeCall(xid, rpc.Header{
		Rpcvers: rpcVersion, Prog: ep.prog, Vers: ep.vers, Proc: proc,
		Cred: c.cred, Verf: rpc.AuthNull,
	}, args)
	if err != nil {
		return nil, err
	}
	rec, err := cn.call(ctx, xid, msg)
	if err != nil {
		return nil, err
	}
	return parseReply(rec)
}

// nfsCall runs an NFS procedure and reads its status. On a non-OK status it
// returns the decoder (positioned after the status, for the failure's
// wcc_data) and a statusError. NFS3ERR_JUKEBOX ("try again later") is retried
// until ctx ends, as the kernel client does.
func (c *Client) nfsCall(ctx context.Context, proc uint32, args any) (*decoder, error) {
	backoff := 100 * time.Millisecond
	for {
		d, err := c.call(ctx, c.nfs, proc, args)
		if err != nil {
			return nil, err
		}
		st := Status(d.uint32())
		if d.err != nil {
			return nil, d.err
		}
		if st == StatusOK {
			return d, nil
		}
		if st != StatusJukebox {
			return d, statusError(st)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("server kept answering NFS3ERR_JUKEBOX: %w", ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// connect returns ep's connection, dialing a new one if there is none or it
// broke.
func (c *Client) connect(ctx context.Context, ep *endpoint) (*conn, error) {
	select {
	case ep.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to connect to %s: %w", c.server, ctx.Err())
	}
	defer func() { <-ep.sem }()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if ep.cur != nil && ep.cur.broken() == nil {
		return ep.cur, nil
	}
	ep.cur = nil
	port, how, err := c.port(ctx, ep)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(c.host, strconv.Itoa(port))
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s (%s): %w", addr, how, err)
	}
	ep.cur = newConn(nc, addr)
	return ep.cur, nil
}

// port returns ep's port and how it was found, for error messages.
func (c *Client) port(ctx context.Context, ep *endpoint) (int, string, error) {
	if ep.port != 0 {
		return ep.port, "configured port", nil
	}
	p, err := c.getport(ctx, ep.prog, ep.vers)
	if err == nil {
		return p, "port from the portmapper", nil
	}
	if ctx.Err() != nil {
		return 0, "", err
	}
	return ep.defPort, fmt.Sprintf("default port; portmapper: %v", err), nil
}

// getport asks the portmapper (v2 GETPORT) for prog's TCP port, over a
// connection of its own that is closed afterwards.
func (c *Client) getport(ctx context.Context, prog, vers uint32) (int, error) {
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.pmPort))
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	cn := newConn(nc, addr)
	defer cn.fail(errors.New("portmapper connection closed after use"))
	xid := c.xid.Add(1)
	msg, err := encodeCall(xid, rpc.Header{
		Rpcvers: rpcVersion, Prog: rpc.PmapProg, Vers: rpc.PmapVers, Proc: rpc.PmapProcGetPort,
		Cred: rpc.AuthNull, Verf: rpc.AuthNull,
	}, rpc.Mapping{Prog: prog, Vers: vers, Prot: rpc.IPProtoTCP})
	if err != nil {
		return 0, err
	}
	rec, err := cn.call(ctx, xid, msg)
	if err != nil {
		return 0, err
	}
	d, err := parseReply(rec)
	if err != nil {
		return 0, err
	}
	port := d.uint32()
	if err := d.end(); err != nil {
		return 0, err
	}
	if port == 0 || port > 65535 {
		return 0, fmt.Errorf("program %d version %d not registered for TCP", prog, vers)
	}
	return int(port), nil
}
