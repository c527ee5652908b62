//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"dirpv.io/dirpv/provisioner/nodeexec"
	"dirpv.io/dirpv/provisioner/volumefs"
	"dirpv.io/dirpv/provisioner/volumeop"
)

// testAdmissionPolicy: with the token of dirpv's ServiceAccount, as its leader pod holds it, the
// API server admits helper pods shaped as dirpv makes them and denies every other shape, any
// change of a pod's spec, and any exec but `dirpv helper --stream` into an agent, each with the
// rule's message (manifests/base/helper-policy.yaml). Pods are created with dry run: admission
// runs, nothing starts.
func testAdmissionPolicy(t *testing.T) {
	ctx := t.Context()
	leader := leaderPod(t)
	cfg, sa := dirpvToken(t, leader)
	var image string
	for _, c := range leader.Spec.Containers {
		if c.Name == "dirpv" {
			image = c.Image
		}
	}
	runner := &nodeexec.PodRunner{Namespace: dirpvNamespace, Image: image, PullPolicy: v1.PullNever,
		Owner: &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: leader.Name, UID: leader.UID, Controller: ptr(true)}}
	op := volumeop.Op{Kind: volumeop.Create, Path: "e2e-policy", Mode: 0o750, UID: -1, GID: -1,
		Owner: volumefs.Marker{PV: "pvc-e2e-policy", ClaimUID: "u", ClaimNamespace: "ns", ClaimName: "c"}}
	helper := func(mutate func(p *v1.Pod)) *v1.Pod {
		p := runner.Pod(leader.Spec.NodeName, basePath, []volumeop.Op{op})
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

	// The control: dirpv's own shape is admitted, or every "denied" below would prove nothing.
	if _, err := sa.CoreV1().Pods(dirpvNamespace).Create(ctx, helper(nil), dryRun); err != nil {
		t.Fatalf("a helper pod as dirpv makes it was refused: %v", err)
	}
	other := dirpvNamespace + "-nobody"
	denied := 0 // shapes tried
	for _, tc := range []struct {
		name   string
		mutate func(p *v1.Pod)
		rule   string
	}{
		{"privileged", func(p *v1.Pod) {
			p.Spec.Containers[0].SecurityContext.Privileged = ptr(true)
			p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil // privileged implies it
		}, "not privileged"},
		{"privilege escalation", func(p *v1.Pod) { p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true) }, "not privileged"},
		{"hostPath /", func(p *v1.Pod) { p.Spec.Volumes[0].HostPath.Path = "/" }, "mount one volume"},
		{"hostPath below the root", func(p *v1.Pod) { p.Spec.Volumes[0].HostPath.Path = basePath + "/x" }, "mount one volume"},
		{"another image", func(p *v1.Pod) { p.Spec.Containers[0].Image = busybox }, "own image"},
		{"sh as the command", func(p *v1.Pod) { p.Spec.Containers[0].Command = []string{"sh"} }, "`/dirpv helper`"},
		{"another dirpv command", func(p *v1.Pod) { p.Spec.Containers[0].Args = []string{"--kubeconfig=/data/x"} }, "`/dirpv helper`"},
		{"an extra volume", func(p *v1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "etc", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/etc"}}})
		}, "mount one volume"},
		{"a subPath", func(p *v1.Pod) { p.Spec.Containers[0].VolumeMounts[0].SubPath = "x" }, "mount one volume"},
		{"a second container", func(p *v1.Pod) {
			c := p.Spec.Containers[0]
			c.Name = "second"
			p.Spec.Containers = append(p.Spec.Containers, c)
		}, "one container"},
		{"an init container", func(p *v1.Pod) {
			c := p.Spec.Containers[0]
			c.Name = "init"
			p.Spec.InitContainers = []v1.Container{c}
		}, "one container"},
		{"host network", func(p *v1.Pod) { p.Spec.HostNetwork = true }, "no host namespace"},
		{"host PID", func(p *v1.Pod) { p.Spec.HostPID = true }, "no host namespace"},
		{"another capability", func(p *v1.Pod) {
			c := p.Spec.Containers[0].SecurityContext.Capabilities
			c.Add = append(c.Add, "NET_ADMIN")
		}, "drop every capability"},
		{"capabilities kept", func(p *v1.Pod) { p.Spec.Containers[0].SecurityContext.Capabilities.Drop = nil }, "drop every capability"},
		// The ServiceAccount admission plugin mounts the token as a second volume first.
		{"a token", func(p *v1.Pod) { p.Spec.AutomountServiceAccountToken = nil }, "mount one volume"},
		{"no node", func(p *v1.Pod) { p.Spec.NodeName = "" }, "name their node"},
		{"no owner", func(p *v1.Pod) { p.OwnerReferences = nil }, "owned by the dirpv pod"},
		{"owned by another pod", func(p *v1.Pod) { p.OwnerReferences[0].Name, p.OwnerReferences[0].UID = other, types.UID(other) }, "owned by the dirpv pod"},
	} {
		denied++
		_, err := sa.CoreV1().Pods(dirpvNamespace).Create(ctx, helper(tc.mutate), dryRun)
		if err == nil || !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("%s: created with dirpv's token: %v; want a denial naming %q", tc.name, err, tc.rule)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}

	// No pod's spec changes: not the leader's own image, not a helper's.
	denied++
	patch := []byte(`{"spec":{"containers":[{"name":"dirpv","image":"` + busybox + `"}]}}`)
	_, err := sa.CoreV1().Pods(dirpvNamespace).Patch(ctx, leader.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "changes no pod's spec") {
		t.Errorf("patching the leader's image with dirpv's token: %v; want a denial", err)
	}

	// Execs: an agent takes `dirpv helper --stream`, and nothing else; no other pod takes any.
	agent := runningAgent(t)
	exec := nodeexec.PodExec(cfg, sa, dirpvNamespace)
	stream := []string{"/dirpv", "helper", "--root=" + nodeexec.HelperMountPath, "--stream"}
	var out bytes.Buffer
	if err := exec(ctx, agent, stream, strings.NewReader(""), &out); err != nil {
		t.Errorf("dirpv's own exec into agent %s was refused: %v", agent, err)
	}
	for _, tc := range []struct {
		pod string
		cmd []string
	}{
		{agent, []string{"sh"}},
		{agent, []string{"/dirpv", "helper", "--root=/", "--stream"}},
		{agent, []string{"/dirpv", "helper", "--root=" + nodeexec.HelperMountPath, "create", "--path=x", "--pv=p"}},
		{leader.Name, stream},
	} {
		denied++
		err := exec(ctx, tc.pod, tc.cmd, strings.NewReader(""), &out)
		if err == nil || !strings.Contains(err.Error(), "dirpv execs only") {
			t.Errorf("exec %q into %s with dirpv's token: %v; want a denial", tc.cmd, tc.pod, err)
		}
	}
	reliability("admission-policy", "denied-shapes", denied, "result", map[bool]string{true: "fail", false: "ok"}[t.Failed()])
}

