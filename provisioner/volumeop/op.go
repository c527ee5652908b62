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
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

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
	// Room measures the room for new volumes in the directory Path (a root a class names, "."
	// for the operator's root): Result.Room and Result.Device. Limited: the class holds volumes
	// to their sizes, and Room is what admission would still promise (the filesystem's size
	// times Overcommit, less the limits on it); otherwise the filesystem's free bytes.
	// MustExist and MustMount say what makes the directory unusable; Owner is not used.
	Room Kind = "room"
	// Adopt makes a directory another provisioner made the volume of Owner.PV (its marker is
	// written beside it, see volumefs.Adopt); with Check it only checks that it could.
	Adopt Kind = "adopt"
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
	// PlainArchive (Archive): name the archive "archived-<dir>", as
	// nfs-subdir-external-provisioner does, unless that name is taken.
	PlainArchive bool
	// Check (Adopt): check, change nothing.
	Check bool
	// Why is what Release records, e.g. "kept (onDelete: retain)".
	Why string
	// Limit is the size in bytes Create and Expand hold the volume to; 0 on Create: none.
	Limit uint64
	// Limited: Delete, Archive and Release first clear the volume's limit; Room counts the room
	// admission would promise.
	Limited bool
	// Overcommit: Create and Expand refuse a Limit that takes the limits on the volume's
	// filesystem past its size times this (quota.ErrNoRoom); 0 means 1. Room counts with it.
	Overcommit float64
	// MustExist (Room): a directory that is not there is an error (ErrNotThere), not measured on
	// its deepest ancestor that is, where its first volume would make it.
	MustExist bool
	// MustMount (Room): the directory must be the root of a mounted filesystem, not a plain
	// directory on its parent's (ErrNotMounted).
	MustMount bool
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
	// Room is the bytes a new volume can have in the directory Room measured; Device names its
	// filesystem, so that roots on one filesystem are counted once.
	Room   uint64 `json:"room,omitempty"`
	Device uint64 `json:"device,omitempty"`
}

