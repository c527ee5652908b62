//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Where the test cluster keeps things; see testdata/install.
const (
	dirpvNamespace = "dirpv"
	basePath       = "/var/lib/dirpv"
	// nfsServer and exportDir: the export nfs-ganesha serves in the cluster (hack/nfs-server.sh).
	// In mount mode dirpv is given the export's backing directory, which every node shares
	// (node2's /var/lib is its own), mounted into its pods wherever they run.
	nfsServer = "10.0.0.1"
	exportDir = "/srv/dirpv-nfs/export"
	busybox   = "dirpv.io/busybox:1"
	leaseName = "dirpv.io-provisioner"
	timeout   = 2 * time.Minute
)

var client kubernetes.Interface

func TestMain(m *testing.M) {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: KUBECONFIG:", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client = kubernetes.NewForConfigOrDie(cfg)
	os.Exit(m.Run())
}

// kubectl runs kubectl and returns its standard output, failing the test on error. Standard
// error stays apart: kubectl exec prints stream warnings there that are not the command's output.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("kubectl", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// kubectlErr runs kubectl for diagnostics: both outputs, and the error.
func kubectlErr(args ...string) (string, error) {
	out, err := exec.Command("kubectl", args...).CombinedOutput()
	return string(out), err
}

// install applies an overlay of testdata and waits until the Deployment has rolled out.
func install(t *testing.T, overlay string) {
	t.Helper()
	kubectl(t, "apply", "-k", filepath.Join("testdata", overlay))
	kubectl(t, "-n", dirpvNamespace, "rollout", "status", "deployment/dirpv", "--timeout=3m")
}

