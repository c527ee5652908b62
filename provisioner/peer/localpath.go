package peer

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
)

// What local-path-provisioner (LPP) reads of its StorageClasses, its claims and its PVs, as its
// provisioner.go (v0.0.37) reads them.
const (
	// Class parameters.
	ParamLPPNodePath        = "nodePath"
	ParamLPPPathPattern     = "pathPattern"
	ParamLPPAllowUnsafePath = "allowUnsafePathPattern"
	ParamLPPNodeAffinityKey = "nodeAffinityKey"
	// Class annotation: the PVs' source, "hostPath" (its default) or "local".
	AnnLPPDefaultVolumeType = "defaultVolumeType"
	// Claim annotation: the PV's source for that claim, over the class's.
	AnnLPPVolumeType = "volumeType"
	// PV annotation: the name of the node the volume was made on.
	AnnLPPSelectedNode = "local.path.provisioner/selected-node"
	// lppDefaultPattern is LPP's directory name, "<PV name>_<namespace>_<claim name>", in
	// dirpv's template syntax.
	lppDefaultPattern = "{{.PV.Name}}_{{.PVC.Namespace}}_{{.PVC.Name}}"
)

// lppOwnerParams are LPP's parameters (and class annotations) that only its setup script reads:
// dirpv runs none.
var lppOwnerParams = []string{"userPattern", "groupPattern", "permPattern"}

// lppPVName is LPP's pathPattern variable for the PV's name; its .PVC is the claim's
// ObjectMeta, whose .Namespace, .Name, .Labels and .Annotations dirpv's templates read alike.
var lppPVName = regexp.MustCompile(`\.PVName\b`)

// localPathClassParams are the dirpv parameters of an LPP StorageClass sc for a volume of
// target: a hostPath class whose roots are the paths LPP's config gives the node (or the class's
// nodePath among them), with LPP's directory names, source and reclaim (delete).
func localPathClassParams(sc *storagev1.StorageClass, a config.Adoption, target Target) (map[string]string, error) {
	var errs []error
	known := []string{ParamLPPNodePath, ParamLPPPathPattern, ParamLPPAllowUnsafePath, ParamLPPNodeAffinityKey}
	for key := range sc.Parameters {
		switch {
		case slices.Contains(known, key):
		case slices.Contains(lppOwnerParams, key):
			errs = append(errs, fmt.Errorf("parameter %q: only %s's setup script reads it, and dirpv runs none (set the class's owner with dirpv's uid, gid and mode instead)", key, a.Peer))
		default:
			errs = append(errs, fmt.Errorf("parameter %q: unknown to %s (it takes %s)", key, a.Peer, strings.Join(known, ", ")))
		}
	}
	for _, key := range lppOwnerParams {
		if _, ok := sc.Annotations[key]; ok {
			errs = append(errs, fmt.Errorf("annotation %q: only %s's setup script reads it, and dirpv runs none", key, a.Peer))
		}
	}
	if key := sc.Parameters[ParamLPPNodeAffinityKey]; key != "" && key != v1.LabelHostname {
		errs = append(errs, fmt.Errorf("parameter %q: dirpv pins volumes to their node by %s only, not %s", ParamLPPNodeAffinityKey, v1.LabelHostname, pathname.Quote(key)))
	}
	roots, err := a.LocalPath.Roots(sc.Name, target.Node)
	if err != nil {
		errs = append(errs, err)
	} else if p, ok := sc.Parameters[ParamLPPNodePath]; ok {
		if !slices.Contains(roots, p) {
			errs = append(errs, fmt.Errorf("parameter %q: %s is not one of the paths %s's config gives node %s (%s)", ParamLPPNodePath, pathname.Quote(p), a.Peer, target.Node, strings.Join(roots, ", ")))
		}
		roots = []string{p}
	}
	volumeType, err := lppVolumeType(sc, target.Claim)
	if err != nil {
		errs = append(errs, err)
	}
	pattern := lppDefaultPattern
	if p, ok := sc.Parameters[ParamLPPPathPattern]; ok {
		pattern = lppPVName.ReplaceAllString(p, ".PV.Name")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("StorageClass %s of %s: %w", sc.Name, a.Name, errors.Join(errs...))
	}
	return map[string]string{
		config.ParamBackend: hostpath.Name, hostpath.ParamBasePath: strings.Join(roots, ","), hostpath.ParamVolumeType: string(volumeType),
		config.ParamPathPattern: pattern, config.ParamOnDelete: string(config.OnDeleteDelete),
	}, nil
}

