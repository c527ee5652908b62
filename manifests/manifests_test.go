// Package manifests holds dirpv's kustomize manifests; its test renders them as a user would and
// checks that they fit the code: flags the binary accepts, classes it can parse.
package manifests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// render builds dir as `kubectl kustomize dir` does, with the kustomize library that kubectl
// bundles, so that the unit tests need no kubectl; it decodes every object.
func render(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	return decode(t, dir, out)
}

// decode decodes every object of a YAML stream: as its Kubernetes type, or unstructured for a kind
// client-go does not know (the Prometheus Operator's). Documents with no object are skipped.
func decode(t *testing.T, what string, stream []byte) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(u.Object) == 0 {
			continue // only comments, as helm renders a template whose condition is false
		}
		if !scheme.Scheme.Recognizes(u.GroupVersionKind()) {
			objs = append(objs, u)
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		objs = append(objs, obj)
	}
}

func find[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// deploymentOptions parses the dirpv container's args with the binary's own flags. Files the args
// name in a mounted ConfigMap of objs are written to a temporary directory first, so that flags
// that read a file at start (--adopt=local-path-provisioner,config=) read what the pod would.
func deploymentOptions(t *testing.T, d *appsv1.Deployment, objs []runtime.Object) *config.Options {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	fs := flag.NewFlagSet("dirpv", flag.ContinueOnError)
	var o config.Options
	o.AddFlags(fs)
	fs.Int("v", 0, "klog verbosity")
	pairs := []string{"$(POD_NAMESPACE)", "dirpv", "$(POD_NAME)", "dirpv-0", "$(NODE_NAME)", "node1"}
	for _, m := range c.VolumeMounts {
		if dir := mountedConfigMap(t, d, objs, m.Name); dir != "" {
			pairs = append(pairs, m.MountPath, dir)
		}
	}
	args := strings.NewReplacer(pairs...)
	var expanded []string
	for _, a := range c.Args {
		expanded = append(expanded, args.Replace(a))
	}
	if err := fs.Parse(expanded); err != nil {
		t.Fatalf("args %v: %v", c.Args, err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("args %v: %v", c.Args, err)
	}
	return &o
}

// mountedConfigMap writes the data of the ConfigMap of objs that d's volume name holds into a new
// temporary directory and returns it; "" if that volume is not such a ConfigMap.
func mountedConfigMap(t *testing.T, d *appsv1.Deployment, objs []runtime.Object, name string) string {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name != name || v.ConfigMap == nil {
			continue
		}
		for _, cm := range find[*v1.ConfigMap](objs) {
			if cm.Name != v.ConfigMap.Name {
				continue
			}
			dir := t.TempDir()
			for file, data := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return dir
		}
	}
	return ""
}

// kustomizations lists the directories below the folders that hold a kustomization.
func kustomizations(t *testing.T, folders ...string) []string {
	t.Helper()
	var dirs []string
	for _, folder := range folders {
		found, err := filepath.Glob(filepath.Join(folder, "*", "kustomization.yaml"))
		if err != nil || len(found) == 0 {
			t.Fatalf("no kustomization in %s: %v", folder, err)
		}
		for _, f := range found {
			dirs = append(dirs, filepath.Dir(f))
		}
	}
	return dirs
}

// TestOverlays checks every overlay and every install of the e2e suite (its kustomizations that
// render a Deployment).
func TestOverlays(t *testing.T) {
	for _, dir := range kustomizations(t, "overlays", "../e2e/testdata") {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			if len(find[*appsv1.Deployment](objs)) == 0 && !strings.HasPrefix(dir, "overlays") {
				return // one of the e2e suite's applications
			}
			checkInstall(t, objs, 2, true)
		})
	}
}

