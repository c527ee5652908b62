package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/controllers"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHandler(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	reg := newRegistry()
	lib, own := controllers.NewMetrics(reg).Library, provisioner.NewMetrics(reg)
	opts := &config.Options{Name: config.DefaultName, LeaderElectNamespace: "dirpv", LeaderElect: true,
		LeaseDuration: 15 * time.Minute, RenewDeadline: 10 * time.Minute, RetryPeriod: 5 * time.Minute} // no renewal during the test, however slow
	e := newElector(opts, fake.NewClientset(), record.NewFakeRecorder(10))
	var blocked atomic.Pointer[error] // what the NFS backend's Stalls.Err would say
	srv := httptest.NewServer(handler(reg, e, func() error {
		if p := blocked.Load(); p != nil {
			return *p
		}
		return nil
	}, false))
	defer srv.Close()

	if code, body := get(t, srv, "/readyz"); code != 200 || body != "ok: standby\n" {
		t.Errorf("/readyz before leading: %d %q", code, body)
	}
	ctx, cancel := context.WithCancel(ctx)
	leading := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.run(ctx, func(ctx context.Context) { close(leading); <-ctx.Done() })
	}()
	<-leading
	if code, body := get(t, srv, "/readyz"); code != 200 || body != "ok: leader\n" {
		t.Errorf("/readyz while leading: %d %q", code, body)
	}
	if code, body := get(t, srv, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	// A hung NFS export makes the leader not ready, naming it; it stays live.
	hung := errors.New("operations blocked: NFS export srv:/data: delete ns-data has been blocked for 3m0s past its deadline")
	blocked.Store(&hung)
	if code, body := get(t, srv, "/readyz"); code != 503 || !strings.Contains(body, "NFS export srv:/data") {
		t.Errorf("/readyz with a hung export: %d %q", code, body)
	}
	if code, _ := get(t, srv, "/healthz"); code != 200 {
		t.Errorf("/healthz with a hung export: %d", code)
	}
	blocked.Store(nil)
	// A leader whose renewals stopped must fail its liveness probe.
	e.lock.last.Store(time.Now().Add(-time.Hour).UnixNano())
	if code, body := get(t, srv, "/healthz"); code != 500 || !strings.Contains(body, "last renewed") {
		t.Errorf("/healthz with a stale Lease: %d %q", code, body)
	}
	lib.PersistentVolumeDeleteTotal.WithLabelValues("dirpv-hostpath").Inc()
	own.Operations.WithLabelValues("hostPath", "create", "success").Inc()
	_, body := get(t, srv, "/metrics")
	for _, want := range []string{
		`controller_persistentvolume_delete_total{class="dirpv-hostpath"} 1`,
		`dirpv_volume_operations_total{backend="hostPath",operation="create",result="success"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel()
	<-done
}

// TestProfiling: /debug/pprof/ is there with --profiling only.
func TestProfiling(t *testing.T) {
	reg := newRegistry()
	e := newElector(&config.Options{Name: config.DefaultName, LeaderElectNamespace: "dirpv"}, fake.NewClientset(), record.NewFakeRecorder(10))
	for _, on := range []bool{false, true} {
		srv := httptest.NewServer(handler(reg, e, func() error { return nil }, on))
		code, body := get(t, srv, "/debug/pprof/")
		srv.Close()
		if on && (code != 200 || !strings.Contains(body, "goroutine")) || !on && code != 404 {
			t.Errorf("profiling %v: /debug/pprof/ answered %d %.60q", on, code, body)
		}
	}
}
