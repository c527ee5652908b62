package volumeop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// A stream of batches is how a helper agent runs them (`dirpv helper --stream`, one exec for the
// agent's life): each Request is a line of JSON in, and each Reply a line out, sent when its
// batch has run; batches run side by side, so replies come in any order. The first line out is
// a Reply with ID 0: the stream is ready.

// Request is one batch: its operations as BatchArgs has them. With Cancel, it is no batch but
// word that the caller of the batch with the same ID gave up: that batch starts none of its
// operations that have not started (they fail), and its reply comes as usual.
type Request struct {
	ID     uint64   `json:"id"`
	Args   []string `json:"args,omitempty"`
	Cancel bool     `json:"cancel,omitempty"`
}

// Reply is the outcome of each operation of the Request with the same ID, or the Error that
// kept it from running at all (arguments it could not read).
type Reply struct {
	ID       uint64    `json:"id"`
	Outcomes []Outcome `json:"outcomes,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// MaxStreamLine bounds a line of a stream, either way: a full batch's arguments or outcomes
// take a few tens of KiB.
const MaxStreamLine = 1 << 20

// Serve runs the batches requested on in with run, each when it arrives, and writes their
// replies to out, until in ends; then it waits for the batches still running. A line that is
// not a request ends it with an error.
func Serve(ctx context.Context, in io.Reader, out io.Writer, run func(context.Context, []Op) []Outcome) error {
	var mu sync.Mutex
	reply := func(r Reply) error {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		_, err = out.Write(append(line, '\n'))
		return err
	}
	if err := reply(Reply{}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	var running sync.Map // batch ID -> the context.CancelCauseFunc that ends it
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 64<<10), MaxStreamLine)
	for lines.Scan() {
		var req Request
		if err := json.Unmarshal(lines.Bytes(), &req); err != nil || req.ID == 0 {
			return fmt.Errorf("stream: not a request: %.100q", lines.Text())
		}
		if req.Cancel {
			if stop, ok := running.Load(req.ID); ok { // a batch that has ended has nothing to stop
				stop.(context.CancelCauseFunc)(errCallerGone)
			}
			continue
		}
		ops, err := ParseBatchArgs(req.Args)
		if err != nil {
			_ = reply(Reply{ID: req.ID, Error: err.Error()})
			continue
		}
		batch, stop := context.WithCancelCause(ctx)
		running.Store(req.ID, stop)
		wg.Go(func() {
			defer stop(nil)
			defer running.Delete(req.ID)
			// A reply that cannot be written has no reader left: the stream is over.
			_ = reply(Reply{ID: req.ID, Outcomes: run(batch, ops)})
		})
	}
	return lines.Err()
}

// errCallerGone ends a batch whose caller sent a cancel.
var errCallerGone = errors.New("its caller gave up")
