package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// serve answers /healthz, /readyz and /metrics on addr until ctx ends.
func serve(ctx context.Context, addr string, reg *prometheus.Registry, e *elector, blocked func() error, profiling bool) error {
	srv := &http.Server{Addr: addr, Handler: handler(reg, e, blocked, profiling), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.FromContext(ctx).Info("Serving health and metrics", "address", addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handler serves the probes and metrics: /healthz fails when this replica leads but has not
// renewed its Lease in time; /readyz tells whether it leads or stands by, and fails while
// blocked reports operations stuck on a hung NFS export (a restart would not cure that, so it
// is not a liveness failure). With profiling, /debug/pprof/ serves Go's profiles.
func handler(reg *prometheus.Registry, e *elector, blocked func() error, profiling bool) http.Handler {
	mux := http.NewServeMux()
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := e.healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := blocked(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		role := "standby"
		if e.isLeader() {
			role = "leader"
		}
		_, _ = w.Write([]byte("ok: " + role + "\n"))
	})
	return mux
}

func metaName(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}
