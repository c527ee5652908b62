package volumeop

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/pathname"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
)

func TestBatchArgsRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ops := []Op{
		{Kind: Create, Path: "ns/c", Owner: volumefs.Marker{PV: "pvc-1", ClaimUID: "u1"}, Mode: 0o2770, UID: 1000, GID: -1},
		{Kind: Release, Path: "a", Owner: volumefs.Marker{PV: "pvc-2"}, Mode: 0o777, UID: -1, GID: -1, Why: "kept -- by -- policy", Now: now},
		{Kind: Archive, Path: "b", Owner: volumefs.Marker{PV: "pvc-3", NodeUID: "n"}, Mode: 0o777, UID: -1, GID: -1, Now: now},
		{Kind: Usage, Path: "c", Owner: volumefs.Marker{PV: "pvc-4", NodeUID: "n"}, Mode: 0o777, UID: -1, GID: -1},
	}
	for n := 1; n <= len(ops); n++ {
		got, err := ParseBatchArgs(BatchArgs(ops[:n]))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(ops[:n]) {
			t.Errorf("ParseBatchArgs(%q) = %+v, %v; want %+v", BatchArgs(ops[:n]), got, err, ops[:n])
		}
	}
}

func TestParseBatchArgsRefuses(t *testing.T) {
	one := []string{"delete", "--path=a", "--pv=p"}
	many := []Op{}
	for i := range 100 {
		many = append(many, Op{Kind: Delete, Path: fmt.Sprint("v", i), Owner: volumefs.Marker{PV: "p"}})
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "operation 1: missing operation"},
		{append(append(one, "--"), "--"), "operation 2: missing operation"},
		{append(append(one, "--"), "delete", "--path=b"), "operation 2: --path and --pv are required"},
		{BatchArgs(many), "100 operations: only 66 fit"},
	} {
		if _, err := ParseBatchArgs(tt.args); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseBatchArgs(%q) = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// longestPath is a volume path as long as pathname.Validate allows, with characters JSON escapes.
func longestPath() string {
	c := strings.Repeat(`"`, pathname.MaxComponent)
	p := c
	for len(p)+1+len(c) <= pathname.MaxPath {
		p += "/" + c
	}
	return p
}

func TestPack(t *testing.T) {
	del := Op{Kind: Delete, Path: "a"}
	usage := Op{Kind: Usage, Path: "a"}
	long := Op{Kind: Archive, Path: longestPath()}
	ops := func(n int, op Op) []Op {
		s := make([]Op, n)
		for i := range s {
			s[i] = op
		}
		return s
	}
	for _, tt := range []struct {
		name string
		ops  []Op
		max  int
		want int
	}{
		{"none", nil, 64, 0},
		{"bounded by max", ops(100, del), 10, 10},
		{"bounded by the result's size", ops(100, del), 1000, 66},
		{"usage outcomes bounded by the result's size", ops(100, usage), 1000, 66},
		{"all", ops(5, del), 64, 5},
		{"one archive of the longest name always", ops(3, long), 64, 1},
	} {
		if got := Pack(tt.ops, tt.max); got != tt.want {
			t.Errorf("%s: Pack = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestEncodeOutcomesFits: whatever the operations of a packed batch report, their outcomes fit
// in a termination message and decode to what they were, errors cut only when they must be.
func TestEncodeOutcomesFits(t *testing.T) {
	longErr := strings.Repeat(`could not "remove" \ `, 200)
	long := Op{Kind: Archive, Path: longestPath()}
	for _, tt := range []struct {
		name     string
		ops      []Op
		outcome  func(i int, op Op) Outcome
		wantFull bool // every error in full
	}{
		{"successes", make([]Op, 64), func(int, Op) Outcome { return Outcome{Result: Result{Scrubbed: true}} }, true},
		{"one long error", make([]Op, 64), func(i int, _ Op) Outcome {
			if i == 3 {
				return Outcome{Error: longErr[:3000]}
			}
			return Outcome{}
		}, true},
		{"every one a long error", make([]Op, 66), func(int, Op) Outcome { return Outcome{Error: longErr} }, false},
		{"usage of the largest numbers", usages(66), func(int, Op) Outcome {
			return Outcome{Result: Result{Used: math.MaxUint64, Limit: math.MaxUint64}}
		}, true},
		{"usage and long errors", usages(66), func(i int, _ Op) Outcome {
			if i%2 == 0 {
				return Outcome{Error: longErr}
			}
			return Outcome{Result: Result{Used: math.MaxUint64, Limit: math.MaxUint64}}
		}, false},
		{"the longest archive name and long errors", []Op{long, {}, {}}, func(i int, op Op) Outcome {
			if i == 0 {
				return Outcome{Result: Result{Archive: filepath.Join(filepath.Dir(op.Path), "archived-"+filepath.Base(op.Path)+"-20260102T030405Z-999")}}
			}
			return Outcome{Error: longErr}
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if n := Pack(tt.ops, len(tt.ops)); n != len(tt.ops) {
				t.Fatalf("only %d of %d packed", n, len(tt.ops))
			}
			outs := make([]Outcome, len(tt.ops))
			for i, op := range tt.ops {
				outs[i] = tt.outcome(i, op)
			}
			s := EncodeOutcomes(outs)
			if len(s) > ResultBudget {
				t.Fatalf("%d bytes, over %d", len(s), ResultBudget)
			}
			got, err := DecodeOutcomes(s, len(outs))
			if err != nil {
				t.Fatal(err)
			}
			for i := range outs {
				want := outs[i]
				if want.Error != "" && !tt.wantFull {
					if !strings.HasSuffix(got[i].Error, "…") || !strings.HasPrefix(want.Error, strings.TrimSuffix(got[i].Error, "…")) || len(got[i].Error) < 20 {
						t.Fatalf("outcome %d: error %q is not a cut of %q", i, got[i].Error, want.Error)
					}
					want.Error = got[i].Error
				}
				if got[i] != want {
					t.Fatalf("outcome %d = %+v, want %+v", i, got[i], want)
				}
			}
		})
	}
	if _, err := DecodeOutcomes(`[{}]`, 2); err == nil {
		t.Error("DecodeOutcomes accepted too few outcomes")
	}
}

// usages is n usage operations.
func usages(n int) []Op {
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = Op{Kind: Usage, Path: fmt.Sprint("ns/v", i)}
	}
	return ops
}

func TestRunBatch(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := t.TempDir()
	var ops []Op
	for i := range 20 {
		ops = append(ops, Op{Kind: Create, Path: fmt.Sprint("v", i), Owner: volumefs.Marker{PV: fmt.Sprint("pvc-", i)}, Mode: 0o700, UID: -1, GID: -1})
	}
	ops = append(ops, Op{Kind: Delete, Path: "missing/..", Owner: volumefs.Marker{PV: "p"}})
	outs := RunBatch(ctx, dir, ops)
	for i := range 20 {
		if outs[i] != (Outcome{}) {
			t.Errorf("create %d: %+v", i, outs[i])
		}
		if fi, err := os.Stat(filepath.Join(dir, ops[i].Path)); err != nil || !fi.IsDir() {
			t.Errorf("create %d: %v", i, err)
		}
	}
	if !strings.Contains(outs[20].Error, "not clean") {
		t.Errorf("bad path: %+v", outs[20])
	}
}

// TestRunBatchCancelled: once its context ends, a batch starts none of its operations; each
// says so and why.
func TestRunBatchCancelled(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := t.TempDir()
	var ops []Op
	for i := range 2 * runningAtOnce {
		ops = append(ops, Op{Kind: Create, Path: fmt.Sprint("v", i), Owner: volumefs.Marker{PV: fmt.Sprint("pvc-", i)}, Mode: 0o700, UID: -1, GID: -1})
	}
	gone := errors.New("the caller gave up")
	ctx, cancel := context.WithCancelCause(ctx)
	cancel(gone)
	for i, out := range RunBatch(ctx, dir, ops) {
		if want := fmt.Sprintf("create v%d not started: %v", i, gone); out.Error != want {
			t.Errorf("operation %d: %+v, want the error %q", i, out, want)
		}
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("made by a cancelled batch: %v %v", left, err)
	}
}

// An operation refused for want of room stays recognizable after its outcome crossed a helper
// pod's termination message; any other error does not pass for it.
func TestOutcomeNoRoom(t *testing.T) {
	outs := []Outcome{
		{Error: "btrfs at /data holds 512 MiB: " + quota.ErrNoRoom.Error(), NoRoom: true},
		{Error: "permission denied"},
		{},
	}
	got, err := DecodeOutcomes(EncodeOutcomes(outs), len(outs))
	if err != nil {
		t.Fatal(err)
	}
	if err := got[0].Err(); !errors.Is(err, quota.ErrNoRoom) || err.Error() != outs[0].Error {
		t.Errorf("outcome 0: %v, want its text and ErrNoRoom", err)
	}
	if err := got[1].Err(); err == nil || errors.Is(err, quota.ErrNoRoom) {
		t.Errorf("outcome 1: %v, want a plain error", err)
	}
	if err := got[2].Err(); err != nil {
		t.Errorf("outcome 2: %v, want success", err)
	}
}

// A directory an operation refuses (here a symbolic link where another provisioner's volume
// should be) stays a refusal after its outcome crossed a helper pod's termination message, so a
// refused take-over is told apart from a helper that failed.
func TestOutcomeRefused(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := t.TempDir()
	if err := os.Symlink("/etc", filepath.Join(dir, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	ops := []Op{
		{Kind: Adopt, Path: "sym", Owner: volumefs.Marker{PV: "pvc-1"}, Check: true},
		{Kind: Adopt, Path: "real", Owner: volumefs.Marker{PV: "pvc-2"}, Check: true},
	}
	got, err := DecodeOutcomes(EncodeOutcomes(RunBatch(ctx, dir, ops)), len(ops))
	if err != nil {
		t.Fatal(err)
	}
	if err := got[0].Err(); err == nil || !Refused(err) || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("adopting a symlink: %v, want a refusal", err)
	}
	if err := got[1].Err(); err != nil {
		t.Errorf("checking a real directory: %v", err)
	}
	if Refused(errors.New("permission denied")) || Refused(quota.ErrNoRoom) {
		t.Errorf("a plain failure passes for a refusal")
	}
}
