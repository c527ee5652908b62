package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller/metrics"
)

// Metrics are the leader's controllers': the provisioner library's, and those of dirpv's
// recycle, resize and usage controllers. They are registered once, and every term sets them.
type Metrics struct {
	// Library is the provisioner library's (it would otherwise register them globally and
	// serve them on a port of its own).
	Library metrics.Metrics
	// Recycles counts recycled volumes and failed attempts.
	Recycles *prometheus.CounterVec
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
	lib := metrics.New("controller")
	reg.MustRegister(lib.PersistentVolumeClaimProvisionTotal, lib.PersistentVolumeClaimProvisionFailedTotal,
		lib.PersistentVolumeClaimProvisionDurationSeconds, lib.PersistentVolumeDeleteTotal,
		lib.PersistentVolumeDeleteFailedTotal, lib.PersistentVolumeDeleteDurationSeconds)
	m := &Metrics{Library: lib}
	m.Recycles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "dirpv", Name: "recycles_total",
		Help: "Released volumes scrubbed and made Available (success), or attempts that failed (error).",
	}, []string{"result"})
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
	reg.MustRegister(m.Recycles, m.Resizes, m.VolumeCapacity, m.VolumeUsed, m.UsageErrors, m.CapacityEnforceable)
	return m
}

// recycleResult counts one recycle outcome.
func (m *Metrics) recycleResult(result string) { m.Recycles.WithLabelValues(result).Inc() }

// resizeResult counts one resize outcome.
func (m *Metrics) resizeResult(result string) { m.Resizes.WithLabelValues(result).Inc() }
