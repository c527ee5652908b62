// Package e2e holds dirpv's end-to-end suite (build tag e2e). It runs against a real cluster
// (hack/cluster-up.sh), installs dirpv with `kubectl apply -k` of the real manifests through the
// overlays in testdata/, and checks what users see: claims bound, pods reading their data, and
// directories made, archived and removed on the node and the export.
//
// It expects two nodes (make e2e brings them up; hack/node-up.sh): node1 is this machine,
// node2 has a /var/lib of its own ($DIRPV_CLUSTER_DIR/nodes/node2/root/var/lib), so a volume
// is checked on the node it must be on and not on the other (nodes_test.go); the multi-node
// cases skip on a single node. The NFS export is /srv/dirpv-nfs/export, which nfs-ganesha
// serves at 10.0.0.1 (hack/nfs-server.sh); dirpv is given its backing directory (mount mode),
// which both nodes share.
//
// The last cases are about faults and confinement (rbac_test.go, faults*_test.go): dirpv's
// service account may do exactly what manifests/base/rbac.yaml grants; helper pods mount only
// what their work needs; a full disk fails a claim cleanly and recovers; kube-apiserver stopped
// for 30 s during a burst of claims; and bursts of 200 creations, deletions and recycles while
// the leader is SIGKILLed 10 times each. The suite runs as root on the node's host inside the
// cluster's network namespace, which these cases rely on: they read the export and the node's
// directories, mount a tmpfs, find the leader's process through /proc and signal it, and restart
// kube-apiserver from $DIRPV_CLUSTER_DIR. Each prints its figures on one line starting with
// "reliability:".
//
//	make e2e     # brings a cluster up, runs the suite, tears the cluster down
//	go test -tags e2e -run 'TestE2E/Faults/LeaderKills' ./e2e/   # one case, on a running cluster
package e2e