// checkInstall checks an install of dirpv, rendered by kustomize or helm: one Deployment of
// replicas whose args dirpv accepts, probes and a confined container, classes that dirpv parses
// and places, and (with rbac) the rights it needs and no more.
func checkInstall(t *testing.T, objs []runtime.Object, replicas int32, rbac bool) {
	t.Helper()
	deps := find[*appsv1.Deployment](objs)
	if len(deps) != 1 || *deps[0].Spec.Replicas != replicas {
		t.Fatalf("want one Deployment of %d replicas, got %d", replicas, len(deps))
	}
	d := deps[0]
	opts := deploymentOptions(t, d, objs)
	c := d.Spec.Template.Spec.Containers[0]
	if c.Name != "dirpv" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("container %s probes %+v %+v", c.Name, c.LivenessProbe, c.ReadinessProbe)
	}
	if sc := c.SecurityContext; !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context %+v", sc)
	}
	classes := find[*storagev1.StorageClass](objs)
	if len(classes) == 0 {
		t.Fatal("no StorageClass")
	}
	for _, sc := range classes {
		if !slices.Contains(opts.Names(), sc.Provisioner) {
			t.Errorf("class %s names provisioner %q, the Deployment serves %q", sc.Name, sc.Provisioner, opts.Names())
		}
		if strings.HasPrefix(sc.Name, "e2e-") {
			continue // the suite's classes include deliberately bad ones
		}
		// The backends as the Deployment configures them place a volume of every class.
		backends := backend.Set{nfs.New(opts, nil, nil), &hostpath.Backend{Root: opts.HostPathRoot, Node: roomyNode{}}}
		class, b, err := backends.ParseClass(sc.Parameters)
		if err != nil {
			t.Errorf("class %s: %v", sc.Name, err)
			continue
		}
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}
		if _, err := b.Place(context.Background(), class, controller.ProvisionOptions{StorageClass: sc, SelectedNode: node}); err != nil {
			t.Errorf("class %s: %v", sc.Name, err)
		}
		if c, ok := class.Params.(nfs.Class); ok {
			checkExportMounted(t, d, opts, c)
		}
	}
	if rbac {
		checkRBAC(t, objs)
	}
	if opts.CapacityName != "" {
		checkCSIDriver(t, objs, opts)
	} else if n := len(find[*storagev1.CSIDriver](objs)); n != 0 {
		t.Errorf("%d CSIDrivers without --capacity-name", n)
	}
}

// roomyNode is a node whose every root has room, each on a filesystem of its own: hostPath
// classes with several roots, or sizes enforced, measure them to place a volume.
type roomyNode struct{}

func (roomyNode) Run(_ context.Context, _, _ string, op volumeop.Op) (volumeop.Result, error) {
	return volumeop.Result{Room: 1 << 40, Device: uint64(len(op.Path))}, nil
}

// checkExportMounted: the export's local path is a volume mount of an nfs volume of that export.
func checkExportMounted(t *testing.T, d *appsv1.Deployment, opts *config.Options, class nfs.Class) {
	e, _ := opts.NFSExports.Containing(class.Server, class.Share)
	if e == nil {
		return // Place reported it
	}
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.MountPath != e.LocalPath {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && (v.NFS != nil && v.NFS.Server == e.Server && v.NFS.Path == e.Share || v.HostPath != nil) {
				return
			}
		}
	}
	t.Errorf("export %s:%s is not mounted at %s", e.Server, e.Share, e.LocalPath)
}