// Apply performs op under root.
func Apply(root fsys.Dir, op Op) (Result, error) {
	o := volumefs.Owner{PV: op.Owner.PV, NodeUID: op.Owner.NodeUID}
	if op.Limited && op.Kind != Room {
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
		archive := volumefs.Archive
		if op.PlainArchive {
			archive = volumefs.ArchivePlain
		}
		name, err := archive(root, op.Path, o, op.Now)
		return Result{Archive: name}, err
	case Adopt:
		return Result{}, volumefs.Adopt(root, op.Path, op.Owner, op.Check)
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
	case Room:
		return room(root, op)
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

// `dirpv helper` receives an operation as arguments: its kind, then its flags, e.g. `create
// --path=ns/c --pv=pvc-1 --claim-uid=u1 --claim-namespace=ns --claim-name=c --mode=0770 --uid=-1
// --gid=-1`. Args writes them and ParseArgs reads them, both from the two tables below. Helper pods
// of an older dirpv and helper agents exchange them: what Args writes must not change.

// operations lists every operation with the flags it takes besides those every operation takes
// (everyOperation), in the order Args writes them.
var operations = []struct {
	kind  Kind
	flags []string
	// needs is a flag the operation cannot do without: ParseArgs refuses it where the flag is
	// missing or at its default, and Args writes it even there.
	needs string
}{
	{Create, []string{"claim-uid", "claim-namespace", "claim-name", "mode", "uid", "gid", "limit", "overcommit"}, ""},
	{Delete, []string{"limited"}, ""},
	{Archive, []string{"now", "limited", "plain-archive"}, ""},
	{Scrub, []string{"claim-uid"}, "claim-uid"},
	{Release, []string{"why", "now", "limited"}, "why"},
	{Expand, []string{"limit", "overcommit"}, "limit"},
	{Usage, nil, ""},
	{Probe, nil, ""},
	{Room, []string{"limited", "overcommit", "must-exist", "must-mount"}, ""},
	{Adopt, []string{"claim-uid", "claim-namespace", "claim-name", "check"}, ""},
}

// everyOperation are the flags of every operation.
var everyOperation = []string{"path", "pv", "node-uid"}

// opFlags are the flags of the operations. ParseArgs takes no value a StorageClass or a PV could
// not hold (the helper is the last to check them), nor names that could make a volume's marker
// larger than dirpv reads back (see the bounds below).
var opFlags = []opFlag{
	stringFlag("path", "volume directory relative to the root", func(op *Op) *string { return &op.Path }, nil), // volumefs checks it
	stringFlag("pv", "PV that owns the directory", func(op *Op) *string { return &op.Owner.PV }, kubernetesName("a PV name", validation.IsDNS1123Subdomain)),
	stringFlag("node-uid", "UID of the Node object a node-local volume is on", func(op *Op) *string { return &op.Owner.NodeUID }, atMost(maxUID)).
		omitWhen(func(op Op) bool { return op.Owner.NodeUID == "" }),
	stringFlag("claim-uid", "claim UID recorded in the marker", func(op *Op) *string { return &op.Owner.ClaimUID }, atMost(maxUID)),
	stringFlag("claim-namespace", "claim namespace recorded in the marker", func(op *Op) *string { return &op.Owner.ClaimNamespace },
		kubernetesName("a namespace", validation.IsDNS1123Label)),
	stringFlag("claim-name", "claim name recorded in the marker", func(op *Op) *string { return &op.Owner.ClaimName },
		kubernetesName("a claim name", validation.IsDNS1123Subdomain)),
	stringFlag("why", "what release records", func(op *Op) *string { return &op.Why }, atMost(maxWhy)),
	{name: "mode", text: func(op Op) string { return config.FormatMode(op.Mode) },
		bind: func(fs *flag.FlagSet, op *Op) func() error {
			op.Mode = config.DefaultMode // for the operations without --mode
			s := fs.String("mode", config.FormatMode(config.DefaultMode), "octal mode of a new directory")
			return func() (err error) { op.Mode, err = config.ParseMode(*s); return err }
		}},
	idFlag("uid", "owner of a new directory; -1: unchanged", func(op *Op) *int { return &op.UID }),
	idFlag("gid", "group of a new directory; -1: unchanged", func(op *Op) *int { return &op.GID }),
	{name: "now", text: func(op Op) string { return op.Now.UTC().Format(time.RFC3339) },
		bind: func(fs *flag.FlagSet, op *Op) func() error {
			s := fs.String("now", "", "archive or release time, RFC 3339")
			return func() (err error) { op.Now, err = time.Parse(time.RFC3339, *s); return err }
		}},
	uint64Flag("limit", "bytes to hold the volume to; 0: no limit", func(op *Op) *uint64 { return &op.Limit }).
		omitWhen(func(op Op) bool { return op.Limit == 0 }),
	boolFlag("limited", "clear the volume's limit first (room: count what admission would promise)", func(op *Op) *bool { return &op.Limited }).
		omitWhen(func(op Op) bool { return !op.Limited }),
	{name: "overcommit", text: func(op Op) string { return strconv.FormatFloat(op.Overcommit, 'g', -1, 64) },
		bind: func(fs *flag.FlagSet, op *Op) func() error {
			var s *string // set: the flag was given
			fs.Func("overcommit", "the limits on the filesystem may reach its size times this; absent: 1", func(v string) error { s = &v; return nil })
			return func() (err error) {
				if s != nil {
					op.Overcommit, err = config.ParseOvercommit(*s)
				}
				return err
			}
		},
		omit: func(op Op) bool { return (op.Limit == 0 && !(op.Kind == Room && op.Limited)) || op.overcommit() == 1 }},
	boolFlag("must-exist", "a directory that is not there is an error, not measured on its ancestor", func(op *Op) *bool { return &op.MustExist }).
		omitWhen(func(op Op) bool { return !op.MustExist }),
	boolFlag("must-mount", "the directory must be the root of a mounted filesystem", func(op *Op) *bool { return &op.MustMount }).
		omitWhen(func(op Op) bool { return !op.MustMount }),
	boolFlag("plain-archive", "name the archive archived-<dir> unless that is taken", func(op *Op) *bool { return &op.PlainArchive }).
		omitWhen(func(op Op) bool { return !op.PlainArchive }),
	boolFlag("check", "check only, change nothing", func(op *Op) *bool { return &op.Check }).
		omitWhen(func(op Op) bool { return !op.Check }),
}

// The bounds of what a marker records besides names Kubernetes bounds itself (a PV or claim name
// takes at most 253 bytes, a namespace 63): a UID (Kubernetes makes 36-byte UUIDs) and the
// words of a release. JSON escapes a byte into at most 6, so a marker stays under 10 KiB, far
// from the 64 KiB dirpv reads back.
const (
	maxUID = 128
	maxWhy = 1024
)

// atMost checks that a flag's value takes at most n bytes.
func atMost(n int) func(string) error {
	return func(s string) error {
		if len(s) > n {
			return fmt.Errorf("%.40q... is longer than %d bytes", s, n)
		}
		return nil
	}
}

// kubernetesName checks that a flag's value, if any, is what, by Kubernetes' rule is (an empty
// one is ParseArgs' to refuse where the operation needs it).
func kubernetesName(what string, is func(string) []string) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		if msgs := is(s); len(msgs) > 0 {
			return fmt.Errorf("%.80q is not %s: %s", s, what, strings.Join(msgs, "; "))
		}
		return nil
	}
}

// An opFlag is a flag of the operations.
type opFlag struct {
	name string
	// bind defines the flag on fs, to be read into op. A flag whose value ParseArgs checks only
	// once the operation passed its other checks (--mode, --now, the bounded ones) returns the
	// function that reads it into op, or checks it there; bind itself sets op's field to what the
	// operations without the flag have.
	bind func(fs *flag.FlagSet, op *Op) (read func() error)
	// text is op's value of the flag as Args writes it.
	text func(op Op) string
	// omit, if set, is where Args leaves the flag out: op's value means what the flag's absence
	// does. It keeps a batch's arguments short.
	omit func(op Op) bool
}

