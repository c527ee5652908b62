package volumeop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// A stream of batches is how a helper agent runs them (`dirpv helper --stream`, one exec for the
// agent's life): each Request is a line of JSON in, and each Reply a line out, sent when its
// batch has run; batches run side by side, so replies come in any order. The first line out is
// a Reply with ID 0: the stream is ready.

// Request is one batch: its operations as BatchArgs has them. With Cancel, it is no batch but
// word that the caller of the batch with the same ID gave up: that batch starts none of its
// operations that have not started (they fail), and its reply comes as usual; one still waiting
// for its turn (batchesAtOnce) is not run at all.
type Request struct {
	ID     uint64   `json:"id"`
	Args   []string `json:"args,omitempty"`
	Cancel bool     `json:"cancel,omitempty"`
}

// Reply is the outcome of each operation of the Request with the same ID, or the Error that
// kept it from running at all (arguments it could not read, a cancel before its turn).
type Reply struct {
	ID       uint64    `json:"id"`
	Outcomes []Outcome `json:"outcomes,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// MaxStreamLine bounds a line of a stream, either way: a full batch's arguments or outcomes
// take a few tens of KiB.
const MaxStreamLine = 1 << 20

// batchesAtOnce bounds the batches a stream runs at the same time; the others wait their turn, in
// the order they came, without a goroutine each. The provisioner sends an agent at most two
// batches of each of its two lanes at once (nodeexec's podsPerLane): eight leave room for twice
// that, while a stream that floods requests gets at most eight times runningAtOnce operations
// running, not a goroutine for each request.
const batchesAtOnce = 8

// Serve runs the batches requested on in with run, each when it arrives and fewer than
// batchesAtOnce run, else once one ends, and writes their replies to out, until in ends; then it
// waits for the batches still running or waiting. A line that is not a request ends it with an
// error.
func Serve(ctx context.Context, in io.Reader, out io.Writer, run func(context.Context, []Op) []Outcome) error {
	var writing sync.Mutex
	reply := func(r Reply) error {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		writing.Lock()
		defer writing.Unlock()
		_, err = out.Write(append(line, '\n'))
		return err
	}
	if err := reply(Reply{}); err != nil {
		return err
	}
	type batch struct {
		id   uint64
		ops  []Op
		ctx  context.Context
		stop context.CancelCauseFunc
	}
	var (
		mu      sync.Mutex
		batches = map[uint64]*batch{} // running or waiting, by ID
		waiting []*batch              // in the order they came
		running int
		wg      sync.WaitGroup
	)
	defer wg.Wait()
	// work runs b, then each waiting batch in turn, until none waits.
	work := func(b *batch) {
		for b != nil {
			// A reply that cannot be written has no reader left: the stream is over.
			_ = reply(Reply{ID: b.id, Outcomes: run(b.ctx, b.ops)})
			b.stop(nil)
			mu.Lock()
			delete(batches, b.id)
			b = nil
			if len(waiting) > 0 {
				b, waiting = waiting[0], waiting[1:]
			} else {
				running--
			}
			mu.Unlock()
		}
	}
	// take starts or queues the batch of req, or cancels one; it returns the reply to send at once.
	take := func(req Request) *Reply {
		var ops []Op
		if !req.Cancel {
			var err error
			if ops, err = ParseBatchArgs(req.Args); err != nil {
				return &Reply{ID: req.ID, Error: err.Error()}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		b, known := batches[req.ID]
		switch {
		case req.Cancel && !known: // a batch that has ended has nothing to stop
			return nil
		case req.Cancel:
			b.stop(errCallerGone)
			i := slices.Index(waiting, b)
			if i < 0 {
				return nil // running: it replies when it ends
			}
			waiting = slices.Delete(waiting, i, i+1)
			delete(batches, b.id)
			return &Reply{ID: b.id, Error: "not started: " + errCallerGone.Error()}
		case known:
			return &Reply{ID: req.ID, Error: fmt.Sprintf("batch %d is already running or waiting", req.ID)}
		}
		b = &batch{id: req.ID, ops: ops}
		b.ctx, b.stop = context.WithCancelCause(ctx)
		batches[b.id] = b
		if running < batchesAtOnce {
			running++
			wg.Go(func() { work(b) })
		} else {
			waiting = append(waiting, b)
		}
		return nil
	}
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 64<<10), MaxStreamLine)
	for lines.Scan() {
		var req Request
		if err := json.Unmarshal(lines.Bytes(), &req); err != nil || req.ID == 0 {
			return fmt.Errorf("stream: not a request: %.100q", lines.Text())
		}
		if r := take(req); r != nil {
			_ = reply(*r)
		}
	}
	return lines.Err()
}

// errCallerGone ends a batch whose caller sent a cancel.
var errCallerGone = errors.New("its caller gave up")
