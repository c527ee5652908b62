package volumeop

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"

	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumefs"
)

// A batch is several operations run by one helper pod: their arguments are groups separated by
// batchSeparator (no argument of an operation is ever a bare "--"), and their outcomes come back,
// in order, as one JSON array in the container's termination message.

const batchSeparator = "--"

// ResultBudget is what a batch's outcomes may take: the kubelet keeps at most 4096 bytes of a
// termination message.
const ResultBudget = 4000

// minRecord is what Pack reserves for any outcome: a short error, or a success. Longer errors are
// cut to fit when the whole batch's would not (EncodeOutcomes).
const minRecord = 60

// runningAtOnce bounds the operations a helper runs at the same time.
const runningAtOnce = 8

// WalksTree reports whether operations of kind k take time that grows with a volume's contents
// (they walk its tree); the others take constant time. Batches keep them apart, so that a long
// delete does not hold up the creates behind it.
func (k Kind) WalksTree() bool { return k == Delete || k == Scrub || k == Adopt }

// ChangesRoom reports whether operations of kind k may change the room left on a volume's
// filesystem: the ones that make, reclaim, empty or resize a volume, or clear its limit.
func (k Kind) ChangesRoom() bool { return k != Usage && k != Probe && k != Room }

// Outcome is one operation's result in a batch: Error is empty when it succeeded.
type Outcome struct {
	Result
	Error string `json:"error,omitempty"`
	// NoRoom: the error matched quota.ErrNoRoom, which the caller tells apart.
	NoRoom bool `json:"noRoom,omitempty"`
	// Refused: the operation refused what it found (Refused), which the caller tells apart.
	Refused bool `json:"refused,omitempty"`
}

// ErrRefused is what an outcome that crossed a helper pod matches where the operation's own
// error was one of volumefs's refusals.
var ErrRefused = errors.New("refused what it found")

// Refused reports whether err is an operation's refusal of what it found on disk (a directory
// that is not a volume's, or not one it may take over), as opposed to a failure to reach it.
func Refused(err error) bool {
	for _, e := range []error{ErrRefused, volumefs.ErrNotAdoptable, volumefs.ErrNotOwner, volumefs.ErrNested, volumefs.ErrInvalidPath, volumefs.ErrReleased} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Err is the outcome's error, nil if it succeeded; it matches quota.ErrNoRoom where the
// operation's own error did.
func (o Outcome) Err() error {
	switch {
	case o.Error == "":
		return nil
	case o.NoRoom:
		return &outcomeError{o.Error, quota.ErrNoRoom}
	case o.Refused:
		return &outcomeError{o.Error, ErrRefused}
	}
	return errors.New(o.Error)
}

// outcomeError is an error that crossed a helper pod's termination message: its text, and the
// sentinel it matched.
type outcomeError struct {
	msg string
	is  error
}

func (e *outcomeError) Error() string { return e.msg }
func (e *outcomeError) Unwrap() error { return e.is }

// recordBound is the most a successful outcome of op can take in EncodeOutcomes, comma included;
// a failed one takes at most minRecord once cut.
func recordBound(op Op) int {
	switch op.Kind {
	case Archive:
		// The archive is named after the volume, in its parent: dir/archived-base-stamp[-n], and
		// JSON escapes at most double a name (paths have no control characters).
		return len(`{"archive":""},`) + 2*(len(op.Path)+len("/archived--20060102T150405Z-999"))
	case Usage:
		// Two numbers of up to 20 digits each (uint64).
		return max(minRecord, len(`{"used":,"limit":},`)+2*len("18446744073709551615"))
	case Room:
		return max(minRecord, len(`{"room":,"device":},`)+2*len("18446744073709551615"))
	}
	return minRecord
}

// Pack returns how many of ops, from the first, one helper may run: at most max, and no more
// than their outcomes can report within ResultBudget. It is at least 1 when ops is not empty.
func Pack(ops []Op, max int) int {
	used := len("[]")
	for i, op := range ops {
		used += recordBound(op)
		if i == max || (i > 0 && used > ResultBudget) {
			return i
		}
	}
	return len(ops)
}

// BatchArgs encodes ops as the arguments of `dirpv helper`.
func BatchArgs(ops []Op) []string {
	var args []string
	for i, op := range ops {
		if i > 0 {
			args = append(args, batchSeparator)
		}
		args = append(args, op.Args()...)
	}
	return args
}

// ParseBatchArgs is the inverse of BatchArgs; it refuses a batch whose outcomes might not fit.
func ParseBatchArgs(args []string) ([]Op, error) {
	var ops []Op
	for group := range splitGroups(args) {
		op, err := ParseArgs(group)
		if err != nil {
			return nil, fmt.Errorf("operation %d: %w", len(ops)+1, err)
		}
		ops = append(ops, op)
	}
	if n := Pack(ops, len(ops)); n < len(ops) {
		return nil, fmt.Errorf("%d operations: only %d fit in one helper's result", len(ops), n)
	}
	return ops, nil
}

func splitGroups(args []string) func(yield func([]string) bool) {
	return func(yield func([]string) bool) {
		for {
			i := slices.Index(args, batchSeparator)
			if i < 0 {
				yield(args)
				return
			}
			if !yield(args[:i]) {
				return
			}
			args = args[i+1:]
		}
	}
}

// RunBatch performs ops in dir, several at a time, and returns each one's outcome. Once ctx ends
// it starts no more of them, and stops waiting for those running (see RunLocal).
func RunBatch(ctx context.Context, dir string, ops []Op) []Outcome {
	out := make([]Outcome, len(ops))
	sem := make(chan struct{}, runningAtOnce)
	var wg sync.WaitGroup
	for i, op := range ops {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil { // the slot it may have taken is not needed: nothing starts now
			out[i].Error = fmt.Sprintf("%s %s not started: %v", op.Kind, op.Path, context.Cause(ctx))
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := RunLocal(ctx, dir, op)
			out[i].Result = res
			if err != nil {
				out[i].Error = cmp.Or(err.Error(), "failed")
				out[i].NoRoom = errors.Is(err, quota.ErrNoRoom)
				out[i].Refused = Refused(err)
			}
		})
	}
	wg.Wait()
	return out
}

