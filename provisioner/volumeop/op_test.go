package volumeop

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"dirpv.io/dirpv/provisioner/volumefs"
)

func TestArgsRoundTrip(t *testing.T) {
	owner := volumefs.Marker{PV: "pvc-1", ClaimUID: "u1", ClaimNamespace: "ns", ClaimName: "c"}
	for _, op := range []Op{
		{Kind: Create, Path: "ns/c", Owner: owner, Mode: 0o2770, UID: 1000, GID: -1},
		{Kind: Delete, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1},
		{Kind: Archive, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Kind: Scrub, Path: "a", Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "u1"}, Mode: 0o777, UID: -1, GID: -1},
		{Kind: Release, Path: "base/a", Owner: volumefs.Marker{PV: "pvc-1", NodeUID: "n-1"}, Mode: 0o777, UID: -1, GID: -1,
			Why: "kept (onDelete: retain)", Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Kind: Create, Path: "ns/c", Owner: volumefs.Marker{PV: "pvc-1", NodeUID: "n-1"}, Mode: 0o777, UID: -1, GID: -1},
		{Kind: Create, Path: "ns/c", Owner: owner, Mode: 0o777, UID: -1, GID: -1, Limit: 1 << 30},
		{Kind: Expand, Path: "ns/c", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, Limit: 2 << 30},
		{Kind: Expand, Path: "ns/c", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, Limit: 2 << 30, Overcommit: 1.5},
		{Kind: Create, Path: "ns/c", Owner: owner, Mode: 0o777, UID: -1, GID: -1, Limit: 1 << 30, Overcommit: 0.9},
		{Kind: Probe, Path: ".", Mode: 0o777, UID: -1, GID: -1},
		{Kind: Probe, Path: "base/sized", Mode: 0o777, UID: -1, GID: -1},
		{Kind: Delete, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, Limited: true},
		{Kind: Archive, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, Limited: true, Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Kind: Release, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, Limited: true,
			Why: "kept (reclaimPolicy Retain)", Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Kind: Usage, Path: "base/a", Owner: volumefs.Marker{PV: "pvc-1", NodeUID: "n-1"}, Mode: 0o777, UID: -1, GID: -1},
		{Kind: Room, Path: "disk1", Mode: 0o777, UID: -1, GID: -1, MustExist: true, MustMount: true},
		{Kind: Room, Path: ".", Mode: 0o777, UID: -1, GID: -1, Limited: true, Overcommit: 1.5},
		{Kind: Archive, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Mode: 0o777, UID: -1, GID: -1, PlainArchive: true, Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Kind: Adopt, Path: "nsp/ns-c-pvc-1", Owner: owner, Mode: 0o777, UID: -1, GID: -1},
		{Kind: Adopt, Path: "nsp/ns-c-pvc-1", Owner: owner, Mode: 0o777, UID: -1, GID: -1, Check: true},
	} {
		got, err := ParseArgs(op.Args())
		if err != nil || fmt.Sprint(got) != fmt.Sprint(op) {
			t.Errorf("ParseArgs(%v) = %+v, %v; want %+v", op.Args(), got, err, op)
		}
	}
}

// Helper pods of an older dirpv and helper agents read what Args writes: it stays as it is.
func TestArgsText(t *testing.T) {
	now := time.Date(2026, 1, 2, 4, 4, 5, 0, time.FixedZone("CET", 3600))
	owner := volumefs.Marker{PV: "pvc-1", ClaimUID: "u1", ClaimNamespace: "ns", ClaimName: "c"}
	for _, tt := range []struct {
		op   Op
		want string
	}{
		{Op{Kind: Create, Path: "ns/c", Owner: owner, Mode: 0o770, UID: 1000, GID: -1},
			"create --path=ns/c --pv=pvc-1 --claim-uid=u1 --claim-namespace=ns --claim-name=c --mode=0770 --uid=1000 --gid=-1"},
		{Op{Kind: Create, Path: "ns/c", Owner: volumefs.Marker{PV: "pvc-1", NodeUID: "n-1"}, Mode: 0o777, UID: -1, GID: -1, Limit: 1 << 30, Overcommit: 1.5},
			"create --path=ns/c --pv=pvc-1 --node-uid=n-1 --claim-uid= --claim-namespace= --claim-name= --mode=0777 --uid=-1 --gid=-1 --limit=1073741824 --overcommit=1.5"},
		{Op{Kind: Create, Path: "c", Owner: owner, Overcommit: 2}, // no limit: no overcommit
			"create --path=c --pv=pvc-1 --claim-uid=u1 --claim-namespace=ns --claim-name=c --mode=0000 --uid=0 --gid=0"},
		{Op{Kind: Delete, Path: "a", Owner: owner}, "delete --path=a --pv=pvc-1"},
		{Op{Kind: Delete, Path: "a", Owner: owner, Limited: true}, "delete --path=a --pv=pvc-1 --limited=true"},
		{Op{Kind: Archive, Path: "a", Owner: owner, Now: now}, "archive --path=a --pv=pvc-1 --now=2026-01-02T03:04:05Z"},
		{Op{Kind: Scrub, Path: "a", Owner: owner}, "scrub --path=a --pv=pvc-1 --claim-uid=u1"},
		{Op{Kind: Release, Path: "a", Owner: owner, Why: "kept (onDelete: retain)", Now: now, Limited: true},
			"release --path=a --pv=pvc-1 --why=kept (onDelete: retain) --now=2026-01-02T03:04:05Z --limited=true"},
		{Op{Kind: Expand, Path: "a", Owner: owner, Limit: 2 << 30, Overcommit: 1}, "expand --path=a --pv=pvc-1 --limit=2147483648"},
		{Op{Kind: Expand, Path: "a", Owner: owner}, "expand --path=a --pv=pvc-1 --limit=0"}, // it needs --limit
		{Op{Kind: Usage, Path: "a", Owner: volumefs.Marker{PV: "pvc-1", NodeUID: "n-1"}, Limited: true}, "usage --path=a --pv=pvc-1 --node-uid=n-1"},
		{Op{Kind: Probe, Path: "."}, "probe --path=. --pv="},
		{Op{Kind: Room, Path: "d1", MustExist: true, MustMount: true}, "room --path=d1 --pv= --must-exist=true --must-mount=true"},
		{Op{Kind: Room, Path: "d1", Limited: true, Overcommit: 2}, "room --path=d1 --pv= --limited=true --overcommit=2"},
		{Op{Kind: Room, Path: "d1", Overcommit: 2}, "room --path=d1 --pv="}, // free bytes: no overcommit
	} {
		if got := strings.Join(tt.op.Args(), " "); got != tt.want {
			t.Errorf("%+v: Args = %q, want %q", tt.op, got, tt.want)
		}
	}
}

