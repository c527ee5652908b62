package manifests

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/diff"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
)

// The chart, and the values files of the matrix (helm/testdata/*.yaml).
const (
	chart       = "helm/dirpv"
	helmValues  = "helm/testdata"
	releaseName = "dirpv"
	releaseNS   = "dirpv"
)

// helmLabels are the labels the chart adds to every object beside the kustomize base's
// app.kubernetes.io/name: the release's, which kustomize has no notion of.
var helmLabels = []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"}

// helmAnnotations are the annotations for helm itself that the chart adds.
var helmAnnotations = []string{"helm.sh/resource-policy"}

// helmBinaries returns helm 4 and helm 3 as hack/helm-build.sh builds them into the tools cache
// (hack/lib.sh names the paths); it skips the test when they are not built.
func helmBinaries(t *testing.T) (helm4, helm3 string) {
	t.Helper()
	out, err := exec.Command("bash", "-c", `. ../hack/lib.sh && echo "$HELM4" && echo "$HELM3"`).Output()
	if err != nil {
		t.Fatalf("hack/lib.sh: %v", err)
	}
	paths := strings.Fields(string(out))
	if len(paths) != 2 {
		t.Fatalf("hack/lib.sh names helm as %q", out)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no helm at %s: build it with hack/helm-build.sh (make helm and make unit do)", p)
		}
	}
	return paths[0], paths[1]
}

// helm runs a helm binary and returns its standard output; it fails the test on error.
func helm(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	out, err := helmErr(t, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(filepath.Dir(filepath.Dir(bin))), strings.Join(args, " "), err, out)
	}
	return out
}

// helmErr runs a helm binary: its standard output, or its error output with the error.
func helmErr(t *testing.T, bin string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	// No user's repositories or plugins: the chart needs none.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.Bytes(), err
	}
	return stdout.Bytes(), nil
}

// helmTemplate renders the chart as the release dirpv in namespace dirpv, with values files.
func helmTemplate(t *testing.T, bin string, values ...string) []byte {
	t.Helper()
	args := []string{"template", releaseName, chart, "--namespace", releaseNS}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	return helm(t, bin, args...)
}

// clusterScoped are the cluster-scoped kinds that kustomize does not know to be: it gives them
// the namespace, which the API server drops.
var clusterScoped = []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

// byName sorts objects by kind, namespace and name, and drops the labels and annotations the chart
// adds and the
// namespace of clusterScoped kinds.
func byName(t *testing.T, objs []runtime.Object) []runtime.Object {
	t.Helper()
	key := func(o runtime.Object) string {
		m, err := meta.Accessor(o)
		if err != nil {
			t.Fatal(err)
		}
		return o.GetObjectKind().GroupVersionKind().Kind + "/" + m.GetNamespace() + "/" + m.GetName()
	}
	for _, o := range objs {
		m, _ := meta.Accessor(o)
		m.SetLabels(without(m.GetLabels(), helmLabels))
		m.SetAnnotations(without(m.GetAnnotations(), helmAnnotations))
		if slices.Contains(clusterScoped, o.GetObjectKind().GroupVersionKind().Kind) {
			m.SetNamespace("")
		}
	}
	sort.Slice(objs, func(i, j int) bool { return key(objs[i]) < key(objs[j]) })
	return objs
}

// TestHelmSameAsKustomize: the chart is no second copy of the manifests that drifts. With its
// default values it renders the objects of the hostpath overlay, and with the values files of
// helm/testdata those of the nfs overlays; decoded objects are compared, not text.
func TestHelmSameAsKustomize(t *testing.T) {
	helm4, _ := helmBinaries(t)
	for _, tc := range []struct{ overlay, values string }{
		{"overlays/hostpath", ""},
		{"overlays/nfs", "nfs.yaml"},
		{"overlays/nfs-direct", "nfs-direct.yaml"},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			var values []string
			if tc.values != "" {
				values = append(values, filepath.Join(helmValues, tc.values))
			}
			want := byName(t, render(t, tc.overlay))
			got := byName(t, decode(t, chart, helmTemplate(t, helm4, values...)))
			if len(got) != len(want) {
				t.Errorf("helm renders %d objects, kustomize %d", len(got), len(want))
			}
			for i := range min(len(got), len(want)) {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Errorf("helm (-) and kustomize (+) differ:\n%s", diff.Diff(got[i], want[i]))
				}
			}
		})
	}
}

