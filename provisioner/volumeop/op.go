// Package volumeop describes the filesystem operations dirpv performs on a volume directory and
// runs them. One implementation serves every mode: in-process on an NFS export or a local root, and
// inside a helper pod on a node (`dirpv helper ...`), which receives the operation as arguments.
package volumeop

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"time"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
)

// Kind names an operation.
type Kind string

const (
	Create  Kind = "create"
	Delete  Kind = "delete"
	Archive Kind = "archive"
	// Scrub empties a released volume for the next claim; Owner.ClaimUID names the claim whose
	// data goes, so a repeated scrub for it is a no-op.
	Scrub Kind = "scrub"
	// Release hands a volume over to the operator (Why says how): nothing touches it again.
	Release Kind = "release"
	// Expand holds a volume to a larger Limit, for its claim that grew.
	Expand Kind = "expand"
	// Usage reads what a limited volume holds and its limit from the filesystem's quota
	// counters; it changes nothing. Reading them takes CAP_SYS_ADMIN, as setting them does.
	Usage Kind = "usage"
	// Probe says whether the filesystem of the directory Path (or of its deepest ancestor that
	// exists) can enforce sizes, and how (Result.Quota); Owner is not used.
	Probe Kind = "probe"
)

// Op is one operation on the volume directory Path, relative to the operator's root
// (--hostpath-root on a node, the mount of an NFS export).
type Op struct {
	Kind Kind
	Path string
	// Owner identifies the volume. Create records it; the other operations check Owner.PV and,
	// for node-local volumes, Owner.NodeUID (the UID of the Node object the volume is on now).
	Owner volumefs.Marker
	// Mode, UID and GID apply to Create; UID and GID are -1 when unset.
	Mode fs.FileMode
	UID  int
	GID  int
	// Now names archives and dates releases; it is fixed by the caller so that a retried
	// archive is not renamed twice.
	Now time.Time
	// Why is what Release records, e.g. "kept (onDelete: retain)".
	Why string
	// Limit is the size in bytes Create and Expand hold the volume to; 0 on Create: none.
	Limit uint64
	// Limited: Delete, Archive and Release first clear the volume's limit.
	Limited bool
	// Overcommit: Create and Expand refuse a Limit that takes the limits on the volume's
	// filesystem past its size times this (quota.ErrNoRoom); 0 means 1.
	Overcommit float64
}

// overcommit is op's overcommit factor.
func (op Op) overcommit() float64 {
	if op.Overcommit > 0 {
		return op.Overcommit
	}
	return 1
}

// NeedsAdmin reports whether op sets, clears or reads a limit, which takes CAP_SYS_ADMIN.
func (op Op) NeedsAdmin() bool {
	return op.Limit > 0 || op.Limited || op.Kind == Usage || op.Kind == Probe
}

// Result is what an operation reports back.
type Result struct {
	// Archive is the archived directory's path relative to the root.
	Archive string `json:"archive,omitempty"`
	// Scrubbed is false when the volume had already been scrubbed for the claim.
	Scrubbed bool `json:"scrubbed,omitempty"`
	// Quota names what holds a limited volume to its size, e.g. "project 1073741825".
	Quota string `json:"quota,omitempty"`
	// Used and Limit are what Usage read: the bytes the volume holds and its limit (0: none).
	Used  uint64 `json:"used,omitempty"`
	Limit uint64 `json:"limit,omitempty"`
}

