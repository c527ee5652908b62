// Package e2e holds dirpv's end-to-end suite (build tag e2e). It runs against a real cluster
// (hack/cluster-up.sh), installs dirpv with `kubectl apply -k` of the real manifests through the
// overlays in testdata/, and checks what users see: claims bound, pods reading their data, and
// directories made, archived and removed on the node and the export.
//
//	make e2e     # brings a cluster up, runs the suite, tears the cluster down
package e2e
