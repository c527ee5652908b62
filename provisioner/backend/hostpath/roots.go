package hostpath

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/quota"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// want is what a volume needs of a root: a class's, and bytes of room.
type want struct {
	class *config.Class
	c     Class
	bytes uint64
}

// requested is the bytes a claim asks for; 0 for none.
func requested(claim *v1.PersistentVolumeClaim) uint64 {
	if claim == nil {
		return 0
	}
	q := claim.Spec.Resources.Requests[v1.ResourceStorage]
	if q.Sign() <= 0 {
		return 0
	}
	return uint64(q.Value())
}

// measure is one root measured on a node: its room, or why it cannot take volumes there.
type measure struct {
	root   string
	room   uint64
	device uint64
	err    error
}

// measure measures each root of w's class on node, at once: the node's runner takes them in
// one batch.
func (b *Backend) measure(ctx context.Context, node string, w want) []measure {
	ctx, cancel := context.WithTimeoutCause(ctx, b.Timeout, fmt.Errorf("measuring the roots on node %s took longer than %v", node, b.Timeout))
	defer cancel()
	enforce := w.class.Capacity == config.CapacityEnforce
	out := make([]measure, len(w.c.BasePaths))
	var wg sync.WaitGroup
	for i, root := range w.c.BasePaths {
		out[i].root = root
		rel, err := b.base(root)
		if err != nil {
			out[i].err = err
			continue
		}
		op := volumeop.Op{Kind: volumeop.Room, Path: rel, Limited: enforce, MustExist: w.c.measured(), MustMount: w.c.RequireMount}
		if enforce {
			op.Overcommit = w.class.Overcommit
		}
		wg.Go(func() {
			res, err := b.Node.Run(ctx, node, b.Root, op)
			out[i].room, out[i].device, out[i].err = res.Room, res.Device, err
		})
	}
	wg.Wait()
	return out
}

// chooseRoot picks among measured roots the one w's policy prefers of those with room for it;
// the class's order breaks ties. None: an error matching quota.ErrNoRoom that says why of each.
func (b *Backend) chooseRoot(ms []measure, w want) (measure, error) {
	best := -1
	for i, m := range ms {
		if m.err != nil || m.room < w.bytes {
			continue
		}
		if best < 0 || (w.c.RootPolicy == LeastRoom && m.room < ms[best].room) || (w.c.RootPolicy != LeastRoom && m.room > ms[best].room) {
			best = i
		}
	}
	if best >= 0 {
		return ms[best], nil
	}
	what := "free"
	if w.class.Capacity == config.CapacityEnforce {
		what = "not yet promised to volumes"
	}
	why := make([]string, len(ms))
	for i, m := range ms {
		if m.err != nil {
			why[i] = fmt.Sprintf("%s: %v", m.root, m.err)
		} else {
			why[i] = fmt.Sprintf("%s: %s %s", m.root, bytesOf(m.room), what)
		}
	}
	usable := slices.ContainsFunc(ms, func(m measure) bool { return m.err == nil })
	msg := fmt.Sprintf("no root of the class can take %s (%s)", bytesOf(w.bytes), strings.Join(why, "; "))
	if !usable {
		msg = fmt.Sprintf("no root of the class is usable here (%s)", strings.Join(why, "; "))
	}
	return measure{}, &noRoomError{msg}
}

// noRoomError says why no root of a node can take a volume; it matches quota.ErrNoRoom, so
// that the claim goes back to the scheduler.
type noRoomError struct{ msg string }

func (e *noRoomError) Error() string        { return e.msg }
func (e *noRoomError) Is(target error) bool { return target == quota.ErrNoRoom }

// bytesOf writes n bytes for messages.
func bytesOf(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.4g %ciB", v, "KMGTPE"[i])
}

