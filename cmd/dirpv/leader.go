package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

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
	config   leaderelection.LeaderElectionConfig
	watchdog *leaderelection.HealthzAdaptor
	leading  atomic.Bool
}

func newElector(opts *config.Options, client kubernetes.Interface, recorder record.EventRecorder) *elector {
	id := opts.PodName
	if id == "" {
		id, _ = os.Hostname()
	}
	id += "_" + string(uuid.NewUUID())
	e := &elector{watchdog: leaderelection.NewLeaderHealthzAdaptor(opts.RenewDeadline)}
	e.config = leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metaName(strings.ReplaceAll(opts.Name, "/", "-"), opts.LeaderElectNamespace),
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id, EventRecorder: recorder},
		},
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.RenewDeadline,
		RetryPeriod:     opts.RetryPeriod,
		ReleaseOnCancel: true,
		WatchDog:        e.watchdog,
		Name:            opts.Name,
	}
	return e
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
		e.watchdog.SetLeaderElection(le)
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

// healthy fails when this replica believes it leads but has not renewed its Lease in time.
func (e *elector) healthy(r *http.Request) error { return e.watchdog.Check(r) }

// isLeader reports whether this replica currently runs the controller.
func (e *elector) isLeader() bool { return e.leading.Load() }