func checkRBAC(t *testing.T, objs []runtime.Object) {
	t.Helper()
	allowed := func(rules []rbacv1.PolicyRule, resource, verb string) bool {
		for _, r := range rules {
			if slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	var cluster, ns []rbacv1.PolicyRule
	for _, r := range find[*rbacv1.ClusterRole](objs) {
		cluster = append(cluster, r.Rules...)
	}
	for _, r := range find[*rbacv1.Role](objs) {
		ns = append(ns, r.Rules...)
	}
	for _, want := range []struct {
		rules          []rbacv1.PolicyRule
		resource, verb string
	}{
		{cluster, "persistentvolumes", "create"}, {cluster, "persistentvolumes", "delete"}, {cluster, "persistentvolumes", "patch"},
		{cluster, "persistentvolumeclaims", "watch"}, {cluster, "persistentvolumeclaims/status", "patch"}, {cluster, "storageclasses", "get"}, {cluster, "nodes", "get"},
		{cluster, "events", "create"}, {ns, "leases", "update"}, {ns, "pods", "create"}, {ns, "pods", "watch"}, {ns, "pods", "delete"},
		{ns, "pods/log", "get"}, {ns, "pods/exec", "create"},
		{ns, "csistoragecapacities", "create"}, {ns, "csistoragecapacities", "update"}, {ns, "csistoragecapacities", "delete"},
		{ns, "csistoragecapacities", "watch"}, {ns, "replicasets", "get"},
	} {
		if !allowed(want.rules, want.resource, want.verb) {
			t.Errorf("RBAC does not allow %s %s", want.verb, want.resource)
		}
	}
	for _, r := range cluster {
		if slices.Contains(r.Resources, "secrets") || slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") {
			t.Errorf("ClusterRole rule too broad: %+v", r)
		}
	}
}

// checkCSIDriver: the scheduler finds a class's CSIDriver by the class's provisioner name: there
// is one for --capacity-name, which publishes capacity and needs no attach.
func checkCSIDriver(t *testing.T, objs []runtime.Object, opts *config.Options) {
	t.Helper()
	drivers := find[*storagev1.CSIDriver](objs)
	if len(drivers) != 1 || drivers[0].Name != opts.CapacityName {
		t.Fatalf("want one CSIDriver called %q (--capacity-name), got %d", opts.CapacityName, len(drivers))
	}
	s := drivers[0].Spec
	if s.StorageCapacity == nil || !*s.StorageCapacity || s.AttachRequired == nil || *s.AttachRequired {
		t.Errorf("CSIDriver %s: storageCapacity %v, attachRequired %v; want true, false", drivers[0].Name, s.StorageCapacity, s.AttachRequired)
	}
}

func TestDefaultClass(t *testing.T) {
	classes := find[*storagev1.StorageClass](render(t, "overlays/hostpath"))
	if len(classes) != 1 || classes[0].Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
		t.Fatalf("the hostpath overlay's class must be the cluster default: %+v", classes)
	}
}

// The dirpv container's args are listed once, in base/deployment.yaml. Overlays and the e2e
// suite's installs only append flags to them with JSON patches (of a repeated flag the last
// counts; --nfs-export and --nfs-allow add up), so that no copy of the list falls behind.
func TestArgsOnce(t *testing.T) {
	for _, folder := range []string{".", "../e2e/testdata"} {
		err := filepath.WalkDir(folder, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && path == filepath.Join(chart, "templates") {
				// Go templates, not YAML; the chart's Deployment is held to base's by
				// TestHelmSameAsKustomize.
				return filepath.SkipDir
			}
			if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" || path == filepath.Join("base", "deployment.yaml") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, problem := range argsListed(t, path, b) {
				t.Errorf("%s: %s", path, problem)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// argsListed returns where the YAML documents in b set a Deployment's args other than by
// appending one: in a Deployment or a strategic-merge patch of one, or in a JSON patch, also
// those inline in a Kustomization's patches.
func argsListed(t *testing.T, file string, b []byte) []string {
	var problems []string
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return problems
		}
		var v any
		if err == nil {
			err = utilyaml.Unmarshal(doc, &v)
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch v := v.(type) {
		case map[string]any:
			switch v["kind"] {
			case "Deployment":
				if hasKey(v, "args") {
					problems = append(problems, "a Deployment with args: append the flags to base's with a JSON patch")
				}
			case "Kustomization":
				patches, _ := v["patches"].([]any)
				for _, p := range patches {
					if inline, ok := p.(map[string]any)["patch"].(string); ok {
						problems = append(problems, argsListed(t, file, []byte(inline))...)
					}
				}
			}
		case []any: // a JSON patch
			for _, op := range v {
				op, _ := op.(map[string]any)
				path, _ := op["path"].(string)
				if strings.Contains(path, "/args") && (op["op"] != "add" || !strings.HasSuffix(path, "/args/-")) ||
					strings.Contains(path, "/containers") && hasKey(op["value"], "args") {
					problems = append(problems, fmt.Sprintf("%s %s: a JSON patch may only append to args (op: add, path: .../args/-)", op["op"], path))
				}
			}
		}
	}
}

// hasKey reports whether key is a key of a map anywhere in v.
func hasKey(v any, key string) bool {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v[key]; ok {
			return true
		}
		for _, x := range v {
			if hasKey(x, key) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if hasKey(x, key) {
				return true
			}
		}
	}
	return false
}
