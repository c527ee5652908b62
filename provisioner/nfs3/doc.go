// Package nfs3 is a small handle-based NFSv3 client (RFC 1813) with the MOUNT
// v3 and portmapper calls it needs. It is the bottom layer of dirpv's
// "access: direct" mode, where the provisioner works on an NFS export from
// user space instead of through a mount.
//
// Every operation takes a directory handle and a single name, never a path:
// LOOKUP does not follow symlinks, and nothing is cached, so a name replaced
// (say, by a symlink) between two calls is seen as what it now is. Walk goes
// down a relative path one LOOKUP at a time and refuses a non-directory (a
// symlink included) anywhere but at the end.
//
// # Wrap, not fork
//
// The protocol layer comes from github.com/willscott/go-nfs-client (BSD-2,
// VMware): its wire types (fattr3, sattr3, post_op_attr, wcc_data, entryplus3,
// diropargs3, the RPC header and auth structs), its constants, and the XDR
// codec it is built on (github.com/rasky/go-xdr). Nothing is copied. Its
// rpc.Client and nfs.Target are not used: Call has no context and retries a
// lost reply silently up to 100 times with a 5 s timeout each, the XID counter
// is global, malformed replies panic, a reconnect can close reply channels
// twice, AUTH_UNIX holds one auxiliary gid, and Target caches lookups by path
// (unsafe here, see above) and has no LINK. So this package sends the NFS
// procedures itself over its own transport (rpc.go, ~300 lines); the
// procedures' argument and result layouts the library lacks (LINK,
// createhow3's arms, READ/WRITE/COMMIT results) are small structs coded with
// the same XDR codec.
//
// # Connections and deadlines
//
// A Client keeps one TCP connection per RPC program (NFS, MOUNT), made on
// first use. Calls on one Client are multiplexed over it: each call gets its
// own XID and a reader goroutine hands replies to their callers, so a slow
// call does not hold up the others, and Clients share nothing.
//
// Every call honours its context. When the context ends before the reply
// arrives, the call returns an error naming the server that wraps
// ctx.Err() (errors.Is(err, context.DeadlineExceeded)). If nothing at all
// arrived on the connection since the call was sent, the server is taken to
// be unresponsive and the connection is discarded; the next call redials
// (asking the portmapper again, unless the port is fixed). Calls without a
// deadline wait as long as the server takes, so callers should set one.
//
// Nothing is retried on a new connection: a call whose connection broke
// after it was sent fails with ErrConnLost, and it is up to the caller to
// repeat it, knowing it may have been executed (MKDIR then fails with EEXIST,
// REMOVE with ENOENT; an Exclusive CREATE with the same verifier succeeds).
// NFS3ERR_JUKEBOX is retried, with a backoff, until the context ends.
//
// # fsys
//
// Client.OpenDir serves a directory as an fsys.Dir (dir.go), so dirpv's volume
// operations run over NFS as they do on a local directory. Its calls all use
// the context it was opened with. NFSv3 cannot refuse to replace a RENAME
// target (Rename with noReplace fails with ENOTSUP) and has no locks without
// NLM (File.Lock locks nothing).
//
// Errors are *Error values that say which server, procedure and name they
// concern and unwrap to the syscall.Errno matching the NFS status (or to the
// transport or context error).
//
// A broken or hostile server is not trusted further than the protocol: a
// reply that is not exactly its procedure's result (bytes missing or left
// over) fails with ErrMalformed, and a directory listing fails with EIO once
// it passes maxListEntries entries or maxListBytes of names, or as soon as the
// server's cookies come round again, rather than filling memory or running
// until the deadline.
//
// # Files
//
// client.go and rpc.go are the Client and its transport, errors.go the status
// codes, attr.go handles and attributes, dir.go the fsys.Dir. The procedures
// go by group: ops.go has what they share (procedure numbers, argument
// layouts, names, post-operation attributes); lookup.go has MNT, UMNT,
// GETATTR, SETATTR, ACCESS, LOOKUP and Walk; entries.go CREATE, MKDIR, REMOVE,
// RMDIR, RENAME and LINK; readwrite.go READ, WRITE and COMMIT; readdir.go
// READDIR and READDIRPLUS, with the one pager they share.
package nfs3
