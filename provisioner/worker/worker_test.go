package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/cache"
)

// TestRun checks that every key is handled, that a failed one comes back until it succeeds and
// is then forgotten, and that Run returns when its context ends.
func TestRun(t *testing.T) {
	q := NewQueue("test")
	q.Add("a")
	q.Add("b")
	var mu sync.Mutex
	calls := map[string]int{}
	handled := make(chan string, 10)
	handle := func(_ context.Context, key string) error {
		mu.Lock()
		calls[key]++
		n := calls[key]
		mu.Unlock()
		if key == "a" && n == 1 {
			return errors.New("first try fails")
		}
		handled <- key
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, "test", "key", q, 2, []cache.InformerSynced{func() bool { return true }}, handle)
	}()
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case key := <-handled:
			seen[key] = true
		case <-time.After(time.Minute):
			t.Fatalf("handled %v in a minute; want a and b", seen)
		}
	}
	cancel()
	<-done
	if calls["a"] != 2 || calls["b"] != 1 {
		t.Errorf("calls = %v; want a twice (a retry) and b once", calls)
	}
	if n := q.NumRequeues("a"); n != 0 {
		t.Errorf("a was not forgotten after it succeeded: %d requeues", n)
	}
	if !q.ShuttingDown() {
		t.Error("the queue was not shut down")
	}
}