// lppVolumeType is the source LPP gives a claim's PV: the claim's volumeType annotation, else
// the class's defaultVolumeType annotation, else hostPath; LPP reads either in any case.
func lppVolumeType(sc *storagev1.StorageClass, claim *v1.PersistentVolumeClaim) (hostpath.VolumeType, error) {
	v, from := sc.Annotations[AnnLPPDefaultVolumeType], "StorageClass annotation "+AnnLPPDefaultVolumeType
	if claim != nil {
		if c, ok := claim.Annotations[AnnLPPVolumeType]; ok {
			v, from = c, "claim annotation "+AnnLPPVolumeType
		}
	}
	switch strings.ToLower(v) {
	case "", "hostpath":
		return hostpath.VolumeTypeHostPath, nil
	case "local":
		return hostpath.VolumeTypeLocal, nil
	}
	return "", fmt.Errorf("%s: %s is not hostPath or local", from, pathname.Quote(v))
}

// localPathNode is the node an LPP PV is pinned to: the name its annotation records (the node's
// name), and the value its node affinity selects (the node's kubernetes.io/hostname). An older
// PV without the annotation names its node by the affinity alone.
func localPathNode(pv *v1.PersistentVolume) (node, hostname string, err error) {
	na := pv.Spec.NodeAffinity
	if na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) != 1 {
		return "", "", errors.New("it is not pinned to one node (node affinity)")
	}
	exprs := na.Required.NodeSelectorTerms[0].MatchExpressions
	if len(exprs) != 1 || len(na.Required.NodeSelectorTerms[0].MatchFields) > 0 ||
		exprs[0].Key != v1.LabelHostname || exprs[0].Operator != v1.NodeSelectorOpIn || len(exprs[0].Values) != 1 {
		return "", "", fmt.Errorf("its node affinity is not %s In [one node]", v1.LabelHostname)
	}
	hostname = exprs[0].Values[0]
	node = pv.Annotations[AnnLPPSelectedNode]
	if node == "" {
		node = hostname
	}
	return node, hostname, nil
}

// localPathRecord derives dirpv's record of pv, a PV LPP made for a claim of found.Class: a
// hostPath or local source pinned to one node, a directory under one of the paths LPP's config
// gives that node, named as LPP names it for pv and its claim.
func localPathRecord(pv *v1.PersistentVolume, a config.Adoption, found Found, refuse refuser) (map[string]string, error) {
	var src string
	switch s := pv.Spec; {
	case s.HostPath != nil && s.Local == nil:
		src = s.HostPath.Path
	case s.Local != nil && s.HostPath == nil:
		src = s.Local.Path
	default:
		return refuse("it has not one hostPath or local source")
	}
	nodeName, hostname, err := localPathNode(pv)
	if err != nil {
		return refuse("%v", err)
	}
	node := found.Node
	if node == nil {
		// Not a refusal: LPP skips a gone node's directory too, and lets the PV go.
		return nil, fmt.Errorf("PV %s: node %s no longer exists: %w", pv.Name, nodeName, backend.ErrNodeGone)
	}
	if node.Name != nodeName || hostpath.HostnameOf(node) != hostname {
		return refuse("its node affinity selects %s, but node %s is %s", pathname.Quote(hostname), node.Name, hostpath.HostnameOf(node))
	}
	params, err := localPathClassParams(found.Class, a, Target{Node: nodeName})
	if err != nil {
		return refuse("%v", err)
	}
	roots := strings.Split(params[hostpath.ParamBasePath], ",")
	root, rel := "", ""
	for _, r := range roots {
		if p, ok := config.RelWithin(r, src); ok && p != "." {
			root, rel = r, p
		}
	}
	if root == "" {
		return refuse("its path %s is not a directory under the paths %s's config gives node %s (%s)", pathname.Quote(src), a.Peer, nodeName, strings.Join(roots, ", "))
	}
	if err := placed(pv, a, src, rel, params[config.ParamPathPattern], found.Claim); err != nil {
		return refuse("%v", err)
	}
	return map[string]string{
		backend.AnnBackend: hostpath.Name, hostpath.AnnNode: node.Name, hostpath.AnnNodeUID: string(node.UID),
		hostpath.AnnBasePath: root, backend.AnnPath: rel,
		backend.AnnOnDelete: params[config.ParamOnDelete], backend.AnnAdoptedFrom: string(a.Peer),
	}, nil
}