// Apply performs op under root.
func Apply(root fsys.Dir, op Op) (Result, error) {
	o := volumefs.Owner{PV: op.Owner.PV, NodeUID: op.Owner.NodeUID}
	if op.Limited {
		if err := volumefs.Unlimit(root, op.Path, o, quota.Dirs{}); err != nil {
			return Result{}, err
		}
	}
	switch op.Kind {
	case Create:
		opts := volumefs.CreateOptions{Path: op.Path, Mode: op.Mode, UID: op.UID, GID: op.GID, Owner: op.Owner}
		if op.Limit == 0 {
			return Result{}, volumefs.Create(root, opts)
		}
		opts.Limits = quota.Dirs{}
		if err := volumefs.Create(root, opts); err != nil {
			return Result{}, err
		}
		held, err := volumefs.Limit(root, op.Path, o, quota.Dirs{}, op.Limit, op.overcommit())
		if errors.Is(err, quota.ErrNoRoom) {
			// No PV names the new volume yet, and nothing is in it: take it back, so that a
			// claim sent to another node leaves nothing here.
			if derr := volumefs.Delete(root, op.Path, o); derr != nil {
				err = fmt.Errorf("%w (and removing the new volume again: %v)", err, derr)
			}
		}
		return Result{Quota: held}, err
	case Expand:
		held, err := volumefs.Limit(root, op.Path, o, quota.Dirs{}, op.Limit, op.overcommit())
		return Result{Quota: held}, err
	case Delete:
		return Result{}, volumefs.Delete(root, op.Path, o)
	case Archive:
		name, err := volumefs.Archive(root, op.Path, o, op.Now)
		return Result{Archive: name}, err
	case Scrub:
		scrubbed, err := volumefs.Scrub(root, op.Path, o, op.Owner.ClaimUID)
		return Result{Scrubbed: scrubbed}, err
	case Release:
		return Result{}, volumefs.Release(root, op.Path, o, op.Why+" at "+op.Now.UTC().Format(time.RFC3339))
	case Usage:
		used, limit, err := volumefs.Usage(root, op.Path, o, quota.Dirs{})
		return Result{Used: used, Limit: limit}, err
	case Probe:
		return probe(root, op.Path)
	}
	return Result{}, fmt.Errorf("unknown operation %q", op.Kind)
}

// RunLocal performs op in the directory dir without following symlinks out of it. It gives up
// waiting when ctx ends: a call blocked on a hung mount cannot be interrupted, but the caller
// is not held hostage by it (Stalls also keeps track of such calls).
func RunLocal(ctx context.Context, dir string, op Op) (Result, error) {
	return runLocal(ctx, dir, op, func() (Result, error) { return runIn(dir, op) }, nil)
}

// runLocal runs run on its own goroutine and waits for it until ctx ends. If ctx ends first and
// onStall is set, onStall is called and the function it returns is called once run returns.
func runLocal(ctx context.Context, dir string, op Op, run func() (Result, error), onStall func() func()) (Result, error) {
	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := run()
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-ctx.Done():
		if onStall != nil {
			returned := onStall()
			go func() {
				<-done
				returned()
			}()
		}
		return Result{}, fmt.Errorf("%s %s in %s: %w", op.Kind, op.Path, dir, context.Cause(ctx))
	}
}

func runIn(dir string, op Op) (Result, error) {
	root, err := fsys.OpenLocal(dir)
	if err != nil {
		return Result{}, err
	}
	defer root.Close()
	return Apply(root, op)
}

// kindFlags lists the flags of each operation besides --path, --pv and --node-uid.
var kindFlags = map[Kind][]string{
	Create:  {"claim-uid", "claim-namespace", "claim-name", "mode", "uid", "gid", "limit", "overcommit"},
	Delete:  {"limited"},
	Archive: {"now", "limited"},
	Scrub:   {"claim-uid"},
	Release: {"why", "now", "limited"},
	Expand:  {"limit", "overcommit"},
	Usage:   {},
	Probe:   {},
}

// flagValues is op's value of every flag, as Args writes it.
func (op Op) flagValues() map[string]string {
	return map[string]string{
		"path": op.Path, "pv": op.Owner.PV, "node-uid": op.Owner.NodeUID,
		"claim-uid": op.Owner.ClaimUID, "claim-namespace": op.Owner.ClaimNamespace, "claim-name": op.Owner.ClaimName,
		"mode": config.FormatMode(op.Mode), "uid": strconv.Itoa(op.UID), "gid": strconv.Itoa(op.GID),
		"now": op.Now.UTC().Format(time.RFC3339), "why": op.Why,
		"limit": strconv.FormatUint(op.Limit, 10), "limited": strconv.FormatBool(op.Limited),
		"overcommit": strconv.FormatFloat(op.overcommit(), 'g', -1, 64),
	}
}