// namespace creates a namespace for one test; deleting it at the end reclaims its claims.
func namespace(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	name := "e2e-" + rand.String(5)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpDiagnostics(t, name)
		}
		_ = client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	// Pods are refused until the service-account controller made the default account.
	poll(t, "default ServiceAccount in "+name, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

func dumpDiagnostics(t *testing.T, ns string) {
	for _, args := range [][]string{
		{"get", "pvc,pods,events", "-n", ns, "-o", "wide"},
		{"get", "pv,sc"},
		{"-n", dirpvNamespace, "get", "pods,events", "-o", "wide"},
		{"-n", dirpvNamespace, "logs", "-l", "app.kubernetes.io/component=provisioner", "--tail=60", "--prefix"},
	} {
		out, _ := kubectlErr(args...)
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// poll waits for cond, failing the test after the suite's timeout.
func poll(t *testing.T, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	pollFor(t, timeout, what, cond)
}

func pollFor(t *testing.T, d time.Duration, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, d, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// claim creates a PVC; an empty class means the cluster default.
func claim(t *testing.T, ns, name, class string, mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	t.Helper()
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if class != "" {
		pvc.Spec.StorageClassName = &class
	}
	for _, m := range mutate {
		m(pvc)
	}
	pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pvc
}

// bound waits until the claim is Bound and returns its PV.
func bound(t *testing.T, ns, name string) *v1.PersistentVolume {
	t.Helper()
	var pv *v1.PersistentVolume
	poll(t, "claim "+ns+"/"+name+" bound", func(ctx context.Context) (bool, error) {
		pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != v1.ClaimBound {
			return false, nil
		}
		pv, err = client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		return err == nil, nil
	})
	return pv
}

// pod starts a busybox pod with the claim mounted at /data and waits until it runs; mutate
// may change it first (onNode, say).
func pod(t *testing.T, ns, name, claimName string, mutate ...func(*v1.Pod)) {
	t.Helper()
	startPod(t, ns, name, claimName, mutate...)
	podRunning(t, ns, name)
}

// startPod is pod without the wait: for a pod whose claim is not expected to be provisioned.
func startPod(t *testing.T, ns, name, claimName string, mutate ...func(*v1.Pod)) {
	t.Helper()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(0)),
			Containers: []v1.Container{{
				Name: "app", Image: busybox, ImagePullPolicy: v1.PullNever,
				Command:      []string{"sleep", "3600"},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claimName},
			}}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// onNode schedules a pod to node through a node selector. (Not spec.nodeName: a pod bound
// without the scheduler never gets its WaitForFirstConsumer claims provisioned.)
func onNode(node string) func(*v1.Pod) {
	return func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{v1.LabelHostname: node} }
}

func podRunning(t *testing.T, ns, name string) {
	t.Helper()
	poll(t, "pod "+ns+"/"+name+" running", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodReady && c.Status == v1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

// deletePod deletes a pod and waits until it is gone.
func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	err := client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	poll(t, "pod "+ns+"/"+name+" gone", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// deleteClaim deletes a claim and waits until it is gone.
func deleteClaim(t *testing.T, ns, name string) {
	t.Helper()
	if err := client.CoreV1().PersistentVolumeClaims(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "claim "+ns+"/"+name+" gone", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// storageClass makes a class for this test only and deletes it when the test ends.
func storageClass(t *testing.T, sc *storagev1.StorageClass) string {
	t.Helper()
	if _, err := client.StorageV1().StorageClasses().Create(context.Background(), sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.StorageV1().StorageClasses().Delete(context.Background(), sc.Name, metav1.DeleteOptions{})
	})
	return sc.Name
}

// dirpvClass makes a class of dirpv's, with params, for this test only (see storageClass).
func dirpvClass(t *testing.T, name string, params map[string]string) string {
	t.Helper()
	return storageClass(t, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "dirpv.io/provisioner", Parameters: params})
}

// command runs name with args on this machine and returns its output, trimmed; a command that
// fails fails the test, with its output.
func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// dropFinalizers is a merge patch that takes every finalizer off an object.
var dropFinalizers = []byte(`{"metadata":{"finalizers":null}}`)

// pvGone waits until the PV no longer exists.
// caughtUp returns once dirpv has provisioned and deleted a volume of class for a claim made
// now: by then it has handled every change to PVs and claims made before the call, so a check
// that something did NOT happen may follow.
func caughtUp(t *testing.T, ns, class string) {
	t.Helper()
	name := "sentinel-" + rand.String(5)
	claim(t, ns, name, class)
	pv := bound(t, ns, name)
	deleteClaim(t, ns, name)
	pvGone(t, pv.Name)
}

func pvGone(t *testing.T, name string) {
	t.Helper()
	poll(t, "PV "+name+" gone", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// exec runs a shell command in a pod's first container.
func exec1(t *testing.T, ns, pod, script string) string {
	t.Helper()
	return kubectl(t, "-n", ns, "exec", pod, "--", "sh", "-c", script)
}

// event waits for an event with reason on the named object whose message contains want.
func event(t *testing.T, ns, object, reason, want string) string {
	t.Helper()
	var msg string
	var seen []string
	poll(t, fmt.Sprintf("event %s on %s containing %q", reason, object, want), func(ctx context.Context) (bool, error) {
		evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + object})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == reason && strings.Contains(e.Message, want) {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

// onHost is where this machine sees path p of node: node1's files are this machine's own;
// another node's /var/lib (and /var/log, /run/containerd, /run/netns) is a directory of its own
// under the cluster's state (hack/node-up.sh).
func onHost(node, p string) string {
	if node == "node1" {
		return p
	}
	for _, private := range []string{"/var/lib", "/var/log", "/run/containerd", "/run/netns"} {
		if p == private || strings.HasPrefix(p, private+"/") {
			return filepath.Join(clusterDir(), "nodes", node, "root", p)
		}
	}
	return p
}

// hostDir is a hostPath PV's directory as this machine sees it, on whichever node it is.
func hostDir(pv *v1.PersistentVolume) string {
	return onHost(pvNode(pv), pvPath(pv))
}

// pvNode is the node a hostPath PV is pinned to.
func pvNode(pv *v1.PersistentVolume) string {
	return pv.Annotations["dirpv.io/node"]
}

// nodeNames lists the cluster's nodes, sorted.
func nodeNames(t *testing.T) []string {
	t.Helper()
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names
}

// needNodes skips the test on a cluster with fewer than n nodes (make e2e brings up two).
func needNodes(t *testing.T, n int) []string {
	t.Helper()
	names := nodeNames(t)
	if len(names) < n {
		t.Skipf("needs %d nodes, the cluster has %d (DIRPV_NODES=%d make e2e)", n, len(names), n)
	}
	return names
}

func pvPath(pv *v1.PersistentVolume) string {
	if pv.Spec.HostPath != nil {
		return pv.Spec.HostPath.Path
	}
	return pv.Spec.NFS.Path
}

// onExport is an nfs PV's directory on this machine: the server exports its directories
// under their own paths.
func onExport(t *testing.T, pv *v1.PersistentVolume) string {
	t.Helper()
	if pv.Spec.NFS == nil || pv.Spec.NFS.Server != nfsServer || !strings.HasPrefix(pv.Spec.NFS.Path, exportDir+"/") {
		t.Fatalf("PV %s: nfs source %+v", pv.Name, pv.Spec.NFS)
	}
	return pv.Spec.NFS.Path
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func waitGone(t *testing.T, p string) {
	t.Helper()
	poll(t, p+" removed", func(context.Context) (bool, error) { return !exists(p), nil })
}

// watchPods watches dirpv's pods with the label selector from a fresh list's resourceVersion (a
// watch without one asks the apiserver for a consistent read from its cache, which the test
// cluster's etcd 3.4 cannot serve).
func watchPods(t *testing.T, ctx context.Context, selector string) watch.Interface {
	t.Helper()
	pods := client.CoreV1().Pods(dirpvNamespace)
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func ptr[T any](v T) *T { return &v }

// parallelStatefulSet is a StatefulSet of replicas busybox pods named name (label app=name),
// started in parallel, each with a 1Gi ReadWriteOnce volume "data" at /data of class (nil: the
// default class).
func parallelStatefulSet(ns, name string, replicas int, class *string) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr(int32(replicas)),
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					TerminationGracePeriodSeconds: ptr(int64(0)),
					Containers: []v1.Container{{
						Name: "app", Image: busybox, ImagePullPolicy: v1.PullNever, Command: []string{"sleep", "3600"},
						VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
					}},
				},
			},
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: v1.PersistentVolumeClaimSpec{
					StorageClassName: class,
					AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}
