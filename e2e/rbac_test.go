//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"dirpv.io/dirpv/provisioner/nodeexec"
	"dirpv.io/dirpv/provisioner/volumeop"
)

const (
	dirpvSA  = "system:serviceaccount:dirpv:dirpv"
	rbacYAML = "../manifests/base/rbac.yaml"
)

// manifestRules reads the ClusterRole and Role of manifests/base/rbac.yaml, and checks that its
// bindings give them to dirpv's service account and nobody else.
func manifestRules(t *testing.T) (cluster, namespaced []rbacv1.PolicyRule) {
	t.Helper()
	f, err := os.Open(rbacYAML)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var doc struct {
			Kind     string                `json:"kind"`
			Metadata struct{ Name string } `json:"metadata"`
			Rules    []rbacv1.PolicyRule   `json:"rules"`
			RoleRef  rbacv1.RoleRef        `json:"roleRef"`
			Subjects []rbacv1.Subject      `json:"subjects"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", rbacYAML, err)
		}
		switch doc.Kind {
		case "ClusterRole":
			cluster = append(cluster, doc.Rules...)
		case "Role":
			namespaced = append(namespaced, doc.Rules...)
		case "ClusterRoleBinding", "RoleBinding":
			if len(doc.Subjects) != 1 || doc.Subjects[0].Kind != "ServiceAccount" || doc.Subjects[0].Name != "dirpv" ||
				doc.RoleRef.Name != "dirpv" || doc.RoleRef.Kind != strings.TrimSuffix(doc.Kind, "Binding") {
				t.Errorf("%s %s binds %+v to %+v", doc.Kind, doc.Metadata.Name, doc.RoleRef, doc.Subjects)
			}
		case "ServiceAccount", "":
		default:
			t.Errorf("%s: unexpected %s %s", rbacYAML, doc.Kind, doc.Metadata.Name)
		}
	}
	if len(cluster) == 0 || len(namespaced) == 0 {
		t.Fatalf("%s: no ClusterRole or Role rules found", rbacYAML)
	}
	return cluster, namespaced
}

// permission is one allowed action as `kubectl auth can-i --list` shows it: "resource[.group]" or
// a non-resource URL, resource name (or empty), verb.
type permission struct{ what, name, verb string }

func (p permission) String() string {
	s := p.verb + " " + p.what
	if p.name != "" {
		s += "/" + p.name
	}
	return s
}

// expand lists the permissions that rules grant.
func expand(rules []rbacv1.PolicyRule) map[permission]bool {
	out := map[permission]bool{}
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, verb := range r.Verbs {
			for _, u := range r.NonResourceURLs {
				out[permission{u, "", verb}] = true
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					what := res
					if g != "" {
						what += "." + g
					}
					for _, n := range names {
						out[permission{what, n, verb}] = true
					}
				}
			}
		}
	}
	return out
}

// canIRow is a row of `kubectl auth can-i --list --no-headers`:
// Resources, [Non-Resource URLs], [Resource Names], [Verbs].
var canIRow = regexp.MustCompile(`^([^\s\[]\S*)?\s*\[([^\]]*)\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]$`)

// canIList returns what `kubectl auth can-i --list` says user may do in namespace ns.
func canIList(t *testing.T, user, ns string) map[permission]bool {
	t.Helper()
	out := kubectl(t, "auth", "can-i", "--list", "--no-headers", "--as="+user, "-n", ns)
	perms := map[permission]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m := canIRow.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			t.Fatalf("kubectl auth can-i --list: cannot parse %q", line)
		}
		whats := strings.Fields(m[2])
		if m[1] != "" {
			whats = []string{m[1]}
		}
		names := strings.Fields(m[3])
		if len(names) == 0 {
			names = []string{""}
		}
		for _, w := range whats {
			for _, n := range names {
				for _, v := range strings.Fields(m[4]) {
					perms[permission{w, n, v}] = true
				}
			}
		}
	}
	return perms
}

// canI runs `kubectl auth can-i ARGS --as=<dirpv's service account>` for each probe, eight at a
// time, and returns the answers; exit status 1 with "no" means no.
func canI(t *testing.T, probes [][]string) []bool {
	t.Helper()
	answers := make([]bool, len(probes))
	errs := make([]error, len(probes))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, args := range probes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			// Standard output only: warnings ("resource 'nodes' is not namespace scoped") go to stderr.
			out, err := exec.Command("kubectl", append([]string{"auth", "can-i", "--as=" + dirpvSA}, args...)...).Output()
			var exit *exec.ExitError
			switch {
			case err == nil:
				answers[i] = true
			case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.HasPrefix(string(out), "no"):
			default:
				errs[i] = fmt.Errorf("kubectl auth can-i %v: %v\n%s", args, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return answers
}

// testRBAC: dirpv's service account may do exactly what the commented rules of
// manifests/base/rbac.yaml grant, beyond what every service account may do, and in particular
// none of the dangerous things.
func testRBAC(t *testing.T) {
	cluster, namespaced := manifestRules(t)
	other := namespace(t)
	for _, tc := range []struct {
		ns    string
		rules []rbacv1.PolicyRule
	}{
		{dirpvNamespace, append(slices.Clone(cluster), namespaced...)}, // ClusterRole + Role
		{"default", cluster},
		{other, cluster},
	} {
		got := canIList(t, dirpvSA, tc.ns)
		// What any service account may do here (discovery, self reviews): an account of another
		// namespace without bindings of its own.
		baseline := canIList(t, "system:serviceaccount:"+other+":nobody", tc.ns)
		want := expand(tc.rules)
		var extra, missing []string
		for p := range got {
			if !want[p] && !baseline[p] {
				extra = append(extra, p.String())
			}
		}
		for p := range want {
			if !got[p] {
				missing = append(missing, p.String())
			}
		}
		slices.Sort(extra)
		slices.Sort(missing)
		if len(extra) > 0 {
			t.Errorf("namespace %s: %s may %v, which %s does not grant", tc.ns, dirpvSA, extra, rbacYAML)
		}
		if len(missing) > 0 {
			t.Errorf("namespace %s: %s may not %v, which %s grants", tc.ns, dirpvSA, missing, rbacYAML)
		}
		t.Logf("namespace %s: %d permissions, %d of them every service account's", tc.ns, len(got), len(baseline))
	}

	// Explicit probes of what must never be allowed.
	denied := [][]string{
		{"get", "secrets", "-A"}, {"list", "secrets", "-A"}, {"watch", "secrets", "-A"},
		{"get", "secrets", "-n", dirpvNamespace}, {"list", "secrets", "-n", dirpvNamespace},
		{"get", "secrets", "-n", "default"}, {"list", "secrets", "-n", "kube-system"},
		{"create", "pods", "--subresource=exec", "-n", "default"}, {"get", "pods", "--subresource=exec", "-n", dirpvNamespace},
		{"create", "pods", "--subresource=attach", "-n", dirpvNamespace}, {"create", "pods", "--subresource=portforward", "-n", dirpvNamespace},
		{"create", "pods", "--subresource=eviction", "-n", dirpvNamespace}, {"update", "pods", "-n", dirpvNamespace},
		{"create", "pods", "-n", "default"}, {"delete", "pods", "-n", "default"}, {"create", "pods", "-A"}, {"patch", "pods", "-n", "default"},
		{"get", "pods", "--subresource=log", "-n", "default"}, {"get", "pods", "--subresource=log", "-A"},
		{"update", "nodes"}, {"patch", "nodes"}, {"delete", "nodes"}, {"create", "nodes"},
		{"update", "nodes", "--subresource=status"}, {"get", "nodes", "--subresource=proxy"},
		{"create", "serviceaccounts", "--subresource=token", "-n", dirpvNamespace},
		{"update", "deployments.apps", "-n", dirpvNamespace}, {"get", "configmaps", "-n", dirpvNamespace},
		{"create", "persistentvolumeclaims", "-A"}, {"delete", "persistentvolumeclaims", "-A"},
		{"create", "storageclasses.storage.k8s.io"}, {"delete", "storageclasses.storage.k8s.io"},
		{"update", "leases.coordination.k8s.io", "-n", "default"}, {"delete", "leases.coordination.k8s.io", "-n", dirpvNamespace},
		{"create", "clusterrolebindings.rbac.authorization.k8s.io"}, {"create", "rolebindings.rbac.authorization.k8s.io", "-n", dirpvNamespace},
		{"escalate", "clusterroles.rbac.authorization.k8s.io"}, {"bind", "clusterroles.rbac.authorization.k8s.io"},
		{"impersonate", "users"}, {"impersonate", "serviceaccounts", "-A"},
		{"create", "certificatesigningrequests.certificates.k8s.io"}, {"delete", "events", "-A"},
		{"*", "*", "-A"},
	}
	// And the probes see what rbac.yaml grants, so a "no" above is not a broken probe.
	allowed := [][]string{
		{"create", "persistentvolumes"}, {"watch", "persistentvolumeclaims", "-A"},
		{"create", "pods", "-n", dirpvNamespace}, {"update", "leases.coordination.k8s.io", "-n", dirpvNamespace},
		{"get", "pods", "--subresource=log", "-n", dirpvNamespace}, {"create", "pods", "--subresource=exec", "-n", dirpvNamespace},
		{"patch", "pods", "-n", dirpvNamespace},
	}
	answers := canI(t, append(slices.Clone(denied), allowed...))
	for i, args := range append(slices.Clone(denied), allowed...) {
		if want := i >= len(denied); answers[i] != want {
			t.Errorf("kubectl auth can-i %s --as=%s: %v, want %v", strings.Join(args, " "), dirpvSA, answers[i], want)
		}
	}
	reliability("rbac", "denied-probes", len(denied), "result", map[bool]string{true: "fail", false: "ok"}[t.Failed()])
}

// testHelperPodConfinement captures the real helper pods of a hostPath create and delete (class
// dirpv-hostpath, whose basePath is --hostpath-root, /var/lib/dirpv) and checks that each mounts
// only that directory and runs with as little as its work needs.
func testHelperPodConfinement(t *testing.T) {
	helpers := watchHelperRuns(t)
	ns := namespace(t)
	claim(t, ns, "data", "dirpv-hostpath")
	pod(t, ns, "app", "data")
	pv := bound(t, ns, "data")
	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
	waitGone(t, hostDir(pv))
	helpers.waitOps(t, pv.Name, "create", "delete")

	kinds := map[string]int{}
	seen := map[string]*v1.Pod{}
	for _, r := range helpers.of(pv.Name) {
		kinds[r.op]++
		seen[r.pod] = helpers.pod(r.pod)
	}
	for name, p := range seen {
		t.Logf("helper pod %s: %s %v %v", name, p.Spec.Containers[0].Command, p.Spec.Containers[0].Args, p.Annotations)
		for _, problem := range helperPodProblems(p) {
			t.Errorf("helper pod %s: %s", name, problem)
		}
	}
	// The checks catch what they are about: a captured pod, widened, fails each of them.
	for _, p := range seen {
		wide := p.DeepCopy()
		wide.Spec.Volumes = append(wide.Spec.Volumes, v1.Volume{Name: "root", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/"}}})
		wide.Spec.Volumes[0].HostPath.Path = "/"
		wide.Spec.HostPID = true
		c := &wide.Spec.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, v1.VolumeMount{Name: "root", MountPath: "/host"})
		c.SecurityContext.Privileged = ptr(true)
		c.SecurityContext.ReadOnlyRootFilesystem = ptr(false)
		c.SecurityContext.Capabilities.Add = append(c.SecurityContext.Capabilities.Add, "SYS_ADMIN")
		wide.Spec.AutomountServiceAccountToken = nil
		if got := helperPodProblems(wide); len(got) < 7 {
			t.Errorf("a widened helper pod shows only %d problems: %q", len(got), got)
		}
		break
	}
	reliability("helper-pod-confinement", "helper-pods", len(seen), "kinds", fmt.Sprint(kinds), "result", map[bool]string{true: "fail", false: "ok"}[t.Failed()])
}

// helperPodProblems lists what a helper pod may have beyond its work's needs.
func helperPodProblems(p *v1.Pod) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	s := p.Spec
	if len(s.Volumes) != 1 || s.Volumes[0].HostPath == nil {
		bad("volumes %+v, want exactly one, a hostPath", s.Volumes)
	} else if got := filepath.Clean(s.Volumes[0].HostPath.Path); got != basePath {
		bad("mounts the node's %s, want %s", got, basePath)
	}
	if len(s.InitContainers)+len(s.EphemeralContainers) != 0 || len(s.Containers) != 1 {
		bad("%d containers, %d init, %d ephemeral; want one", len(s.Containers), len(s.InitContainers), len(s.EphemeralContainers))
	}
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		bad("automountServiceAccountToken %v, want false", s.AutomountServiceAccountToken)
	}
	if s.HostNetwork || s.HostPID || s.HostIPC {
		bad("hostNetwork %v hostPID %v hostIPC %v", s.HostNetwork, s.HostPID, s.HostIPC)
	}
	for _, c := range s.Containers {
		if len(c.VolumeMounts) != 1 || len(s.Volumes) == 1 && c.VolumeMounts[0].Name != s.Volumes[0].Name {
			bad("container %s mounts %+v, want exactly the one volume", c.Name, c.VolumeMounts)
		}
		if len(c.VolumeDevices) != 0 {
			bad("container %s has devices %+v", c.Name, c.VolumeDevices)
		}
		sc := c.SecurityContext
		if sc == nil {
			bad("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("container %s: allowPrivilegeEscalation %v, want false", c.Name, sc.AllowPrivilegeEscalation)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			bad("container %s: readOnlyRootFilesystem %v, want true", c.Name, sc.ReadOnlyRootFilesystem)
		}
		var drop, add []string
		if sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Drop {
				drop = append(drop, string(c))
			}
			for _, c := range sc.Capabilities.Add {
				add = append(add, string(c))
			}
		}
		slices.Sort(add)
		want := []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"}
		if admin, err := needsAdmin(p, c.Args); err != nil {
			bad("container %s: %v", c.Name, err)
		} else if admin {
			want = append(want, "SYS_ADMIN") // quota interfaces: only pods whose every operation is on limits
		}
		if !slices.Equal(drop, []string{"ALL"}) || !slices.Equal(add, want) {
			bad("container %s: capabilities drop %v add %v, want drop [ALL] add %v", c.Name, drop, add, want)
		}
	}
	return out
}

// needsAdmin decodes a helper's arguments and reports whether its operations set, clear or read
// limits (and so need CAP_SYS_ADMIN); a batch that mixes them with others is an error. An agent
// (--helper-keep-alive) runs its batches through a stream: its annotation says which it runs.
func needsAdmin(p *v1.Pod, args []string) (bool, error) {
	if slices.Equal(args, []string{"helper", "--serve"}) {
		switch kind := p.Annotations[nodeexec.AnnAgent]; kind {
		case "limits", "directories":
			return kind == "limits", nil
		default:
			return false, fmt.Errorf("an agent whose %s is %q", nodeexec.AnnAgent, kind)
		}
	}
	if len(args) < 2 || args[0] != "helper" {
		return false, fmt.Errorf("arguments %q are not a helper's", args)
	}
	ops, err := volumeop.ParseBatchArgs(args[2:])
	if err != nil {
		return false, err
	}
	admin := 0
	for _, op := range ops {
		if op.NeedsAdmin() {
			admin++
		}
	}
	if admin != 0 && admin != len(ops) {
		return false, fmt.Errorf("%d of its %d operations need CAP_SYS_ADMIN: they share a pod with the others", admin, len(ops))
	}
	return admin != 0, nil
}
