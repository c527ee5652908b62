package volumeop

import (
	"slices"
	"strings"
	"testing"
	"time"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumefs"
)

// FuzzParseArgs: a helper pod's arguments never make ParseArgs panic, and whatever it accepts is
// within the bounds of a class, a PV and a marker, and encodes (Args) to arguments that parse to
// the same operation and never hold a bare "--", which separates a batch's operations.
func FuzzParseArgs(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, op := range []Op{
		{Kind: Create, Path: "ns/c", Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "u1", ClaimNamespace: "ns", ClaimName: "c", NodeUID: "n"}, Mode: 0o2770, UID: 1000, GID: -1},
		{Kind: Delete, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}},
		{Kind: Archive, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Now: now},
		{Kind: Scrub, Path: "a", Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "u1"}},
		{Kind: Release, Path: "a", Owner: volumefs.Marker{PV: "pvc-1"}, Why: "kept (onDelete: retain)", Now: now},
	} {
		f.Add(strings.Join(op.Args(), "\x00"))
	}
	f.Add("create\x00--path=../x\x00--pv=p\x00--mode=7777\x00--uid=-2")
	f.Add("archive\x00--path=a\x00--pv=p\x00--now=2026-01-02T03:04:05+09:00")
	f.Add("scrub\x00-path\x00a\x00-pv=p\x00-claim-uid=u\x00--\x00x")
	f.Add("probe\x00--path=a")
	f.Add("create\x00--path=a\x00--pv=p\x00--overcommit=2")
	f.Add("expand\x00--path=a\x00--pv=p\x00--limit=5\x00--overcommit=NaN")
	f.Add("create\x00--path=a\x00--pv=p\x00--uid=4294967296\x00--limit=5\x00--overcommit=0x1p2")
	f.Fuzz(func(t *testing.T, joined string) {
		op, err := ParseArgs(strings.Split(joined, "\x00"))
		if err != nil {
			return
		}
		// A probe reads the root's filesystem: it alone needs no volume.
		if op.Kind != Probe && (op.Path == "" || op.Owner.PV == "") {
			t.Fatalf("accepted an operation without a path or PV: %+v", op)
		}
		// Nothing a class or a PV could not hold, nothing that makes a marker too large to read.
		if op.UID < -1 || op.UID > config.MaxID || op.GID < -1 || op.GID > config.MaxID ||
			op.Overcommit != 0 && !(op.Overcommit > 0 && op.Overcommit <= 100) {
			t.Fatalf("accepted uid %d, gid %d or overcommit %g", op.UID, op.GID, op.Overcommit)
		}
		if m := op.Owner; len(m.PV)+len(m.ClaimName) > 2*253 || len(m.ClaimNamespace) > 63 || len(m.ClaimUID)+len(m.NodeUID) > 2*maxUID || len(op.Why) > maxWhy {
			t.Fatalf("accepted a name or words too long: %+v", op)
		}
		if slices.Contains(op.Args(), batchSeparator) {
			t.Fatalf("%+v: its arguments %q contain the batch separator", op, op.Args())
		}
		again, err := ParseArgs(op.Args())
		if err != nil {
			t.Fatalf("%+v: its own arguments %q do not parse: %v", op, op.Args(), err)
		}
		if !again.Now.Equal(op.Now) {
			t.Fatalf("time %v came back as %v", op.Now, again.Now)
		}
		again.Now = op.Now
		// An overcommit factor means something only with a limit, and 1 (or 0) is the default:
		// Args leaves it out then.
		if op.Limit == 0 || op.overcommit() == 1 {
			again.Overcommit, op.Overcommit = 0, 0
		}
		if again != op {
			t.Fatalf("%+v came back as %+v", op, again)
		}
	})
}
