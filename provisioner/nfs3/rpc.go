package nfs3

// ONC RPC (RFC 5531) over TCP with record marking: one connection per server
// program, calls multiplexed by XID. This replaces go-nfs-client's rpc.Client
// (see doc.go); the message layouts and their XDR coding are the library's.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	xdr "github.com/rasky/go-xdr/xdr2"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

const (
	rpcVersion    = 2
	msgCall       = 0
	msgReply      = 1
	authUnix      = 1 // AUTH_SYS
	lastFragment  = 1 << 31
	maxRecordSize = 16 << 20 // far above any reply we ask for (64 KiB reads)
)

// callHeader is the call message up to the procedure's arguments.
type callHeader struct {
	XID     uint32
	MsgType uint32
	rpc.Header
}

// authUnixBody is the AUTH_SYS credential (RFC 5531, appendix A). The
// library's rpc.AuthUnix has room for one auxiliary gid only.
type authUnixBody struct {
	Stamp   uint32
	Machine string
	UID     uint32
	GID     uint32
	GIDs    []uint32
}

// encodeCall returns the record-marked call message, ready to write.
func encodeCall(xid uint32, h rpc.Header, args any) ([]byte, error) {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0, 0}) // record mark, filled in below
	if _, err := xdr.Marshal(&b, callHeader{XID: xid, MsgType: msgCall, Header: h}); err != nil {
		return nil, fmt.Errorf("encoding call header: %w", err)
	}
	if args != nil {
		if _, err := xdr.Marshal(&b, args); err != nil {
			return nil, fmt.Errorf("encoding arguments: %w", err)
		}
	}
	msg := b.Bytes()
	binary.BigEndian.PutUint32(msg, uint32(len(msg)-4)|lastFragment)
	return msg, nil
}

// decoder reads XDR values from a reply with a sticky error. Every read is
// limited to what is left of the record, so a bad length cannot make it
// allocate more than the record's size.
type decoder struct {
	r   *bytes.Reader
	err error
}

func (d *decoder) value(v any) {
	if d.err != nil {
		return
	}
	if _, err := xdr.UnmarshalLimited(d.r, v, uint(d.r.Len())); err != nil {
		d.err = fmt.Errorf("%w: %w", ErrMalformed, err)
	}
}

// end is every reply's last step: a reply is exactly its procedure's result, so bytes left
// after it make it as malformed as bytes missing. It returns the decoder's error.
func (d *decoder) end() error {
	if d.err == nil && d.r.Len() > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the result", ErrMalformed, d.r.Len())
	}
	return d.err
}

func (d *decoder) uint32() uint32 {
	var v uint32
	d.value(&v)
	return v
}

// parseReply checks the RPC reply header and returns a decoder positioned at
// the procedure's results.
func parseReply(rec []byte) (*decoder, error) {
	d := &decoder{r: bytes.NewReader(rec)}
	d.uint32() // XID, matched by the reader
	if t := d.uint32(); d.err == nil && t != msgReply {
		return nil, fmt.Errorf("rpc: message type %d is not a reply", t)
	}
	switch stat := d.uint32(); {
	case d.err != nil:
		return nil, d.err
	case stat == 1: // MSG_DENIED
		switch reject := d.uint32(); reject {
		case 0:
			lo, hi := d.uint32(), d.uint32()
			return nil, fmt.Errorf("rpc: RPC_MISMATCH (server supports versions %d-%d)", lo, hi)
		case 1:
			return nil, fmt.Errorf("rpc: AUTH_ERROR (auth_stat %d): credentials rejected", d.uint32())
		default:
			return nil, fmt.Errorf("rpc: call denied (reject_stat %d)", reject)
		}
	case stat != 0:
		return nil, fmt.Errorf("rpc: bad reply_stat %d", stat)
	}
	var verf rpc.Auth
	d.value(&verf)
	switch accept := d.uint32(); {
	case d.err != nil:
		return nil, d.err
	case accept == 0:
		return d, nil
	case accept == 1:
		return nil, errors.New("rpc: PROG_UNAVAIL: program not served")
	case accept == 2:
		lo, hi := d.uint32(), d.uint32()
		return nil, fmt.Errorf("rpc: PROG_MISMATCH: server supports versions %d-%d", lo, hi)
	case accept == 3:
		return nil, errors.New("rpc: PROC_UNAVAIL: procedure not supported")
	case accept == 4:
		return nil, errors.New("rpc: GARBAGE_ARGS: server could not decode the arguments")
	case accept == 5:
		return nil, errors.New("rpc: SYSTEM_ERR on the server")
	default:
		return nil, fmt.Errorf("rpc: bad accept_stat %d", accept)
	}
}

