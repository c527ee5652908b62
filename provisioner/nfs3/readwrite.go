package nfs3

import (
	"context"
	"fmt"
	"syscall"
)

// maxIO bounds one READ or WRITE: every server accepts 64 KiB, and the
// files this client is for are small.
const maxIO = 64 << 10

// StableHow is a WRITE's durability (stable_how).
type StableHow uint32

const (
	Unstable StableHow = 0 // needs a COMMIT
	DataSync StableHow = 1
	FileSync StableHow = 2
)

// WriteResult is what Write reports.
type WriteResult struct {
	Count     int       // bytes written
	Committed StableHow // the weakest durability any part got
	Verifier  Verifier  // the server's write verifier, to compare with Commit's
}

// Write writes data at off, in as many WRITE calls as it takes.
func (c *Client) Write(ctx context.Context, h Handle, off uint64, data []byte, stable StableHow) (WriteResult, error) {
	res := WriteResult{Committed: FileSync}
	for len(data) > 0 || res.Count == 0 {
		chunk := data[:min(len(data), maxIO)]
		d, err := c.nfsCall(ctx, procWrite, writeArgs{
			FH: h.Bytes(), Offset: off, Count: uint32(len(chunk)), Stable: uint32(stable), Data: chunk,
		})
		if err != nil {
			return res, c.opError("WRITE", "", h, err)
		}
		d.wccAfter()
		var ok struct {
			Count     uint32
			Committed StableHow
			Verf      Verifier
		}
		d.value(&ok)
		err = d.end()
		if err == nil && (ok.Count == 0 && len(chunk) > 0 || int(ok.Count) > len(chunk)) {
			err = fmt.Errorf("server wrote %d of %d bytes", ok.Count, len(chunk))
		}
		if err != nil {
			return res, c.opError("WRITE", "", h, err)
		}
		res.Count += int(ok.Count)
		res.Committed = min(res.Committed, ok.Committed)
		res.Verifier = ok.Verf
		off += uint64(ok.Count)
		data = data[ok.Count:]
		if len(chunk) == 0 {
			break // an empty write, done once
		}
	}
	return res, nil
}

// Commit makes the range [off, off+count) of earlier Unstable writes durable
// (count 0: to the end of the file) and returns the write verifier; if it
// differs from the one the writes returned, the server restarted in between
// and the data must be written again.
func (c *Client) Commit(ctx context.Context, h Handle, off uint64, count uint32) (Verifier, error) {
	d, err := c.nfsCall(ctx, procCommit, readArgs{FH: h.Bytes(), Offset: off, Count: count})
	if err == nil {
		d.wccAfter()
		var v Verifier
		d.value(&v)
		if err = d.end(); err == nil {
			return v, nil
		}
	}
	return Verifier{}, c.opError("COMMIT", "", h, err)
}

// Read reads up to count bytes (at most 64 KiB) at off. eof reports that the
// read reached the end of the file.
func (c *Client) Read(ctx context.Context, h Handle, off uint64, count int) (data []byte, eof bool, err error) {
	d, err := c.nfsCall(ctx, procRead, readArgs{FH: h.Bytes(), Offset: off, Count: uint32(min(max(count, 0), maxIO))})
	if err == nil {
		d.postOpAttr()
		var ok struct {
			Count uint32
			EOF   bool
			Data  []byte
		}
		d.value(&ok)
		if err = d.end(); err == nil {
			return ok.Data, ok.EOF, nil
		}
	}
	return nil, false, c.opError("READ", "", h, err)
}

// ReadAll reads the whole file; one larger than limit bytes fails with EFBIG.
func (c *Client) ReadAll(ctx context.Context, h Handle, limit int) ([]byte, error) {
	var all []byte
	for {
		data, eof, err := c.Read(ctx, h, uint64(len(all)), maxIO)
		if err != nil {
			return nil, err
		}
		all = append(all, data...)
		if len(all) > limit {
			return nil, c.opError("READ", "", h, fmt.Errorf("%w: file larger than %d bytes", syscall.EFBIG, limit))
		}
		if eof || len(data) == 0 {
			return all, nil
		}
	}
}