// EncodeOutcomes writes outcomes as a JSON array within ResultBudget, provided their operations
// were packed by Pack: if the errors' full texts do not fit, each is cut to an equal share.
func EncodeOutcomes(outs []Outcome) string {
	s := encode(outs)
	failed := 0
	for _, o := range outs {
		if o.Error != "" {
			failed++
		}
	}
	if len(s) <= ResultBudget || failed == 0 {
		return s
	}
	withoutErrors := slices.Clone(outs)
	for i := range withoutErrors {
		withoutErrors[i].Error = ""
	}
	// Each error's record grows by `"error":"…",` (up to 13 bytes) plus its escaped text.
	share := (ResultBudget-len(encode(withoutErrors)))/failed - 13
	cut := slices.Clone(outs)
	for i := range cut {
		if cut[i].Error != "" {
			cut[i].Error = shorten(cut[i].Error, share)
		}
	}
	return encode(cut)
}

func encode(outs []Outcome) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(outs) // outcomes are plain strings and booleans
	return string(bytes.TrimSpace(b.Bytes()))
}

// shorten cuts s so that, JSON-escaped and followed by "…", it takes at most n bytes.
func shorten(s string, n int) string {
	const ellipsis = "…"
	n -= len(ellipsis)
	size := 0
	for i, r := range s {
		w := utf8.RuneLen(r)
		if r < 0x20 || r == '"' || r == '\\' {
			w = 6 // \u00XX at worst
		}
		if size+w > n {
			return s[:i] + ellipsis
		}
		size += w
	}
	return s
}

// DecodeOutcomes reads the outcomes of n operations.
func DecodeOutcomes(s string, n int) ([]Outcome, error) {
	var outs []Outcome
	if err := json.Unmarshal([]byte(s), &outs); err != nil {
		return nil, err
	}
	if len(outs) != n {
		return nil, fmt.Errorf("%d outcomes for %d operations", len(outs), n)
	}
	return outs, nil
}