// TestHelmValues lints and renders the chart with helm 4 and helm 3 for every values file of the
// matrix (and the defaults): both render the same objects, an install dirpv accepts (as the
// overlays are checked), and the Prometheus Operator's objects decode into its API types.
func TestHelmValues(t *testing.T) {
	helm4, helm3 := helmBinaries(t)
	files, err := filepath.Glob(filepath.Join(helmValues, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values in %s: %v", helmValues, err)
	}
	for _, file := range append([]string{""}, files...) {
		name := filepath.Base(file)
		if file == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			var values []string
			if file != "" {
				values = []string{file}
			}
			var rendered [][]byte
			for _, bin := range []string{helm4, helm3} {
				helm(t, bin, append([]string{"lint", "--strict", chart, "--namespace", releaseNS}, valuesArgs(values)...)...)
				rendered = append(rendered, helmTemplate(t, bin, values...))
			}
			objs := decode(t, chart, rendered[0])
			if three := decode(t, chart, rendered[1]); !reflect.DeepEqual(byName(t, objs), byName(t, three)) {
				t.Errorf("helm 4 and helm 3 render different objects")
			}
			v := readValues(t, values...)
			checkInstall(t, objs, int32(v.Replicas), v.RBAC.Create)
			if !v.RBAC.Create && len(find[*rbacv1.ClusterRole](objs)) != 0 {
				t.Error("rbac.create false renders RBAC")
			}
			var kinds []string
			if v.Monitoring.PodMonitor.Enabled {
				kinds = append(kinds, "PodMonitor")
			}
			if v.Monitoring.PrometheusRule.Enabled {
				kinds = append(kinds, "PrometheusRule")
			}
			checkMonitoring(t, rendered[0], kinds)
		})
	}
}

func valuesArgs(values []string) []string {
	var args []string
	for _, v := range values {
		args = append(args, "--values", v)
	}
	return args
}

// chartValues is what the tests read of the values: the chart's defaults, under the files'.
type chartValues struct {
	Replicas int
	RBAC     struct{ Create bool }
	Flags    map[string]any
	// Monitoring: which of the Prometheus Operator's objects are on.
	Monitoring struct {
		PodMonitor     struct{ Enabled bool } `json:"podMonitor"`
		PrometheusRule struct{ Enabled bool } `json:"prometheusRule"`
	}
}

func readValues(t *testing.T, files ...string) chartValues {
	t.Helper()
	var v chartValues
	for _, f := range append([]string{filepath.Join(chart, "values.yaml")}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := utilyaml.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return v
}

// checkMonitoring decodes the PodMonitor and PrometheusRule that a render holds into the Prometheus
// Operator's API types, strictly, with helm/check (a module of its own); kinds must each be
// rendered once, and no other.
func checkMonitoring(t *testing.T, rendered []byte, kinds []string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"run", "."}, kinds...)...)
	cmd.Dir = "helm/check"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	cmd.Stdin = bytes.NewReader(rendered)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm/check %v: %v\n%s", kinds, err, out)
	}
	var got []string
	for _, o := range decode(t, chart, rendered) {
		if k := o.GetObjectKind().GroupVersionKind(); k.Group == "monitoring.coreos.com" {
			got = append(got, k.Kind)
		}
	}
	if !slices.Equal(got, kinds) {
		t.Errorf("Prometheus Operator objects %v, want %v", got, kinds)
	}
}

// chartSetFlags are dirpv's flags that the chart sets itself, from the pod (the downward API),
// and kubeconfig, which a pod in the cluster does not use.
var chartSetFlags = []string{"namespace", "pod-name", "node-name", "kubeconfig"}

// TestHelmFlags: the chart's values.flags are exactly dirpv's flags (a flag added to dirpv fails
// this until the chart has it), and helm/testdata/every-value.yaml sets every one of them, each
// passed to dirpv as set.
func TestHelmFlags(t *testing.T) {
	fs := flag.NewFlagSet("dirpv", flag.ContinueOnError)
	var o config.Options
	o.AddFlags(fs)
	want := []string{"v"} // klog's verbosity, the only klog flag the chart offers
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(chartSetFlags, f.Name) {
			want = append(want, f.Name)
		}
	})
	slices.Sort(want)
	chartFlags := func(v chartValues) []string {
		var names []string
		for k := range v.Flags {
			names = append(names, kebab(k))
		}
		slices.Sort(names)
		return names
	}
	if got := chartFlags(readValues(t)); !slices.Equal(got, want) {
		t.Errorf("values.yaml's flags %v, dirpv's %v", got, want)
	}
	every := filepath.Join(helmValues, "every-value.yaml")
	if got := chartFlags(readValues(t, every)); !slices.Equal(got, want) {
		t.Errorf("%s sets flags %v, want every one of %v", every, got, want)
	}

	helm4, _ := helmBinaries(t)
	d := find[*appsv1.Deployment](decode(t, chart, helmTemplate(t, helm4, every)))[0]
	args := d.Spec.Template.Spec.Containers[0].Args
	for k, v := range readValues(t, every).Flags {
		values, ok := v.([]any)
		if !ok {
			values = []any{v}
		}
		for _, v := range values {
			arg := "--" + kebab(k) + "=" + flagString(v)
			if !slices.Contains(args, arg) {
				t.Errorf("flags.%s: no %s in the args %q", k, arg, args)
			}
		}
	}
}