// Every operation's flags are in opFlags, and every flag of opFlags belongs to an operation.
func TestOperationsTable(t *testing.T) {
	used := map[string]bool{}
	for _, o := range operations {
		flags, needs, known := flagsOf(o.kind)
		if !known || (needs != "" && !slices.Contains(flags, needs)) {
			t.Errorf("%s: flags %q, needs %q, known %v", o.kind, flags, needs, known)
		}
		for i, name := range flags {
			if _, ok := flagNamed[name]; !ok || slices.Contains(flags[:i], name) {
				t.Errorf("%s: flag %q is not in opFlags, or twice in its flags", o.kind, name)
			}
			used[name] = true
		}
	}
	if len(flagNamed) != len(opFlags) || len(used) != len(opFlags) {
		t.Errorf("opFlags has %d flags, %d names, of which operations use %d", len(opFlags), len(flagNamed), len(used))
	}
}

func TestParseArgsRefuses(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "missing operation"},
		{[]string{"shred", "--path=a", "--pv=p"}, "unknown operation"},
		{[]string{"create", "--pv=p"}, "--path and --pv are required"},
		{[]string{"scrub", "--path=a", "--pv=p"}, "scrub needs --claim-uid"},
		{[]string{"expand", "--path=a", "--pv=p"}, "expand needs --limit"},
		{[]string{"scrub", "--path=a", "--pv=p", "--claim-uid=u", "--limited"}, "--limited does not apply to scrub"},
		{[]string{"delete", "--path=a", "--pv=p", "--limit=5"}, "--limit does not apply to delete"},
		{[]string{"create", "--path=a", "--pv=p", "--mode=999"}, "--mode"},
		{[]string{"archive", "--path=a", "--pv=p"}, "--now"},
		{[]string{"release", "--path=a", "--pv=p", "--now=2026-01-02T03:04:05Z"}, "release needs --why"},
		{[]string{"release", "--path=a", "--pv=p", "--why=kept"}, "--now"},
		{[]string{"delete", "--path=a", "--pv=p", "extra"}, "unexpected arguments"},
		{[]string{"delete", "--path=a", "--pv=p", "--why=x"}, "--why does not apply to delete"},
		{[]string{"scrub", "--path=a", "--pv=p", "--claim-uid=u", "--mode=0700"}, "--mode does not apply to scrub"},
		{[]string{"usage", "--path=a", "--pv=p", "--limited"}, "--limited does not apply to usage"},
		{[]string{"usage", "--path=a", "--pv=p", "--limit=5"}, "--limit does not apply to usage"},
		{[]string{"usage", "--pv=p"}, "--path and --pv are required"},
		{[]string{"room", "--pv=p"}, "--path and --pv are required"},
		{[]string{"room", "--path=a", "--must-mount", "--limit=5"}, "--limit does not apply to room"},
		{[]string{"create", "--path=a", "--pv=p", "--must-exist"}, "--must-exist does not apply to create"},
	} {
		if _, err := ParseArgs(tt.args); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseArgs(%q) = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// The helper is the last to check what reaches a volume: it refuses what a StorageClass or a PV
// would not hold (an ID the kernel would wrap to root, an overcommit factor out of the class's
// range) and names long enough to make a marker larger than dirpv reads back.
func TestParseArgsRefusesValuesAClassWould(t *testing.T) {
	create := func(flags ...string) []string { return append([]string{"create", "--path=a", "--pv=p"}, flags...) }
	expand := func(flags ...string) []string {
		return append([]string{"expand", "--path=a", "--pv=p", "--limit=5"}, flags...)
	}
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{create("--uid=4294967296"), `--uid: "4294967296" is not a number from 0 to 2147483647, or -1`},
		{create("--uid=2147483648"), `--uid: "2147483648" is not a number`},
		{create("--uid=-2"), `--uid: "-2" is not a number`},
		{create("--uid=0x10"), `--uid: "0x10" is not a number`},
		{create("--gid=4294967295"), `--gid: "4294967295" is not a number`},
		{create("--limit=5", "--overcommit=+Inf"), `--overcommit: "+Inf" is not a number above 0 and at most 100`},
		{expand("--overcommit=1e308"), `--overcommit: "1e308" is not a number above 0 and at most 100`},
		{expand("--overcommit=101"), `--overcommit: "101" is not`},
		{expand("--overcommit=0x1p2"), `--overcommit: "0x1p2" is not`},
		{expand("--overcommit=NaN"), `--overcommit: "NaN" is not`},
		{expand("--overcommit=0"), `--overcommit: "0" is not`},
		{expand("--overcommit="), `--overcommit: "" is not`},
		{[]string{"delete", "--path=a", "--pv=" + long(70<<10)}, `--pv: "aaaa`},
		{[]string{"delete", "--path=a", "--pv=" + long(254)}, `is not a PV name: must be no more than 253 characters`},
		{[]string{"delete", "--path=a", "--pv=PV_1"}, `--pv: "PV_1" is not a PV name`},
		{create("--claim-namespace=" + long(64)), `is not a namespace: must be no more than 63 characters`},
		{create("--claim-namespace=a.b"), `--claim-namespace: "a.b" is not a namespace`},
		{create("--claim-name=" + long(254)), `is not a claim name`},
		{create("--claim-uid=" + long(129)), `--claim-uid: "aaaa`},
		{[]string{"delete", "--path=a", "--pv=p", "--node-uid=" + long(129)}, `is longer than 128 bytes`},
		{[]string{"release", "--path=a", "--pv=p", "--why=" + long(1025), "--now=2026-01-02T03:04:05Z"}, `--why: "aaaa`},
	} {
		_, err := ParseArgs(tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) || len(err.Error()) > 400 {
			t.Errorf("ParseArgs(%.200q) = %.500v, want %q (in an error of at most 400 bytes)", tt.args, err, tt.want)
		}
	}
}

