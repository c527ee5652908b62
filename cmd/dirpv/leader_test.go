package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner/config"
)

// TestElectorHandover: of two replicas exactly one works; when the leader shuts down it releases
// the Lease and the other takes over within a retry period, not a lease duration.
func TestElectorHandover(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset()
	opts := &config.Options{Name: config.DefaultName, LeaderElectNamespace: "dirpv", LeaderElect: true,
		LeaseDuration: 30 * time.Second, RenewDeadline: 20 * time.Second, RetryPeriod: 100 * time.Millisecond}

	var working atomic.Int32
	started := make(chan int, 2)
	var wg sync.WaitGroup
	cancels := make([]context.CancelFunc, 2)
	for i := range 2 {
		rctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		e := newElector(opts, client, record.NewFakeRecorder(100))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.run(rctx, func(ctx context.Context) {
				if n := working.Add(1); n != 1 {
					t.Errorf("%d replicas working at once", n)
				}
				started <- i
				<-ctx.Done()
				working.Add(-1)
			})
		}()
	}
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	})

	first := <-started
	select {
	case other := <-started:
		t.Fatalf("replica %d started while %d leads", other, first)
	case <-time.After(time.Second):
	}
	begin := time.Now()
	cancels[first]()
	select {
	case second := <-started:
		if second == first {
			t.Fatalf("replica %d led again after shutting down", second)
		}
		// Far below the 30 s lease: the Lease was released, not left to expire.
		if d := time.Since(begin); d > 10*time.Second {
			t.Errorf("handover took %v", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no handover within 20s of the leader's shutdown")
	}
}

// TestElectorFence: the fence is open only while this replica leads with a fresh Lease: a leader
// that has not renewed within the renew deadline (a paused process, say) sends nothing.
func TestElectorFence(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	opts := &config.Options{Name: config.DefaultName, LeaderElectNamespace: "dirpv", LeaderElect: true,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 100 * time.Millisecond}
	e := newElector(opts, fake.NewClientset(), record.NewFakeRecorder(100))
	if err := e.fence(); err == nil {
		t.Fatal("fence open before leading")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- e.run(ctx, func(ctx context.Context) {
			if err := e.fence(); err != nil {
				t.Errorf("fence closed while leading with a fresh Lease: %v", err)
			}
			// As if this process had been paused since its last renewal.
			e.lock.last.Store(time.Now().Add(-opts.RenewDeadline - time.Second).UnixNano())
			if err := e.fence(); err == nil {
				t.Error("fence open with a Lease last renewed past the renew deadline")
			}
			cancel()
		})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestElectorGauge: dirpv_leader reads 1 only while this replica leads with a Lease it renews,
// and always with leader election off.
func TestElectorGauge(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	opts := &config.Options{Name: config.DefaultName, LeaderElectNamespace: "dirpv", LeaderElect: true,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 100 * time.Millisecond}
	e := newElector(opts, fake.NewClientset(), record.NewFakeRecorder(100))
	gauge := e.gauge()
	if v := testutil.ToFloat64(gauge); v != 0 {
		t.Fatalf("dirpv_leader = %v before the election, want 0", v)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- e.run(ctx, func(ctx context.Context) {
			if v := testutil.ToFloat64(gauge); v != 1 {
				t.Errorf("dirpv_leader = %v while leading, want 1", v)
			}
			// As if the renew loop had hung: /healthz fails, and the gauge says no leader.
			e.lock.last.Store(time.Now().Add(-e.stale - time.Second).UnixNano())
			if v := testutil.ToFloat64(gauge); v != 0 {
				t.Errorf("dirpv_leader = %v with renewals stalled, want 0", v)
			}
			cancel()
		})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(gauge); v != 0 {
		t.Errorf("dirpv_leader = %v after the term, want 0", v)
	}

	opts.LeaderElect = false
	if v := testutil.ToFloat64(newElector(opts, fake.NewClientset(), record.NewFakeRecorder(100)).gauge()); v != 1 {
		t.Errorf("dirpv_leader = %v with leader election off, want 1", v)
	}
}
