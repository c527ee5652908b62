package nodeexec

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// fakePods hands each pod to the test, which ends it when it chooses.
type fakePods struct{ pods chan *fakePod }

type fakePod struct {
	ctx  context.Context
	node string
	ops  []volumeop.Op
	end  chan fakeEnd
}

type fakeEnd struct {
	outs []volumeop.Outcome
	err  error
}

func (f *fakePods) Run(ctx context.Context, node, _ string, ops []volumeop.Op) ([]volumeop.Outcome, error) {
	p := &fakePod{ctx: ctx, node: node, ops: ops, end: make(chan fakeEnd)}
	f.pods <- p
	select {
	case e := <-p.end:
		return e.outs, e.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// succeed ends p: each operation succeeds, reporting its PV as the archive's name.
func (p *fakePod) succeed() {
	outs := make([]volumeop.Outcome, len(p.ops))
	for i, op := range p.ops {
		outs[i].Archive = op.Owner.PV
	}
	p.end <- fakeEnd{outs: outs}
}

func (p *fakePod) pvs() string {
	var s []string
	for _, op := range p.ops {
		s = append(s, op.Owner.PV)
	}
	return strings.Join(s, ",")
}

type batchTest struct {
	t      *testing.T
	ctx    context.Context
	pods   *fakePods
	b      *Batcher
	queued chan string // the PV of each operation that joined a queue
	sizes  []int
}

func newBatchTest(t *testing.T, maxOps int) *batchTest {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	bt := &batchTest{t: t, ctx: ctx, pods: &fakePods{pods: make(chan *fakePod)}, queued: make(chan string, 1)}
	bt.b = newBatcher(bt.pods, maxOps, func(n int) { bt.sizes = append(bt.sizes, n) })
	bt.b.queued = func(r *request) { bt.queued <- r.op.Owner.PV }
	t.Cleanup(bt.b.draining.Wait)
	t.Cleanup(cancel) // first: a failed test's callers give up, which stops their pods
	return bt
}

type answer struct {
	pv  string
	res volumeop.Result
	err error
}

// run starts an operation of kind for pv on node and returns, once it is queued, where its
// answer will come.
func (bt *batchTest) run(ctx context.Context, node string, kind volumeop.Kind, pv string) chan answer {
	bt.t.Helper()
	return bt.runOp(ctx, node, volumeop.Op{Kind: kind, Path: pv, Owner: volumefs.Marker{PV: pv}})
}

// runOp is run for any operation.
func (bt *batchTest) runOp(ctx context.Context, node string, op volumeop.Op) chan answer {
	bt.t.Helper()
	c := make(chan answer, 1)
	go func() {
		res, err := bt.b.Run(ctx, node, "/var/lib/dirpv", op)
		c <- answer{op.Owner.PV, res, err}
	}()
	if got := <-bt.queued; got != op.Owner.PV {
		bt.t.Fatalf("%s queued, want %s", got, op.Owner.PV)
	}
	return c
}

func (bt *batchTest) pod(wantNode, wantPVs string) *fakePod {
	bt.t.Helper()
	p := <-bt.pods.pods
	if p.node != wantNode || p.pvs() != wantPVs {
		bt.t.Fatalf("pod on %s for %s, want on %s for %s", p.node, p.pvs(), wantNode, wantPVs)
	}
	return p
}

func (bt *batchTest) answered(c chan answer) {
	bt.t.Helper()
	a := <-c
	if a.err != nil || a.res.Archive != a.pv {
		bt.t.Fatalf("%s: %+v, %v; want its own outcome", a.pv, a.res, a.err)
	}
}

// TestBatchGroupCommit: a node's first operations start pods at once, podsPerLane of them; those
// that arrive while those run share the next pod, at most maxOps to a pod; each caller gets its
// own operation's outcome.
func TestBatchGroupCommit(t *testing.T) {
	bt := newBatchTest(t, 4)
	first := bt.run(bt.ctx, "node1", volumeop.Create, "a")
	p1 := bt.pod("node1", "a")
	second := bt.run(bt.ctx, "node1", volumeop.Create, "b")
	p2 := bt.pod("node1", "b")
	var later []chan answer
	for i := range 6 {
		later = append(later, bt.run(bt.ctx, "node1", volumeop.Create, fmt.Sprint("c", i)))
	}
	p1.succeed()
	bt.answered(first)
	p3 := bt.pod("node1", "c0,c1,c2,c3")
	p2.succeed()
	bt.answered(second)
	p4 := bt.pod("node1", "c4,c5")
	p4.succeed()
	p3.succeed()
	for _, c := range later {
		bt.answered(c)
	}
	if fmt.Sprint(bt.sizes) != "[1 1 4 2]" {
		t.Errorf("batch sizes %v, want [1 1 4 2]", bt.sizes)
	}
}

// TestBatchLanes: a node's long delete holds up neither a create on the same node nor anything
// on another node.
func TestBatchLanes(t *testing.T) {
	bt := newBatchTest(t, 64)
	del := bt.run(bt.ctx, "node1", volumeop.Delete, "old")
	pDel := bt.pod("node1", "old")
	create := bt.run(bt.ctx, "node1", volumeop.Create, "new")
	bt.pod("node1", "new").succeed()
	bt.answered(create)
	other := bt.run(bt.ctx, "node2", volumeop.Scrub, "elsewhere")
	bt.pod("node2", "elsewhere").succeed()
	bt.answered(other)
	pDel.succeed()
	bt.answered(del)
}

// TestBatchAdminLane: operations that set or clear limits, whose pods get CAP_SYS_ADMIN, share
// a pod with no other operation.
func TestBatchAdminLane(t *testing.T) {
	bt := newBatchTest(t, 64)
	first := bt.run(bt.ctx, "node1", volumeop.Create, "a")
	pA := bt.pod("node1", "a")
	second := bt.run(bt.ctx, "node1", volumeop.Create, "c")
	pC := bt.pod("node1", "c")
	waiting := bt.run(bt.ctx, "node1", volumeop.Create, "d") // the lane runs two pods already
	limited := bt.runOp(bt.ctx, "node1", volumeop.Op{Kind: volumeop.Create, Path: "b", Owner: volumefs.Marker{PV: "b"}, Limit: 1 << 20})
	bt.pod("node1", "b").succeed()
	bt.answered(limited)
	pA.succeed()
	bt.answered(first)
	bt.pod("node1", "d").succeed()
	bt.answered(waiting)
	pC.succeed()
	bt.answered(second)
}

// TestBatchFailures: a pod that fails fails each of its operations with its error, an operation
// that fails fails alone, and the lane goes on with the next pod.
func TestBatchFailures(t *testing.T) {
	bt := newBatchTest(t, 64)
	first := bt.run(bt.ctx, "node1", volumeop.Create, "a")
	p1 := bt.pod("node1", "a")
	busy := bt.run(bt.ctx, "node1", volumeop.Create, "busy")
	pBusy := bt.pod("node1", "busy")
	b := bt.run(bt.ctx, "node1", volumeop.Create, "b")
	c := bt.run(bt.ctx, "node1", volumeop.Create, "c")
	p1.end <- fakeEnd{err: errors.New("helper pod dirpv/x on node node1: cannot start: ErrImagePull")}
	if a := <-first; a.err == nil || !strings.Contains(a.err.Error(), "ErrImagePull") {
		t.Fatalf("a: %v, want the pod's error", a.err)
	}
	p2 := bt.pod("node1", "b,c")
	p2.end <- fakeEnd{outs: []volumeop.Outcome{{Error: "create b: directory belongs to another PV"}, {Result: volumeop.Result{Archive: "c"}}}}
	if a := <-b; a.err == nil || a.err.Error() != "helper on node node1 failed: create b: directory belongs to another PV" {
		t.Fatalf("b: %v, want its own failure", a.err)
	}
	bt.answered(c)
	pBusy.succeed()
	bt.answered(busy)
}

// TestBatchCallersGiveUp: an operation whose caller gave up while it waited is not run, and a pod
// whose callers all gave up is stopped.
func TestBatchCallersGiveUp(t *testing.T) {
	bt := newBatchTest(t, 64)
	first := bt.run(bt.ctx, "node1", volumeop.Create, "a")
	p1 := bt.pod("node1", "a")
	busy := bt.run(bt.ctx, "node1", volumeop.Create, "busy")
	pBusy := bt.pod("node1", "busy")
	gone, giveUp := context.WithCancel(bt.ctx)
	abandoned := bt.run(gone, "node1", volumeop.Create, "abandoned")
	kept := bt.run(bt.ctx, "node1", volumeop.Create, "kept")
	giveUp()
	if a := <-abandoned; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("abandoned: %v", a.err)
	}
	p1.succeed()
	bt.answered(first)
	bt.pod("node1", "kept").succeed()
	bt.answered(kept)
	pBusy.succeed()
	bt.answered(busy)

	gone, giveUp = context.WithCancel(bt.ctx)
	c := bt.run(gone, "node1", volumeop.Create, "d")
	p := bt.pod("node1", "d")
	giveUp()
	<-c
	<-p.ctx.Done()
	if !errors.Is(context.Cause(p.ctx), errCallersGone) {
		t.Fatalf("pod stopped by %v", context.Cause(p.ctx))
	}
}

// TestBatchGathers: a pod about to start takes the operations that arrived while it gathered.
func TestBatchGathers(t *testing.T) {
	bt := newBatchTest(t, 64)
	gate := make(chan struct{})
	bt.b.gather = func() { <-gate }
	var all []chan answer
	for _, pv := range []string{"a", "b", "c"} {
		all = append(all, bt.run(bt.ctx, "node1", volumeop.Create, pv))
	}
	gate <- struct{}{} // one of the lane's two goroutines starts its pod
	bt.pod("node1", "a,b,c").succeed()
	for _, c := range all {
		bt.answered(c)
	}
	gate <- struct{}{} // each goroutine gathers once more, finds nobody and ends
	gate <- struct{}{}
	bt.b.draining.Wait()
	if fmt.Sprint(bt.sizes) != "[3]" {
		t.Errorf("batch sizes %v, want [3]", bt.sizes)
	}
}