// kebab turns a values key into its flag's name: kubeApiQps is kube-api-qps.
func kebab(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('-')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// flagString is a value as the flag's argument: YAML numbers decode as float64.
func flagString(v any) string {
	if f, ok := v.(float64); ok && f == math.Trunc(f) {
		return strconv.FormatInt(int64(f), 10)
	}
	return fmt.Sprint(v)
}

// TestHelmSchema: values.schema.json refuses, at install as at render, a value a typo or a wrong
// type makes, with helm's message naming it; the values of the matrix pass (TestHelmValues).
func TestHelmSchema(t *testing.T) {
	helm4, helm3 := helmBinaries(t)
	for _, tc := range []struct {
		name string
		set  []string
		want []string // in helm's message
	}{
		{"typo at the top", []string{"--set", "replica=3"}, []string{"replica"}},
		{"typo in a flag", []string{"--set", "flags.workrs=3"}, []string{"workrs"}},
		{"typo in a class parameter", []string{"--set", "storageClasses[0].parameters.ondelete=archive"}, []string{"ondelete"}},
		{"wrong type", []string{"--set-string", "replicas=two"}, []string{"replicas", "integer"}},
		{"flag of the wrong type", []string{"--set-string", "flags.workers=many"}, []string{"workers"}},
		{"bad enum", []string{"--set", "storageClasses[0].parameters.onDelete=remove"}, []string{"onDelete"}},
		{"bad pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, []string{"pullPolicy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bin := range []string{helm4, helm3} {
				out, err := helmErr(t, bin, append([]string{"template", releaseName, chart, "--namespace", releaseNS}, tc.set...)...)
				if err == nil {
					t.Fatalf("%s %v renders", bin, tc.set)
				}
				msg := string(out)
				if !strings.Contains(msg, "values don't meet the specifications of the schema") {
					t.Errorf("%s %v: not the schema's refusal: %s", bin, tc.set, msg)
				}
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("%s %v: message does not name %q: %s", bin, tc.set, w, msg)
					}
				}
			}
		})
	}
}

// TestHelmSchemaClassParameters: the schema's class parameters are exactly those dirpv parses, as
// the error for an unknown one lists them (a parameter added to dirpv fails this until the schema
// has it).
func TestHelmSchemaClassParameters(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chart, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			StorageClasses struct {
				Items struct {
					Properties struct {
						Parameters struct {
							Properties map[string]any
						}
					}
				}
			} `json:"storageClasses"`
		}
	}
	if err := utilyaml.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	var inSchema []string
	for k := range schema.Properties.StorageClasses.Items.Properties.Parameters.Properties {
		inSchema = append(inSchema, k)
	}
	slices.Sort(inSchema)

	opts := &config.Options{}
	backends := backend.Set{nfs.New(opts, nil, nil), &hostpath.Backend{}}
	_, _, err = backends.ParseClass(map[string]string{"backend": "hostPath", "no-such-parameter": "x"})
	_, list, ok := strings.Cut(fmt.Sprint(err), "unknown parameter (allowed: ")
	if !ok {
		t.Fatalf("no list of the parameters in %v", err)
	}
	list, _, _ = strings.Cut(list, ")")
	known := strings.Split(list, ", ")
	slices.Sort(known)
	if !slices.Equal(inSchema, known) {
		t.Errorf("values.schema.json's class parameters %v, dirpv's %v", inSchema, known)
	}
}

// without is m less keys, nil when nothing is left, as a decoded object without them would have it.
func without(m map[string]string, keys []string) map[string]string {
	for _, k := range keys {
		delete(m, k)
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
