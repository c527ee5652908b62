package peer

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
)

// The StorageClass parameters of nfs-subdir-external-provisioner (NSP), as its
// cmd/nfs-subdir-external-provisioner/provisioner.go reads them.
const (
	ParamNSPPathPattern     = "pathPattern"
	ParamNSPOnDelete        = "onDelete"
	ParamNSPArchiveOnDelete = "archiveOnDelete"
)

// nspVar is NSP's pathPattern variable, "${.PVC.namespace}", "${.PVC.labels.KEY}", with its
// own expression.
var nspVar = regexp.MustCompile(`\${\.PVC\.((labels|annotations)\.(.*?)|.*?)}`)

// nspClassParams are the dirpv parameters of an NSP StorageClass sc whose volumes lie under a's
// export: NSP's directory names (its default, "${.PVC.namespace}-${.PVC.name}-${PV name}", or
// its pathPattern) and its reclaim (onDelete, archiveOnDelete). What dirpv cannot do as NSP
// does is an error naming the parameter, never a silent difference.
func nspClassParams(sc *storagev1.StorageClass, a config.Adoption) (map[string]string, error) {
	var errs []error
	for key := range sc.Parameters {
		switch key {
		case ParamNSPPathPattern, ParamNSPOnDelete, ParamNSPArchiveOnDelete:
		default:
			errs = append(errs, fmt.Errorf("parameter %q: unknown to %s (it takes %s, %s and %s)", key, a.Peer, ParamNSPPathPattern, ParamNSPOnDelete, ParamNSPArchiveOnDelete))
		}
	}
	onDelete, err := nspOnDelete(sc.Parameters)
	if err != nil {
		errs = append(errs, err)
	}
	pattern := config.DefaultPathPattern // NSP's own default, in dirpv's template syntax
	if p, ok := sc.Parameters[ParamNSPPathPattern]; ok {
		if pattern, err = nspPattern(p); err != nil {
			errs = append(errs, fmt.Errorf("parameter %q: %w", ParamNSPPathPattern, err))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("StorageClass %s of %s: %w", sc.Name, a.Name, errors.Join(errs...))
	}
	return map[string]string{
		config.ParamBackend: nfs.Name, nfs.ParamServer: a.Server, nfs.ParamShare: a.Path,
		config.ParamPathPattern: pattern, config.ParamOnDelete: string(onDelete),
	}, nil
}

// nspOnDelete is what NSP does with a deleted PV's directory: onDelete "delete" or "retain" if
// set, else archive unless archiveOnDelete is false (archive is NSP's default). Values NSP
// would pass over are refused: guessing could delete what should be kept.
func nspOnDelete(params map[string]string) (config.OnDelete, error) {
	if v, ok := params[ParamNSPOnDelete]; ok {
		switch v {
		case "delete":
			return config.OnDeleteDelete, nil
		case "retain":
			return config.OnDeleteRetain, nil
		}
		return "", fmt.Errorf("parameter %q: %s is not delete or retain", ParamNSPOnDelete, pathname.Quote(v))
	}
	v, ok := params[ParamNSPArchiveOnDelete]
	if !ok {
		return config.OnDeleteArchive, nil
	}
	archive, err := strconv.ParseBool(v)
	if err != nil {
		return "", fmt.Errorf("parameter %q: %s is not a boolean", ParamNSPArchiveOnDelete, pathname.Quote(v))
	}
	if archive {
		return config.OnDeleteArchive, nil
	}
	return config.OnDeleteDelete, nil
}

// nspPattern translates NSP's pathPattern into dirpv's template: ${.PVC.namespace},
// ${.PVC.name}, ${.PVC.labels.KEY} and ${.PVC.annotations.KEY}. Where NSP writes nothing for a
// missing label or annotation, dirpv's template fails (an event, not a directory elsewhere);
// what it renders is then validated like any dirpv path.
func nspPattern(p string) (string, error) {
	var b strings.Builder
	last := 0
	literal := func(s string) error {
		if strings.Contains(s, "{{") || strings.Contains(s, "}}") {
			return fmt.Errorf("%s: \"{{\" and \"}}\" are not supported", pathname.Quote(p))
		}
		b.WriteString(s)
		return nil
	}
	for _, m := range nspVar.FindAllStringSubmatchIndex(p, -1) {
		if err := literal(p[last:m[0]]); err != nil {
			return "", err
		}
		last = m[1]
		whole, kind := p[m[2]:m[3]], ""
		if m[4] >= 0 {
			kind = p[m[4]:m[5]]
		}
		switch {
		case kind == "labels":
			b.WriteString(`{{index .PVC.Labels ` + strconv.Quote(p[m[6]:m[7]]) + `}}`)
		case kind == "annotations":
			b.WriteString(`{{index .PVC.Annotations ` + strconv.Quote(p[m[6]:m[7]]) + `}}`)
		case whole == "namespace":
			b.WriteString(`{{.PVC.Namespace}}`)
		case whole == "name":
			b.WriteString(`{{.PVC.Name}}`)
		default:
			return "", fmt.Errorf("%s: ${.PVC.%s} is not one of ${.PVC.namespace}, ${.PVC.name}, ${.PVC.labels.KEY}, ${.PVC.annotations.KEY}", pathname.Quote(p), whole)
		}
	}
	if err := literal(p[last:]); err != nil {
		return "", err
	}
	return b.String(), nil
}

// nspRecord derives dirpv's record of pv, a PV NSP made for a claim of sc, from NSP's
// conventions: its nfs source is a's server and a directory under a's path, named as sc's
// pathPattern (or NSP's default) names it for pv and its claim.
func nspRecord(pv *v1.PersistentVolume, a config.Adoption, found Found, refuse refuser) (map[string]string, error) {
	sc := found.Class
	src := pv.Spec.NFS
	if src == nil {
		return refuse("it has no nfs source")
	}
	if src.Server != a.Server {
		return refuse("its NFS server %s is not %s", pathname.Quote(src.Server), a.Server)
	}
	rel, ok := config.RelWithin(a.Path, src.Path)
	if !ok || rel == "." {
		return refuse("its path %s is not a directory under %s", pathname.Quote(src.Path), a.Path)
	}
	params, err := nspClassParams(sc, a)
	if err != nil {
		return refuse("%v", err)
	}
	if err := placed(pv, a, src.Path, rel, params[config.ParamPathPattern], found.Claim); err != nil {
		return refuse("%v", err)
	}
	return map[string]string{
		backend.AnnBackend: nfs.Name, nfs.AnnServer: a.Server, nfs.AnnShare: a.Path, backend.AnnPath: rel,
		backend.AnnOnDelete: params[config.ParamOnDelete], backend.AnnAdoptedFrom: string(a.Peer),
	}, nil
}
