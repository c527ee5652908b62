// Package usage publishes what dirpv's volumes hold, and their sizes, as the gauges
// dirpv_volume_used_bytes and dirpv_volume_capacity_bytes, labelled namespace,
// persistentvolumeclaim and persistentvolume.
//
// Only volumes whose capacity is enforced have them: the btrfs qgroup or the project quota that
// holds such a volume to its size also counts what it holds, so reading it is one call on the
// node, whatever the volume holds. A volume whose size is a label (capacity: label, and every nfs
// volume) has no such counter, and adding up its tree would cost time and I/O that grow with
// its contents: it gets no series.
//
// A Collector runs on the leader. Every interval it lists dirpv's bound, enforced PVs from the
// shared informer's cache and reads each one's usage through the provisioner (a usage operation
// in a helper pod on the volume's node, or in-process with --local-root), a bounded number at a
// time; a node's reads then share few helper pods.
//
// With WithProbes it also checks, before its reads, that each class of dirpv's with capacity:
// enforce can enforce sizes on each node (a probe operation of the class's base directory): at
// the start of each term, and again while a probe fails (after a minute, doubling up to 30). The
// outcome is the gauge dirpv_capacity_enforceable and, when it changes, a line in the leader's
// log saying what the filesystem needs.
package usage
