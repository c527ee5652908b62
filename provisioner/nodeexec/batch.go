package nodeexec

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// BatchRunner runs a batch of operations in a helper pod on node: PodRunner (a pod each),
// Agents (an exec into a pod that stays), or a fake in tests.
type BatchRunner interface {
	Run(ctx context.Context, node, root string, ops []volumeop.Op) ([]volumeop.Outcome, error)
}

// Batcher runs operations on nodes in helper pods, several to a pod. Each node has lanes for
// operations that take constant time (create, archive, release, expand, usage, probe) and for
// those that walk a volume's tree (delete, scrub), so that a long delete never holds up a
// create; each of them twice, as operations on limits run in pods of their own (with
// CAP_SYS_ADMIN). A lane runs up to podsPerLane pods at a time; the operations that arrive
// while they all run wait, and then share the next one to start (at most maxOps, and no more
// than their outcomes can report). A pod about to start waits a moment (gather) for the
// operations that arrive together with its first: the callers a finished pod frees come back
// with their next operations within milliseconds of one another.
//
// A pod that fails fails each of its operations, and each is retried on its own, as the markers
// make every operation safe to repeat. A caller that gives up (its context ends) leaves its
// operation's outcome behind; when every caller of a pod has given up, the pod is stopped.
type Batcher struct {
	pods   BatchRunner
	maxOps int
	// gather, when set, waits a moment before a pod that is not full starts.
	gather func()
	// observe, when set, is called with the number of operations of each pod started.
	observe func(ops int)
	// queued, in tests, is called with each request once it is queued.
	queued func(r *request)

	mu    sync.Mutex
	lanes map[lane]*queue // a lane is in the map while it runs a pod
	// draining counts the lanes' goroutines, for tests to wait for.
	draining sync.WaitGroup
}

// NewBatcher batches operations of at most maxOps to a pod run by pods, and has a pod that is not
// full wait for gather before it starts; observe (optional) is called with the size of every batch.
func NewBatcher(pods BatchRunner, maxOps int, gather time.Duration, observe func(ops int)) *Batcher {
	b := newBatcher(pods, maxOps, observe)
	if gather > 0 {
		b.gather = func() { time.Sleep(gather) }
	}
	return b
}

func newBatcher(pods BatchRunner, maxOps int, observe func(ops int)) *Batcher {
	return &Batcher{pods: pods, maxOps: maxOps, observe: observe, lanes: map[lane]*queue{}}
}

// podsPerLane is how many pods a lane runs at once. With two, the operations that pile up while
// a pod runs start theirs without waiting for a pod that set out with only a few.
const podsPerLane = 2

type lane struct {
	node, root string
	walks      bool
	// admin: the operations set, clear or read limits, and their pods get CAP_SYS_ADMIN; no other
	// operation rides in such a pod.
	admin bool
}

type queue struct {
	waiting []*request
	pods    int // running, or about to
}

type request struct {
	ctx  context.Context
	op   volumeop.Op
	done chan reply // buffered: the lane never waits for a caller
}

type reply struct {
	res volumeop.Result
	err error
}

// Run performs op on node, root being the directory op.Path is relative to there, and returns
// its result when its pod has ended, or an error when ctx ends first.
func (b *Batcher) Run(ctx context.Context, node, root string, op volumeop.Op) (volumeop.Result, error) {
	r := &request{ctx: ctx, op: op, done: make(chan reply, 1)}
	l := lane{node: node, root: root, walks: op.Kind.WalksTree(), admin: op.NeedsAdmin()}
	b.mu.Lock()
	q := b.lanes[l]
	if q == nil {
		q = &queue{}
		b.lanes[l] = q
	}
	q.waiting = append(q.waiting, r)
	start := q.pods < podsPerLane
	if start {
		q.pods++
	}
	b.mu.Unlock()
	if b.queued != nil {
		b.queued(r)
	}
	if start {
		b.draining.Go(func() { b.drain(l, q) })
	}
	select {
	case rep := <-r.done:
		return rep.res, rep.err
	case <-ctx.Done():
		return volumeop.Result{}, fmt.Errorf("%s %s on node %s: %w", op.Kind, op.Path, node, context.Cause(ctx))
	}
}

// drain runs pods of the lane l, one after another, until nobody waits.
func (b *Batcher) drain(l lane, q *queue) {
	for {
		b.mu.Lock()
		full := len(q.waiting) >= b.maxOps
		b.mu.Unlock()
		if !full && b.gather != nil {
			b.gather()
		}
		b.mu.Lock()
		waiting := slices.DeleteFunc(q.waiting, func(r *request) bool { return r.ctx.Err() != nil })
		if len(waiting) == 0 {
			q.waiting = nil
			if q.pods--; q.pods == 0 {
				delete(b.lanes, l)
			}
			b.mu.Unlock()
			return
		}
		ops := make([]volumeop.Op, len(waiting))
		for i, r := range waiting {
			ops[i] = r.op
		}
		n := volumeop.Pack(ops, b.maxOps)
		batch := slices.Clone(waiting[:n])
		q.waiting = slices.Clone(waiting[n:])
		b.mu.Unlock()
		b.run(l, batch, ops[:n])
	}
}

var errCallersGone = errors.New("every operation's caller gave up")

// run runs one pod for batch and hands each caller its operation's outcome.
func (b *Batcher) run(l lane, batch []*request, ops []volumeop.Op) {
	// The pod serves its callers: it goes on while any of them waits, and no longer.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(batch[0].ctx))
	defer cancel(nil)
	var left atomic.Int32
	left.Store(int32(len(batch)))
	for _, r := range batch {
		stop := context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel(errCallersGone)
			}
		})
		defer stop()
	}
	if b.observe != nil {
		b.observe(len(ops))
	}
	logger := klog.FromContext(ctx).WithValues("node", l.node, "operations", len(ops))
	logger.V(4).Info("Running a batch of operations")
	start := time.Now()
	outs, err := b.pods.Run(ctx, l.node, l.root, ops)
	logger.V(4).Info("Ran a batch of operations", "took", time.Since(start), "err", err)
	for i, r := range batch {
		switch {
		case err != nil:
			r.done <- reply{err: err}
		case outs[i].Error != "":
			r.done <- reply{err: fmt.Errorf("helper on node %s failed: %w", l.node, outs[i].Err())}
		default:
			r.done <- reply{res: outs[i].Result}
		}
	}
}