// Room implements the capacity dirpv publishes for a hostPath class on node: the room of its
// usable roots there, each filesystem counted once, and the largest volume one of them can take.
// A node with no usable root has none. A class of one root that need not be a mount is measured
// where its first volume would make it.
func (b *Backend) Room(ctx context.Context, class *config.Class, node *v1.Node) (total, largest uint64, err error) {
	c, ok := class.Params.(Class)
	if !ok {
		return 0, 0, fmt.Errorf("not a hostPath class: %T", class.Params)
	}
	ms := b.measure(ctx, node.Name, want{class: class, c: c})
	seen := map[uint64]bool{}
	var errs []error
	for _, m := range ms {
		if m.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.root, m.err))
			continue
		}
		largest = max(largest, m.room)
		if !seen[m.device] {
			seen[m.device] = true
			total = sumRoom(total, m.room)
		}
	}
	if len(errs) == len(ms) && !c.measured() {
		// Not a root found unusable, but one that could not be measured: keep what was known.
		return 0, 0, errors.Join(errs...)
	}
	return total, largest, nil
}

// sumRoom adds up rooms, holding at 2^64-1 rather than wrapping.
func sumRoom(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// candidate is a node measured for a volume of Immediate binding.
type candidate struct {
	node *v1.Node
	best measure
	err  error
}

// maxNodesMeasured bounds how many nodes are measured at once for one Immediate claim.
const maxNodesMeasured = 16

// chooseNode picks, for a claim of an Immediate class, the node whose best root has the most
// room for it, among the Ready nodes that take pods (no NoSchedule or NoExecute taint, not
// cordoned) and that the class's allowedTopologies allow; ties go to the node whose name sorts
// first. The claim's pod then follows the volume to that node, whatever else it asks for.
func (b *Backend) chooseNode(ctx context.Context, sc *storagev1.StorageClass, w want) (*v1.Node, string, error) {
	nodes, err := b.nodes(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("listing nodes for a claim of Immediate binding: %w", err)
	}
	nodes = slices.DeleteFunc(nodes, func(n *v1.Node) bool { return !takesPods(n) || !allowed(sc.AllowedTopologies, n) })
	if len(nodes) == 0 {
		return nil, "", fmt.Errorf("StorageClass %s: no Ready, schedulable node matches its allowedTopologies", sc.Name)
	}
	slices.SortFunc(nodes, func(a, b *v1.Node) int { return cmp.Compare(a.Name, b.Name) })
	cands := make([]candidate, len(nodes))
	limit := make(chan struct{}, maxNodesMeasured)
	var wg sync.WaitGroup
	for i, n := range nodes {
		cands[i].node = n
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			cands[i].best, cands[i].err = b.chooseRoot(b.measure(ctx, n.Name, w), w)
		})
	}
	wg.Wait()
	best := -1
	for i, c := range cands {
		if c.err == nil && (best < 0 || c.best.room > cands[best].best.room) {
			best = i
		}
	}
	if best < 0 {
		var why []string
		for _, c := range cands[:min(len(cands), 5)] {
			why = append(why, fmt.Sprintf("node %s: %v", c.node.Name, c.err))
		}
		if len(cands) > 5 {
			why = append(why, fmt.Sprintf("and %d more nodes", len(cands)-5))
		}
		return nil, "", fmt.Errorf("no node can take the volume: %s", strings.Join(why, "; "))
	}
	return cands[best].node, cands[best].best.root, nil
}

// nodes lists the cluster's nodes, from the cache if there is one.
func (b *Backend) nodes(ctx context.Context) ([]*v1.Node, error) {
	if b.Nodes != nil {
		return b.Nodes.List(labels.Everything())
	}
	list, err := b.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	nodes := make([]*v1.Node, len(list.Items))
	for i := range list.Items {
		nodes[i] = &list.Items[i]
	}
	return nodes, nil
}

// takesPods reports whether the scheduler would place a pod without tolerations on node.
func takesPods(node *v1.Node) bool {
	if node.Spec.Unschedulable || node.DeletionTimestamp != nil {
		return false
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == v1.TaintEffectNoSchedule || t.Effect == v1.TaintEffectNoExecute {
			return false
		}
	}
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// allowed reports whether node lies in the topologies a class allows: any of its terms, each
// label of a term having one of its values; no terms: every node.
func allowed(terms []v1.TopologySelectorTerm, node *v1.Node) bool {
	if len(terms) == 0 {
		return true
	}
	return slices.ContainsFunc(terms, func(t v1.TopologySelectorTerm) bool {
		for _, r := range t.MatchLabelExpressions {
			v, ok := node.Labels[r.Key]
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		}
		return true
	})
}