// Args encodes op as the arguments of `dirpv helper`.
func (op Op) Args() []string {
	v := op.flagValues()
	args := []string{string(op.Kind), "--path=" + op.Path, "--pv=" + op.Owner.PV}
	if op.Owner.NodeUID != "" {
		args = append(args, "--node-uid="+op.Owner.NodeUID)
	}
	for _, name := range kindFlags[op.Kind] {
		if (name == "limit" && op.Limit == 0 && op.Kind != Expand) || (name == "limited" && !op.Limited) ||
			(name == "overcommit" && (op.Limit == 0 || op.overcommit() == 1)) {
			continue // the default: keeps a batch's arguments short
		}
		args = append(args, "--"+name+"="+v[name])
	}
	return args
}

// ParseArgs is the inverse of Args. A flag the operation does not take is an error.
func ParseArgs(args []string) (Op, error) {
	if len(args) == 0 {
		return Op{}, errors.New("missing operation (create, delete, archive, scrub, release, expand, usage or probe)")
	}
	op := Op{Kind: Kind(args[0])}
	takes, known := kindFlags[op.Kind]
	if !known {
		return Op{}, fmt.Errorf("unknown operation %q (want create, delete, archive, scrub, release, expand, usage or probe)", op.Kind)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error says it all
	fs.StringVar(&op.Path, "path", "", "volume directory relative to the root")
	fs.StringVar(&op.Owner.PV, "pv", "", "PV that owns the directory")
	fs.StringVar(&op.Owner.NodeUID, "node-uid", "", "UID of the Node object a node-local volume is on")
	fs.StringVar(&op.Owner.ClaimUID, "claim-uid", "", "claim UID recorded in the marker")
	fs.StringVar(&op.Owner.ClaimNamespace, "claim-namespace", "", "claim namespace recorded in the marker")
	fs.StringVar(&op.Owner.ClaimName, "claim-name", "", "claim name recorded in the marker")
	fs.StringVar(&op.Why, "why", "", "what release records")
	mode := fs.String("mode", config.FormatMode(config.DefaultMode), "octal mode of a new directory")
	fs.IntVar(&op.UID, "uid", -1, "owner of a new directory; -1: unchanged")
	fs.IntVar(&op.GID, "gid", -1, "group of a new directory; -1: unchanged")
	now := fs.String("now", "", "archive or release time, RFC 3339")
	fs.Uint64Var(&op.Limit, "limit", 0, "bytes to hold the volume to; 0: no limit")
	fs.BoolVar(&op.Limited, "limited", false, "clear the volume's limit first")
	fs.Float64Var(&op.Overcommit, "overcommit", 0, "the limits on the filesystem may reach its size times this; 0: 1")
	if err := fs.Parse(args[1:]); err != nil {
		return Op{}, err
	}
	if fs.NArg() > 0 {
		return Op{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		switch {
		case f.Name == "path", f.Name == "pv", f.Name == "node-uid", slices.Contains(takes, f.Name):
		default:
			errs = append(errs, fmt.Errorf("--%s does not apply to %s", f.Name, op.Kind))
		}
	})
	if len(errs) > 0 {
		return Op{}, errors.Join(errs...)
	}
	if op.Path == "" || (op.Owner.PV == "" && op.Kind != Probe) {
		return Op{}, errors.New("--path and --pv are required")
	}
	switch {
	case op.Kind == Scrub && op.Owner.ClaimUID == "":
		return Op{}, errors.New("scrub needs --claim-uid")
	case op.Kind == Release && op.Why == "":
		return Op{}, errors.New("release needs --why")
	case op.Kind == Expand && op.Limit == 0:
		return Op{}, errors.New("expand needs --limit")
	}
	var err error
	if op.Mode, err = config.ParseMode(*mode); err != nil {
		return Op{}, fmt.Errorf("--mode: %w", err)
	}
	if slices.Contains(takes, "now") {
		if op.Now, err = time.Parse(time.RFC3339, *now); err != nil {
			return Op{}, fmt.Errorf("--now: %w", err)
		}
	}
	return op, nil
}

// EncodeResult and DecodeResult carry a Result through a helper pod's termination message.
func EncodeResult(r Result) string {
	b, _ := json.Marshal(r)
	return string(b)
}

func DecodeResult(s string) (Result, error) {
	var r Result
	err := json.Unmarshal([]byte(s), &r)
	return r, err
}