// The longest names and words the helper takes, each escaped by JSON at its worst, still make a
// marker that dirpv reads back: the volume can be released and read after.
func TestLongestMarker(t *testing.T) {
	uid := strings.Repeat("<", maxUID) // JSON writes \u003c
	name := strings.Repeat("a", 253)
	args := []string{"create", "--path=ns/v", "--pv=" + name, "--node-uid=" + uid, "--claim-uid=" + uid,
		"--claim-namespace=" + strings.Repeat("n", 63), "--claim-name=" + name, "--uid=-1", "--gid=-1"}
	now := "--now=2026-01-02T03:04:05Z"
	root := openRoot(t, t.TempDir())
	for _, args := range [][]string{
		args,
		{"scrub", "--path=ns/v", "--pv=" + name, "--node-uid=" + uid, "--claim-uid=" + uid},
		{"release", "--path=ns/v", "--pv=" + name, "--node-uid=" + uid, "--why=" + strings.Repeat("\x01", maxWhy), now},
	} {
		op, err := ParseArgs(args)
		if err != nil {
			t.Fatalf("ParseArgs(%.100q): %v", args, err)
		}
		if _, err := Apply(root, op); err != nil {
			t.Fatalf("%s: %v", op.Kind, err)
		}
	}
	m, err := volumefs.ReadMarker(root, "ns/v")
	if err != nil || m == nil || m.Released == "" || m.ClaimUID != uid {
		t.Fatalf("ReadMarker = %+v, %v; want the released marker back", m, err)
	}
}

// Operations that set, clear or read a limit run with CAP_SYS_ADMIN (in a lane of their own on a
// node); reading one takes constant time.
func TestNeedsAdmin(t *testing.T) {
	for _, tt := range []struct {
		op    Op
		admin bool
	}{
		{Op{Kind: Create}, false},
		{Op{Kind: Create, Limit: 1 << 20}, true},
		{Op{Kind: Expand, Limit: 1 << 20}, true},
		{Op{Kind: Delete}, false},
		{Op{Kind: Delete, Limited: true}, true},
		{Op{Kind: Archive, Limited: true}, true},
		{Op{Kind: Scrub}, false},
		{Op{Kind: Usage}, true},
		{Op{Kind: Room}, false},
		{Op{Kind: Room, MustMount: true}, false},
		{Op{Kind: Room, Limited: true}, true},
	} {
		if got := tt.op.NeedsAdmin(); got != tt.admin {
			t.Errorf("%+v: NeedsAdmin = %v, want %v", tt.op, got, tt.admin)
		}
	}
	if Usage.WalksTree() {
		t.Error("usage walks the tree: it would wait behind deletes")
	}
}
