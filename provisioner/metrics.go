package provisioner

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are dirpv's own metrics, beside the provisioner library's.
type Metrics struct {
	// Operations counts operations on volume directories by backend, operation and result.
	Operations *prometheus.CounterVec
	// Duration observes how long those operations took, helper pods included.
	Duration *prometheus.HistogramVec
	// Recycles counts recycled volumes and failed attempts.
	Recycles *prometheus.CounterVec
	// HelperBatch observes how many operations each helper pod ran.
	HelperBatch prometheus.Histogram
	// HelperOutcomes counts the helper pods whose outcomes were read, by where from: the
	// container's "log" or the pod's "status".
	HelperOutcomes *prometheus.CounterVec
	// Resizes counts resized volumes and failed attempts.
	Resizes *prometheus.CounterVec
	// VolumeCapacity and VolumeUsed are the size and usage of each bound volume whose capacity
	// is enforced, labelled VolumeLabels; the usage collector sets them. UsageErrors counts the
	// reads of a volume's usage that failed.
	VolumeCapacity *prometheus.GaugeVec
	VolumeUsed     *prometheus.GaugeVec
	UsageErrors    prometheus.Counter
	// CapacityEnforceable is 1 for each class with capacity: enforce and node where sizes are
	// enforced, 0 where they cannot be (the leader's log says why).
	CapacityEnforceable *prometheus.GaugeVec
}

// VolumeLabels label VolumeCapacity and VolumeUsed, in this order: the claim's namespace and
// name, and the PV's name (as the kubelet's kubelet_volume_stats_* name them).
var VolumeLabels = []string{"namespace", "persistentvolumeclaim", "persistentvolume"}

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
	m.Recycles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "recycles_total",
		Help: "Released volumes scrubbed and made Available (success), or attempts that failed (error).",
	}, []string{"result"})
	m.HelperBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "dirpv", Name: "helper_pod_operations",
		Help:    "Operations in each batch run in a helper pod of its own or in an agent (its count is the batches).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
	})
	m.HelperOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "helper_pod_outcomes_total",
		Help: "Helper pods whose outcomes were read, from the container's log (before the kubelet posted the pod's end) or from the pod's status.",
	}, []string{"from"})
	m.Resizes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "resizes_total",
		Help: "Claims whose volume was resized (success), or attempts that failed or were refused (error).",
	}, []string{"result"})
	m.VolumeCapacity = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "volume_capacity_bytes",
		Help: "Size of each bound volume whose capacity is enforced: the limit its filesystem holds it to (its PV's capacity if the filesystem reports none), read every --usage-interval.",
	}, VolumeLabels)
	m.VolumeUsed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "volume_used_bytes",
		Help: "Bytes each bound volume whose capacity is enforced holds, as its btrfs qgroup or project quota counts them, read every --usage-interval.",
	}, VolumeLabels)
	m.UsageErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "volume_usage_errors_total",
		Help: "Reads of an enforced volume's usage that failed; the volume has no dirpv_volume_used_bytes or dirpv_volume_capacity_bytes until a read succeeds.",
	})
	m.CapacityEnforceable = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "dirpv", Name: "capacity_enforceable",
		Help: "1 for each StorageClass with capacity: enforce and node where the filesystem of its basePath enforces sizes, 0 where it cannot (the leader's log says what it needs); probed at the start of each term, and again while it fails (after a minute, doubling up to 30 minutes).",
	}, []string{"storageclass", "node"})
	reg.MustRegister(m.Operations, m.Duration, m.Recycles, m.HelperBatch, m.HelperOutcomes, m.Resizes, m.VolumeCapacity, m.VolumeUsed, m.UsageErrors,
		m.CapacityEnforceable)
	return m
}

// HelperPod observes one helper pod's number of operations.
func (m *Metrics) HelperPod(ops int) { m.HelperBatch.Observe(float64(ops)) }

// HelperOutcome counts one helper pod's outcomes read from (log or status).
func (m *Metrics) HelperOutcome(from string) { m.HelperOutcomes.WithLabelValues(from).Inc() }

// RecycleResult counts one recycle outcome.
func (m *Metrics) RecycleResult(result string) { m.Recycles.WithLabelValues(result).Inc() }

// ResizeResult counts one resize outcome.
func (m *Metrics) ResizeResult(result string) { m.Resizes.WithLabelValues(result).Inc() }