func (f opFlag) omitWhen(omit func(op Op) bool) opFlag {
	f.omit = omit
	return f
}

// plainFlag is a flag of a type the flag package reads (define, a method of flag.FlagSet such as
// StringVar) into the field of Op that field returns, and that Args writes with format.
func plainFlag[T any](name string, def T, usage string, field func(*Op) *T,
	define func(fs *flag.FlagSet, p *T, name string, def T, usage string), format func(T) string) opFlag {
	return opFlag{
		name: name,
		bind: func(fs *flag.FlagSet, op *Op) func() error { define(fs, field(op), name, def, usage); return nil },
		text: func(op Op) string { return format(*field(&op)) },
	}
}

// stringFlag is a string flag whose value check, if set, accepts.
func stringFlag(name, usage string, field func(*Op) *string, check func(string) error) opFlag {
	f := plainFlag(name, "", usage, field, (*flag.FlagSet).StringVar, func(s string) string { return s })
	if check != nil {
		bind := f.bind
		f.bind = func(fs *flag.FlagSet, op *Op) func() error {
			bind(fs, op)
			return func() error { return check(*field(op)) }
		}
	}
	return f
}

// idFlag is --uid or --gid: -1, unchanged (the default), or what a class takes.
func idFlag(name, usage string, field func(*Op) *int) opFlag {
	return opFlag{name: name, text: func(op Op) string { return strconv.Itoa(*field(&op)) },
		bind: func(fs *flag.FlagSet, op *Op) func() error {
			*field(op) = -1
			s := fs.String(name, "-1", usage)
			return func() (err error) {
				if *s != "-1" {
					if *field(op), err = config.ParseID(*s); err != nil {
						return fmt.Errorf("%w, or -1", err)
					}
				}
				return nil
			}
		}}
}

func uint64Flag(name, usage string, field func(*Op) *uint64) opFlag {
	return plainFlag(name, 0, usage, field, (*flag.FlagSet).Uint64Var, func(n uint64) string { return strconv.FormatUint(n, 10) })
}

func boolFlag(name, usage string, field func(*Op) *bool) opFlag {
	return plainFlag(name, false, usage, field, (*flag.FlagSet).BoolVar, strconv.FormatBool)
}

// flagNamed finds the flags of operations by name.
var flagNamed = func() map[string]opFlag {
	m := make(map[string]opFlag, len(opFlags))
	for _, f := range opFlags {
		m[f.name] = f
	}
	return m
}()

// operationNames lists the operations, as errors name them.
var operationNames = func() string {
	var names []string
	for _, o := range operations {
		names = append(names, string(o.kind))
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}()

// flagsOf returns the flags operations of kind k take, in the order Args writes them, and the one
// they need; known is false for a kind that is not an operation.
func flagsOf(k Kind) (flags []string, needs string, known bool) {
	for _, o := range operations {
		if o.kind == k {
			return slices.Concat(everyOperation, o.flags), o.needs, true
		}
	}
	return everyOperation, "", false
}

// Args encodes op as the arguments of `dirpv helper`.
func (op Op) Args() []string {
	flags, needs, _ := flagsOf(op.Kind)
	args := []string{string(op.Kind)}
	for _, name := range flags {
		f := flagNamed[name]
		if f.omit != nil && f.omit(op) && name != needs {
			continue
		}
		args = append(args, "--"+name+"="+f.text(op))
	}
	return args
}

// ParseArgs is the inverse of Args. A flag the operation does not take is an error.
func ParseArgs(args []string) (Op, error) {
	if len(args) == 0 {
		return Op{}, fmt.Errorf("missing operation (%s)", operationNames)
	}
	op := Op{Kind: Kind(args[0])}
	takes, needs, known := flagsOf(op.Kind)
	if !known {
		return Op{}, fmt.Errorf("unknown operation %q (want %s)", op.Kind, operationNames)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error says it all
	read := make(map[string]func() error)
	for _, f := range opFlags {
		read[f.name] = f.bind(fs, &op)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return Op{}, err
	}
	if fs.NArg() > 0 {
		return Op{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		if !slices.Contains(takes, f.Name) {
			errs = append(errs, fmt.Errorf("--%s does not apply to %s", f.Name, op.Kind))
		}
	})
	if len(errs) > 0 {
		return Op{}, errors.Join(errs...)
	}
	if op.Path == "" || (op.Owner.PV == "" && op.Kind != Probe && op.Kind != Room) {
		return Op{}, errors.New("--path and --pv are required")
	}
	if f := fs.Lookup(needs); f != nil && f.Value.String() == f.DefValue {
		return Op{}, fmt.Errorf("%s needs --%s", op.Kind, needs)
	}
	for _, name := range takes {
		if read[name] == nil {
			continue
		}
		if err := read[name](); err != nil {
			return Op{}, fmt.Errorf("--%s: %w", name, err)
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
