package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"dirpv.io/dirpv/provisioner/config"
)

// elector runs the controller only while this replica holds the Lease. Unlike the library's own
// election it releases the Lease on shutdown, so a rolling update hands over within a retry period,
// and losing the Lease stops the controller and rejoins the election instead of exiting.
type elector struct {
	config  leaderelection.LeaderElectionConfig
	lock    *renewClock
	leading atomic.Bool
	// stale is how long a leader may go without renewing before /healthz fails.
	stale time.Duration
	// elect is false with --leader-elect=false: the one replica always runs the controller.
	elect bool
}

// renewClock records when this replica last wrote the Lease. The health check reads it instead of
// client-go's HealthzAdaptor, whose Check reads the elector's observed time without its lock and
// races with renewals.
type renewClock struct {
	resourcelock.Interface
	last atomic.Int64 // UnixNano of the last successful create or update
}

func (c *renewClock) Create(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	err := c.Interface.Create(ctx, rec)
	if err == nil {
		c.last.Store(time.Now().UnixNano())
	}
	return err
}

func (c *renewClock) Update(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	err := c.Interface.Update(ctx, rec)
	if err == nil {
		c.last.Store(time.Now().UnixNano())
	}
	return err
}

func (c *renewClock) since() time.Duration { return time.Since(time.Unix(0, c.last.Load())) }

func newElector(opts *config.Options, client kubernetes.Interface, recorder record.EventRecorder) *elector {
	id := opts.PodName
	if id == "" {
		id, _ = os.Hostname()
	}
	id += "_" + string(uuid.NewUUID())
	lock := &renewClock{Interface: &resourcelock.LeaseLock{
		LeaseMeta:  metaName(strings.ReplaceAll(opts.Name, "/", "-"), opts.LeaderElectNamespace),
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id, EventRecorder: recorder},
	}}
	return &elector{
		lock:  lock,
		stale: opts.LeaseDuration + opts.RenewDeadline,
		elect: opts.LeaderElect,
		config: leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   opts.LeaseDuration,
			RenewDeadline:   opts.RenewDeadline,
			RetryPeriod:     opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            opts.Name,
		},
	}
}

// run campaigns until ctx ends, running work for each term it wins. work runs on this goroutine
// and returns before the next campaign, so two terms of this replica never overlap.
func (e *elector) run(ctx context.Context, work func(context.Context)) error {
	logger := klog.FromContext(ctx)
	for ctx.Err() == nil {
		term := make(chan context.Context, 1)
		cfg := e.config
		cfg.Callbacks = leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { term <- ctx },
			OnStoppedLeading: func() { e.leading.Store(false) },
			OnNewLeader:      func(id string) { logger.Info("Leader elected", "identity", id) },
		}
		le, err := leaderelection.NewLeaderElector(cfg)
		if err != nil {
			return err
		}
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			le.Run(ctx)
		}()
		select {
		case termCtx := <-term:
			e.leading.Store(true)
			logger.Info("Leading: provisioning started")
			work(termCtx)
			<-ended
		case <-ended: // ctx ended before this replica won
		}
		if ctx.Err() == nil {
			logger.Info("Lost the Lease: provisioning stopped, campaigning again")
		}
	}
	return nil
}

// healthy fails when this replica believes it leads but has not renewed its Lease for longer than
// the lease duration plus the renew deadline: its renew loop is stuck and a restart is the cure.
func (e *elector) healthy() error {
	if !e.leading.Load() {
		return nil
	}
	if d := e.lock.since(); d > e.stale {
		return fmt.Errorf("leading but the Lease was last renewed %s ago", d.Round(time.Second))
	}
	return nil
}

// fence fails unless this replica leads and has renewed its Lease within the renew deadline.
// Past that another replica may take the Lease as soon as the lease duration has run out, so
// work that must never overlap a new leader's (calls to NFS servers with access: direct) stops
// here, also in a process that was paused and has not yet noticed that it lost the Lease. The
// difference between the two durations (5 s by default) is the time a call sent just before the
// fence closed has to reach its server before a new leader can start.
func (e *elector) fence() error {
	if !e.leading.Load() {
		return errors.New("not the leader")
	}
	if d := e.lock.since(); d >= e.config.RenewDeadline {
		return fmt.Errorf("the Lease was last renewed %s ago, past the renew deadline %s: another replica may lead", d.Round(time.Millisecond), e.config.RenewDeadline)
	}
	return nil
}

// isLeader reports whether this replica currently runs the controller.
func (e *elector) isLeader() bool { return !e.elect || e.leading.Load() }

// gauge is dirpv_leader: 1 while this replica runs the controller with a Lease it keeps renewing,
// so that "no leader" is one query and not a guess from the replicas' writes. A leader whose
// renewals stalled reads 0, as /healthz fails for it.
func (e *elector) gauge() prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "leader",
		Help: "1 while this replica runs the controllers (holds and renews the Lease, or leader election is off), 0 on a standby.",
	}, func() float64 {
		if e.isLeader() && e.healthy() == nil {
			return 1
		}
		return 0
	})
}
