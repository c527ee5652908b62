//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// fsGroup is the group the pods of testLocalVolumeType run with.
const fsGroup = 4321

// statsWait bounds the wait for volume stats: the kubelet measures volumes once a minute.
const statsWait = 3 * time.Minute

// asUserWithFSGroup runs a pod's containers as user and group 1000 with fsGroup.
func asUserWithFSGroup(p *v1.Pod) {
	p.Spec.SecurityContext = &v1.PodSecurityContext{
		RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(1000)), FSGroup: ptr(int64(fsGroup)),
	}
}

// volumeStat is the value of the kubelet's sample of metric for the claim ns/name on node, and
// whether there is one.
func volumeStat(ctx context.Context, node, metric, ns, name string) (float64, string, bool, error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy/metrics").DoRaw(ctx)
	if err != nil {
		return 0, "", false, err
	}
	claimLabel := fmt.Sprintf("persistentvolumeclaim=%q", name)
	nsLabel := fmt.Sprintf("namespace=%q", ns)
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") || !strings.Contains(line, claimLabel) || !strings.Contains(line, nsLabel) {
			continue
		}
		value := line[strings.LastIndexByte(line, ' ')+1:]
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, line, true, fmt.Errorf("%s: %v", line, err)
		}
		return f, line, true, nil
	}
	return 0, "", false, sc.Err()
}

// podVolumes lists the volumes the kubelet of node has measured in the pod ns/name (its stats
// summary), and whether it has measured the pod at all.
func podVolumes(ctx context.Context, node, ns, name string) ([]string, bool, error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy/stats/summary").DoRaw(ctx)
	if err != nil {
		return nil, false, err
	}
	var summary struct {
		Pods []struct {
			PodRef struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"podRef"`
			Volume []struct {
				Name string `json:"name"`
			} `json:"volume"`
		} `json:"pods"`
	}
	if err := json.Unmarshal(raw, &summary); err != nil {
		return nil, false, err
	}
	for _, p := range summary.Pods {
		if p.PodRef.Namespace == ns && p.PodRef.Name == name {
			var names []string
			for _, v := range p.Volume {
				names = append(names, v.Name)
			}
			return names, len(names) > 0, nil
		}
	}
	return nil, false, nil
}

// testLocalVolumeType: a class with volumeType: local makes local PVs of its directories, pinned
// to their node like hostPath ones; the kubelet applies a pod's fsGroup to them (so a non-root
// pod can write to a 0770 volume) and reports their stats, which it does for neither with the
// hostPath PVs of the default class. dirpv reclaims them like hostPath volumes.
func testLocalVolumeType(t *testing.T) {
	ns := namespace(t)
	claim(t, ns, "plain", "dirpv-hostpath")
	pod(t, ns, "plain-app", "plain", onNode("node1"), asUserWithFSGroup)
	plain := bound(t, ns, "plain")
	claim(t, ns, "data", "e2e-local")
	pod(t, ns, "app", "data", onNode("node1"), asUserWithFSGroup)
	pv := bound(t, ns, "data")

	if pv.Spec.Local == nil || pv.Spec.HostPath != nil || !strings.HasPrefix(pv.Spec.Local.Path, basePath+"/local/") {
		t.Fatalf("PV %s source %+v, want local only, below %s/local", pv.Name, pv.Spec.PersistentVolumeSource, basePath)
	}
	dir := pv.Spec.Local.Path // node1's files are this machine's
	if na := pv.Spec.NodeAffinity; na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) != 1 ||
		!reflect.DeepEqual(na.Required.NodeSelectorTerms[0].MatchExpressions, []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{"node1"}}}) {
		t.Errorf("PV %s node affinity %+v, want %s In [node1]", pv.Name, na, v1.LabelHostname)
	}
	if plain.Spec.HostPath == nil {
		t.Fatalf("PV %s of dirpv-hostpath: source %+v, want hostPath", plain.Name, plain.Spec.PersistentVolumeSource)
	}

	if got := strings.TrimSpace(exec1(t, ns, "app", "stat -c %g /data")); got != strconv.Itoa(fsGroup) {
		t.Errorf("the local volume's group is %s, want the fsGroup %d", got, fsGroup)
	}
	if got := strings.TrimSpace(exec1(t, ns, "plain-app", "stat -c %g /data")); got == strconv.Itoa(fsGroup) {
		t.Errorf("the hostPath volume's group is the fsGroup %s: the kubelet applied it", got)
	}
	out, size := write(t, ns, "app", "a", 4)
	if size != 4*mib {
		t.Fatalf("user 1000 writing 4 MiB into the 0770 local volume: %d bytes; dd said:\n%s", size, out)
	}
	if got := strings.TrimSpace(exec1(t, ns, "app", "stat -c %g /data/a")); got != strconv.Itoa(fsGroup) {
		t.Errorf("a new file's group is %s, want the fsGroup %d", got, fsGroup)
	}
	write(t, ns, "plain-app", "a", 4)

	// Wait for the local claim's stats, and for the kubelet to have measured the hostPath
	// claim's pod (its service account token volume): its volume "data" is then known to have
	// no stats.
	const metric = "kubelet_volume_stats_used_bytes"
	start := time.Now()
	var line string
	var plainVolumes []string
	var last error
	pollFor(t, statsWait, metric+" of "+ns+"/data", func(ctx context.Context) (bool, error) {
		v, l, ok, err := volumeStat(ctx, "node1", metric, ns, "data")
		if err != nil || !ok || v <= 0 {
			last = err
			return false, nil
		}
		line = l
		var measured bool
		plainVolumes, measured, err = podVolumes(ctx, "node1", ns, "plain-app")
		last = err
		return measured, nil
	})
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil {
		t.Logf("after %v: %s (the filesystem of %s has %d bytes in use)", time.Since(start).Round(time.Second), line, dir, (fs.Blocks-fs.Bfree)*uint64(fs.Bsize))
	}
	if last != nil {
		t.Logf("errors on the way: %v", last)
	}
	if slices.Contains(plainVolumes, "data") {
		t.Errorf("the kubelet measured the hostPath volume of pod plain-app (volumes %v)", plainVolumes)
	}
	if _, l, ok, err := volumeStat(context.Background(), "node1", metric, ns, "plain"); err != nil {
		t.Error(err)
	} else if ok {
		t.Errorf("the kubelet reports stats of the hostPath volume: %s", l)
	}
	t.Logf("hostPath claim's pod measured, volumes %v, no %s sample", plainVolumes, metric)

	deletePod(t, ns, "app")
	deleteClaim(t, ns, "data")
	pvGone(t, pv.Name)
	waitGone(t, dir)
	deletePod(t, ns, "plain-app")
	deleteClaim(t, ns, "plain")
	pvGone(t, plain.Name)
	waitGone(t, pvPath(plain))
}
