// Package worker runs a controller's workers over its queue of keys: dirpv's own controllers
// (recycle, resize) share it.
package worker

import (
	"context"
	"sync"
	"time"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Queue is a controller's queue of object keys.
type Queue = workqueue.TypedRateLimitingInterface[string]

// NewQueue returns a queue called name whose failed keys come back with backoff, from a second
// up to five minutes.
func NewQueue(name string) Queue {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name})
}

// Run waits for synced, then has workers goroutines take keys from queue and pass each to handle
// until ctx ends; a key that handle fails is logged (kind names what it is, e.g. "PV") and goes
// back with backoff. Run returns once every worker has finished its current key.
func Run(ctx context.Context, name, kind string, queue Queue, workers int, synced []cache.InformerSynced,
	handle func(ctx context.Context, key string) error) {
	defer utilruntime.HandleCrash()
	logger := klog.FromContext(ctx).WithValues("controller", name)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		queue.ShutDown()
		return
	}
	logger.Info("Controller started")
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next(ctx, logger, kind, queue, handle) {
			}
		})
	}
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
}

func next(ctx context.Context, logger klog.Logger, kind string, queue Queue, handle func(context.Context, string) error) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	if err := handle(ctx, key); err != nil {
		logger.Error(err, "Retrying with backoff", kind, key)
		queue.AddRateLimited(key)
		return true
	}
	queue.Forget(key)
	return true
}
