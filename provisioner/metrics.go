package provisioner

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the provisioner's: its operations on volume directories.
type Metrics struct {
	// Operations counts operations on volume directories by backend, operation and result.
	Operations *prometheus.CounterVec
	// Duration observes how long those operations took, helper pods included.
	Duration *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dirpv", Name: "volume_operations_total",
			Help: "Operations on volume directories by backend, operation and result.",
		}, []string{"backend", "operation", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "dirpv", Name: "volume_operation_duration_seconds",
			Help:    "Duration of operations on volume directories, helper pods included.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120},
		}, []string{"backend", "operation"}),
	}
	reg.MustRegister(m.Operations, m.Duration)
	return m
}