// readRecord reads one record, joining its fragments.
func readRecord(r io.Reader) ([]byte, error) {
	var rec []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		mark := binary.BigEndian.Uint32(hdr[:])
		n := int(mark &^ lastFragment)
		if len(rec)+n > maxRecordSize {
			return nil, fmt.Errorf("rpc: record larger than %d bytes", maxRecordSize)
		}
		start := len(rec)
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(r, rec[start:]); err != nil {
			return nil, err
		}
		if mark&lastFragment != 0 {
			return rec, nil
		}
	}
}

// conn is one TCP connection to one RPC program. Any number of calls may be
// in flight on it; a reader goroutine hands each reply to the caller waiting
// for its XID. Once broken (err set), it stays broken and is replaced.
type conn struct {
	nc   net.Conn
	addr string
	wsem chan struct{} // one writer at a time; a channel so waiting honours ctx

	mu      sync.Mutex
	pending map[uint32]chan []byte
	replies uint64 // replies received so far, to tell a silent server from a slow call
	err     error
}

func newConn(nc net.Conn, addr string) *conn {
	c := &conn{nc: nc, addr: addr, wsem: make(chan struct{}, 1), pending: map[uint32]chan []byte{}}
	go c.readLoop()
	return c
}

func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		rec, err := readRecord(br)
		if err == nil && len(rec) < 4 {
			err = errors.New("rpc: short record")
		}
		if err != nil {
			c.fail(fmt.Errorf("%w: %s: %v", ErrConnLost, c.addr, err))
			return
		}
		xid := binary.BigEndian.Uint32(rec)
		c.mu.Lock()
		ch := c.pending[xid]
		delete(c.pending, xid)
		c.replies++
		c.mu.Unlock()
		if ch != nil { // nil: its caller gave up; drop the reply
			ch <- rec // buffered
		}
	}
}

// fail marks c broken, closes it and wakes every caller still waiting.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.nc.Close()
	for _, ch := range pending {
		close(ch)
	}
}

func (c *conn) broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// call sends msg (carrying xid) and waits for its reply or ctx. When ctx ends
// first and nothing at all has arrived on the connection since the call was
// sent, the server is taken to be unresponsive and the connection is
// discarded (so the next call redials); when other replies did arrive, the
// server is alive and only this call is abandoned.
func (c *conn) call(ctx context.Context, xid uint32, msg []byte) ([]byte, error) {
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.pending[xid] = ch
	seen := c.replies
	c.mu.Unlock()

	if err := c.send(ctx, msg); err != nil {
		c.forget(xid)
		return nil, err
	}
	select {
	case rec, ok := <-ch:
		if !ok {
			return nil, c.broken()
		}
		return rec, nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	select {
	case rec := <-ch: // the reply won the race after all
		c.mu.Unlock()
		if rec != nil {
			return rec, nil
		}
		return nil, c.err
	default:
	}
	if c.pending != nil {
		delete(c.pending, xid)
	}
	silent := c.replies == seen
	c.mu.Unlock()
	if silent {
		c.fail(fmt.Errorf("%w: %s did not answer before a caller's deadline", ErrConnLost, c.addr))
	}
	return nil, fmt.Errorf("no reply from %s: %w", c.addr, ctx.Err())
}

func (c *conn) forget(xid uint32) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, xid)
	}
	c.mu.Unlock()
}

// send writes one whole record. A failed or partial write would desynchronise
// the stream, so it breaks the connection.
func (c *conn) send(ctx context.Context, msg []byte) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("sending to %s: %w", c.addr, ctx.Err())
	}
	defer func() { <-c.wsem }()

	deadline, _ := ctx.Deadline() // zero: none
	c.nc.SetWriteDeadline(deadline)
	// A cancel (rather than a deadline) interrupts a blocked write too. Wait
	// for the callback if it already started, so it cannot reset the next
	// writer's deadline.
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		c.nc.SetWriteDeadline(time.Unix(1, 0))
	})
	_, err := c.nc.Write(msg)
	if !stop() {
		<-done
	}
	if err == nil {
		return nil
	}
	c.fail(fmt.Errorf("%w: writing to %s: %v", ErrConnLost, c.addr, err))
	if ctx.Err() != nil {
		return fmt.Errorf("sending to %s: %w", c.addr, ctx.Err())
	}
	return c.broken()
}
