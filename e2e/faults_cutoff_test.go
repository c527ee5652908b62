//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testCutOffLeader: the leader is cut off from the apiserver for its PV creations and Lease
// renewals (a ValidatingAdmissionPolicy denies them for its pod only: what a replica stuck on a
// broken apiserver connection sees) just as it provisions a claim. It makes the directory, fails
// to save the PV, loses the Lease after the renew deadline and, as dirpv's elector does, keeps
// running and campaigns again. The other replica takes over, provisions the same claim (same PV
// name: the directory and its marker are reused) and the claim is Bound. Whatever the old
// leader's library worker does with its unsaved PV afterwards, it must not delete that
// directory: the library's default blocking PV store did, 40 s later (see cmd/dirpv/main.go).
//
// It passes when the directory and its marker are still there once the old leader's
// provisioning attempt has ended (its provision metrics say so).
func testCutOffLeader(t *testing.T) {
	ctx := context.Background()
	faultsOverlay(t)
	ns := namespace(t)
	old := holderPod(leader(t))
	oldPod, err := client.CoreV1().Pods(dirpvNamespace).Get(ctx, old, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	attempts := func() int {
		n, err := provisionAttempts(oldPod.Status.PodIP, faultClassNFS)
		if err != nil {
			t.Fatalf("metrics of %s: %v", old, err)
		}
		return n
	}
	before := attempts()

	cutOff(t, old)
	claim(t, ns, "data", faultClassNFS, func(c *v1.PersistentVolumeClaim) {
		c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
	})
	pv := bound(t, ns, "data")
	by := holderPod(leader(t))
	dir := onExport(t, pv)
	t.Logf("claim bound to %s by %s; the cut-off %s made %s too", pv.Name, by, old, dir)
	if by == old {
		t.Fatalf("the cut-off leader %s still leads", old)
	}
	pollFor(t, 3*time.Minute, "the cut-off replica's provisioning attempt to end", func(context.Context) (bool, error) {
		return attempts() > before, nil
	})
	m, err := readMarkerFile(dir)
	if fi, serr := os.Stat(dir); serr != nil || !fi.IsDir() || err != nil || m.PV != pv.Name {
		t.Errorf("PV %s is Bound, but its directory %s: %v, marker %+v %v (the replica that lost the Lease deleted it)", pv.Name, dir, serr, m, err)
	}
}

// cutOff denies PV creations and Lease updates to one provisioner pod, until the test ends.
func cutOff(t *testing.T, pod string) {
	t.Helper()
	ctx := context.Background()
	name := "e2e-cut-off-" + pod
	fail := admissionv1.Fail
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{
				{RuleWithOperations: admissionv1.RuleWithOperations{Operations: []admissionv1.OperationType{admissionv1.Create},
					Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"persistentvolumes"}}}},
				{RuleWithOperations: admissionv1.RuleWithOperations{Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule: admissionv1.Rule{APIGroups: []string{"coordination.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"leases"}}}},
			}},
			Validations: []admissionv1.Validation{{
				Expression: fmt.Sprintf(`!('authentication.kubernetes.io/pod-name' in request.userInfo.extra) || !(%q in request.userInfo.extra['authentication.kubernetes.io/pod-name'])`, pod),
				Message:    "e2e: this replica is cut off from the apiserver",
			}},
		},
	}
	if _, err := client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}},
	}
	if _, err := client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, name, metav1.DeleteOptions{})
		_ = client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, name, metav1.DeleteOptions{})
	})
	// The policy is in force once the leader's Lease renewals fail: it stops leading.
	pollFor(t, time.Minute, "the policy to stop "+pod+" renewing the Lease", func(ctx context.Context) (bool, error) {
		lease, err := client.CoordinationV1().Leases(dirpvNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		return err == nil && lease.Spec.RenewTime != nil && time.Since(lease.Spec.RenewTime.Time) > time.Second, nil
	})
}

// provisionAttempts sums the library's finished provisioning attempts (succeeded or failed) for
// class, from the /metrics of the provisioner pod at ip.
func provisionAttempts(ip, class string) (int, error) {
	resp, err := http.Get("http://" + filepath.Join(ip+":8080", "metrics"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if (strings.HasPrefix(line, "controller_persistentvolumeclaim_provision_total{") ||
			strings.HasPrefix(line, "controller_persistentvolumeclaim_provision_failed_total{")) &&
			strings.Contains(line, `class="`+class+`"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			if err != nil {
				return 0, fmt.Errorf("%q: %w", line, err)
			}
			n += int(v)
		}
	}
	return n, sc.Err()
}
