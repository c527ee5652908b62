package volumeop

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Stalls runs local operations as RunLocal does and remembers those still running after their
// deadline: a filesystem call blocked on a hung NFS server cannot be cancelled, only waited out.
// While one still runs under a name (an export), new operations there fail at once instead of
// piling up blocked goroutines behind it, and Err reports it, for dirpv's /readyz. It clears
// itself when the blocked call returns. The zero value is ready to use.
type Stalls struct {
	mu      sync.Mutex
	stalled map[string]*stall
	now     func() time.Time // for tests; time.Now if nil
}

type stall struct {
	first string    // the first operation that stalled, e.g. "delete ns-data"
	since time.Time // when its deadline passed
	count int       // operations still blocked
}

// RunLocal performs op in dir (see RunLocal), refusing at once while an earlier operation
// under name is still blocked.
func (s *Stalls) RunLocal(ctx context.Context, name, dir string, op Op) (Result, error) {
	return s.run(ctx, name, dir, op, func() (Result, error) { return runIn(dir, op) })
}

func (s *Stalls) run(ctx context.Context, name, dir string, op Op, run func() (Result, error)) (Result, error) {
	if err := s.check(name); err != nil {
		return Result{}, err
	}
	return runLocal(ctx, dir, op, run, func() func() { return s.add(name, string(op.Kind)+" "+op.Path) })
}

func (s *Stalls) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// add records a blocked operation under name and returns the function that forgets it.
func (s *Stalls) add(name, what string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled == nil {
		s.stalled = map[string]*stall{}
	}
	st := s.stalled[name]
	if st == nil {
		st = &stall{first: what, since: s.clock()}
		s.stalled[name] = st
	}
	st.count++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if st.count--; st.count == 0 {
			delete(s.stalled, name)
		}
	}
}

func (s *Stalls) describe(name string, st *stall) string {
	return fmt.Sprintf("%s: %s has been blocked for %s past its deadline", name, st.first, s.clock().Sub(st.since).Round(time.Second))
}

// check fails while an operation under name is blocked.
func (s *Stalls) check(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stalled[name]; st != nil {
		return fmt.Errorf("%s; not starting another operation there until it returns (is the NFS server answering?)", s.describe(name, st))
	}
	return nil
}

// Err describes every name with a blocked operation, or returns nil.
func (s *Stalls) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stalled) == 0 {
		return nil
	}
	var msgs []string
	for name, st := range s.stalled {
		msgs = append(msgs, s.describe(name, st))
	}
	slices.Sort(msgs)
	return fmt.Errorf("operations blocked: %s", strings.Join(msgs, "; "))
}

// Count is the number of operations still blocked past their deadline.
func (s *Stalls) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.stalled {
		n += st.count
	}
	return n
}
