package capacity

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a Publisher's: its writes, and how many objects it keeps.
type Metrics struct {
	// Writes counts the objects created, updated and deleted, by verb: with nothing changing,
	// it stays still.
	Writes *prometheus.CounterVec
	// Objects is how many objects of ours the cache held after the last sync.
	Objects prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg, unless reg is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dirpv", Name: "capacity_writes_total",
			Help: "CSIStorageCapacity objects created, updated and deleted, by verb.",
		}, []string{"verb"}),
		Objects: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dirpv", Name: "capacity_objects",
			Help: "CSIStorageCapacity objects published, as of the last sync of a node.",
		}),
	}
	// Every verb has a series from the start, so that a rate over it is defined.
	for _, verb := range []string{"create", "update", "delete"} {
		m.Writes.WithLabelValues(verb)
	}
	if reg != nil {
		reg.MustRegister(m.Writes, m.Objects)
	}
	return m
}
