package volumeop

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"

	"dirpv.io/dirpv/provisioner/volumefs"
)

// TestServe: the stream says it is ready, runs batches side by side (a slow one does not hold
// up the next), answers each by its ID, refuses arguments it cannot read without ending, ends a
// batch whose caller cancels it, waits for the batches still running when its input ends, and
// ends at a line that is no request.
func TestServe(t *testing.T) {
	ctx := context.Background()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, inR, outW, func(ctx context.Context, ops []Op) []Outcome {
			outs := make([]Outcome, len(ops))
			switch ops[0].Owner.PV {
			case "slow":
				<-release
			case "held":
				<-ctx.Done() // until its caller cancels it
				outs[0].Error = context.Cause(ctx).Error()
			}
			for i, op := range ops {
				outs[i].Archive = op.Owner.PV
			}
			return outs
		})
		_ = outW.Close()
	}()
	replies := bufio.NewScanner(outR)
	next := func() Reply {
		t.Helper()
		if !replies.Scan() {
			t.Fatalf("no reply: %v", replies.Err())
		}
		var r Reply
		if err := json.Unmarshal(replies.Bytes(), &r); err != nil {
			t.Fatalf("reply %q: %v", replies.Text(), err)
		}
		return r
	}
	send := func(r Request) {
		t.Helper()
		line, _ := json.Marshal(r)
		if _, err := inW.Write(append(line, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	op := func(pv string) Op {
		return Op{Kind: Create, Path: pv, Owner: volumefs.Marker{PV: pv}, Mode: 0o700, UID: -1, GID: -1}
	}

	if r := next(); r.ID != 0 || r.Outcomes != nil || r.Error != "" {
		t.Fatalf("first line %+v, want the ready reply", r)
	}
	send(Request{ID: 1, Args: BatchArgs([]Op{op("slow")})})
	send(Request{ID: 2, Args: BatchArgs([]Op{op("a"), op("b")})})
	if r := next(); r.ID != 2 || len(r.Outcomes) != 2 || r.Outcomes[1].Archive != "b" {
		t.Fatalf("reply %+v, want batch 2's while batch 1 runs", r)
	}
	send(Request{ID: 3, Args: []string{"no-such-op"}})
	if r := next(); r.ID != 3 || r.Error == "" || r.Outcomes != nil {
		t.Fatalf("reply %+v, want batch 3 refused", r)
	}
	// A cancel ends the batch of its ID, which replies; one for no batch running changes nothing.
	send(Request{ID: 4, Args: BatchArgs([]Op{op("held")})})
	send(Request{ID: 99, Cancel: true})
	send(Request{ID: 4, Cancel: true})
	if r := next(); r.ID != 4 || len(r.Outcomes) != 1 || r.Outcomes[0].Error != errCallerGone.Error() {
		t.Fatalf("reply %+v, want batch 4 ended by its cancel", r)
	}
	_ = inW.Close()
	close(release)
	if r := next(); r.ID != 1 || len(r.Outcomes) != 1 || r.Outcomes[0].Archive != "slow" {
		t.Fatalf("reply %+v, want batch 1's after the input ended", r)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v at the end of its input", err)
	}

	// A line that is no request ends the stream.
	err := Serve(ctx, strings.NewReader("{\"id\":1,\"args\":[]}\nhello\n"), io.Discard, func(context.Context, []Op) []Outcome { return nil })
	if err == nil || !strings.Contains(err.Error(), "not a request") {
		t.Fatalf("Serve of a stray line: %v", err)
	}
}

// TestServeBounded: a flood of requests runs at most batchesAtOnce batches at a time, holds no
// goroutine for those that wait their turn, answers a cancel of one that waits at once, and
// replies to every request exactly once.
func TestServeBounded(t *testing.T) {
	const n = 3000
	before := runtime.NumGoroutine()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	release := make(chan struct{})
	started := make(chan struct{}, n)
	var mu sync.Mutex
	now, most := 0, 0
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), inR, outW, func(ctx context.Context, ops []Op) []Outcome {
			mu.Lock()
			now++
			most = max(most, now)
			mu.Unlock()
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			mu.Lock()
			now--
			mu.Unlock()
			return make([]Outcome, len(ops))
		})
		_ = outW.Close()
	}()
	replies := make(chan Reply, n+1)
	go func() {
		defer close(replies)
		lines := bufio.NewScanner(outR)
		for lines.Scan() {
			var r Reply
			if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
				t.Errorf("reply %q: %v", lines.Text(), err)
			}
			replies <- r
		}
	}()
	send := func(r Request) {
		t.Helper()
		line, _ := json.Marshal(r)
		if _, err := inW.Write(append(line, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	if r := <-replies; r.ID != 0 {
		t.Fatalf("first line %+v, want the ready reply", r)
	}
	args := BatchArgs([]Op{{Kind: Create, Path: "a", Owner: volumefs.Marker{PV: "p"}, Mode: 0o700, UID: -1, GID: -1}})
	for id := uint64(1); id <= n; id++ {
		send(Request{ID: id, Args: args})
	}
	// The last batch waits for its turn: its cancel is answered at once, and once it is, every
	// request before it has been read.
	send(Request{ID: n, Cancel: true})
	seen := map[uint64]int{}
	if r := <-replies; r.ID != n || r.Error != "not started: "+errCallerGone.Error() {
		t.Errorf("reply %+v, want batch %d refused by its cancel", r, n)
	} else {
		seen[n]++
	}
	for range batchesAtOnce {
		<-started
	}
	if extra := len(started); extra > 0 {
		t.Errorf("%d batches more than %d started", extra, batchesAtOnce)
	}
	if held := runtime.NumGoroutine() - before; held > batchesAtOnce+50 {
		t.Errorf("%d goroutines for %d requests, want about %d", held, n, batchesAtOnce)
	}

	close(release)
	_ = inW.Close()
	for r := range replies {
		if r.Error != "" || len(r.Outcomes) != 1 {
			t.Errorf("reply %+v, want one outcome", r)
		}
		seen[r.ID]++
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for id := uint64(1); id <= n; id++ {
		if seen[id] != 1 {
			t.Errorf("batch %d: %d replies", id, seen[id])
		}
	}
	if most > batchesAtOnce {
		t.Errorf("%d batches ran at once, want at most %d", most, batchesAtOnce)
	}
}