// dirpvToken returns a client configuration and a client with the token of dirpv's
// ServiceAccount bound to its pod p, as p's own token is: only the API server's address and CA
// of the admin's configuration are kept.
func dirpvToken(t *testing.T, p *v1.Pod) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	tr, err := client.CoreV1().ServiceAccounts(dirpvNamespace).CreateToken(t.Context(), p.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr[int64](600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: admin.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: admin.CAFile, CAData: admin.CAData}}
	return cfg, kubernetes.NewForConfigOrDie(cfg)
}

// runningAgent returns the name of a running helper agent, making one with a hostPath claim if
// none runs.
func runningAgent(t *testing.T) string {
	t.Helper()
	find := func(ctx context.Context) (string, error) {
		pods, err := client.CoreV1().Pods(dirpvNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=helper"})
		if err != nil {
			return "", err
		}
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, "dirpv-agent-") && p.Status.Phase == v1.PodRunning && p.DeletionTimestamp == nil {
				return p.Name, nil
			}
		}
		return "", nil
	}
	ns := namespace(t)
	claim(t, ns, "data", "dirpv-hostpath")
	pod(t, ns, "app", "data")
	bound(t, ns, "data")
	var name string
	poll(t, "a running helper agent", func(ctx context.Context) (bool, error) {
		var err error
		name, err = find(ctx)
		return name != "", err
	})
	return name
}
