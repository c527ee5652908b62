//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The monitoring kit, as a user loads it.
const (
	monitoringDir = "../manifests/monitoring"
	// promFor replaces every alert's for: in the test's copy of the rules, so that an alert
	// fires within the case instead of after 5 or 15 minutes.
	promFor = "4s"
	// promWindow stands for the dashboard's $__rate_interval: with a scrape every 2 s, a minute
	// holds enough samples for every rate.
	promWindow = "1m"
)

// testPrometheus: Debian's Prometheus server scrapes dirpv's replicas with the alerting rules
// loaded (for: shortened). After a burst of claims of every backend (hostPath through the nodes'
// agents, NFS mount and direct, a size-enforced volume resized, deletions) and a fault (the NFS
// server stopped while claims are made, a volume deleted and another recycled),
// DirpvNFSServersSilent and DirpvProvisioningFailures are seen firing in /api/v1/alerts, and
// every dashboard query and alert expression parses and names only metrics that Prometheus
// scraped from dirpv; every dashboard query returns series (but those on kube-state-metrics,
// which this cluster does not run).
func testPrometheus(t *testing.T) {
	prom := startPrometheus(t)
	prom.waitTargets(t, 2)
	g := findGanesha(t)
	mountBtrfs(t)
	ns := namespace(t)
	onNode1 := selectedNode("node1") // the btrfs is this machine's, node1's

	// The burst: every backend, size enforcement and a resize, deletions.
	var names []string
	for i := range 4 {
		names = append(names, claim(t, ns, fmt.Sprintf("hp-%d", i), "dirpv-hostpath", onNode1).Name,
			claim(t, ns, fmt.Sprintf("nfs-%d", i), "e2e-nfs").Name,
			claim(t, ns, fmt.Sprintf("direct-%d", i), "e2e-nfs-direct").Name)
	}
	names = append(names, claim(t, ns, "quota", "e2e-enforce", sized("16Mi"), onNode1).Name,
		claim(t, ns, "recycled", "e2e-recycle-nfs-direct").Name)
	pvs := map[string]*v1.PersistentVolume{}
	for _, name := range names {
		pvs[name] = bound(t, ns, name)
	}
	if err := resizeClaim(ns, "quota", "32Mi"); err != nil {
		t.Fatal(err)
	}
	resized(t, ns, "quota", "32Mi")
	for _, name := range []string{"hp-0", "hp-1", "nfs-0", "direct-0"} {
		deleteClaim(t, ns, name)
		pvGone(t, pvs[name].Name)
	}
	prom.waitSeries(t, `dirpv_volume_used_bytes{persistentvolumeclaim="quota", namespace="`+ns+`"}`)

	// The fault: the NFS server stops while claims of it are made, one of its volumes is
	// deleted and another released for recycling.
	running := false
	g.stop(t)
	t.Cleanup(func() {
		if !running { // never leave the cluster's NFS server stopped
			g.cont(t)
		}
	})
	createClaims(t, client, ns, faultClassDirect, "down", 3)
	for _, name := range []string{"direct-1", "recycled"} {
		if err := client.CoreV1().PersistentVolumeClaims(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, alert := range []string{"DirpvNFSServersSilent", "DirpvProvisioningFailures"} {
		labels := prom.waitFiring(t, alert)
		t.Logf("%s firing: %v", alert, labels)
	}
	prom.waitSeries(t, `controller_persistentvolume_delete_failed_total{class="e2e-nfs-direct"}`)
	prom.waitSeries(t, `dirpv_recycles_total{result="error"}`)

	scraped := prom.names(t)
	checkDashboard(t, prom, scraped)
	checkAlertExprs(t, prom, scraped)

	// The server answers again; the fault's claims and volumes go with the namespace (on the
	// provisioner library's backoff, which may be minutes after a few failures). The
	// size-enforced volume goes now, before its btrfs is unmounted.
	g.cont(t)
	running = true
	deleteClaim(t, ns, "quota")
	pvGone(t, pvs["quota"].Name)
}

// selectedNode is the scheduler's choice of node for a WaitForFirstConsumer claim, made by hand:
// its volume is provisioned without a pod.
func selectedNode(node string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		metav1.SetMetaDataAnnotation(&c.ObjectMeta, "volume.kubernetes.io/selected-node", node)
	}
}

// grafanaVars are the dashboard's variables and the values a query gets in this test.
var grafanaVars = strings.NewReplacer("$__rate_interval", promWindow, "$job", "dirpv")

// externalMetric names the metrics of other exporters that the kit reads (kube-state-metrics').
var externalMetric = regexp.MustCompile(`\bkube_[a-z_]+`)

// metricName finds the names of dirpv's metrics, the provisioner library's (controller_*) and the
// process's in a query; up is Prometheus's own.
var metricName = regexp.MustCompile(`\b(?:dirpv|controller|process|go)_[a-z0-9_]+`)

// checkDashboard runs every panel's query: each parses, names only scraped metrics and returns
// series (those on kube-state-metrics excepted).
func checkDashboard(t *testing.T, prom *prometheus, scraped map[string]bool) {
	var dash struct{ Panels []dashboardPanel }
	b, err := os.ReadFile(filepath.Join(monitoringDir, "dirpv-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	queries, external := 0, 0
	var panels []dashboardPanel
	for _, p := range dash.Panels { // a collapsed row holds its panels
		panels = append(append(panels, p), p.Panels...)
	}
	for _, p := range panels {
		for _, target := range p.Targets {
			queries++
			q := grafanaVars.Replace(target.Expr)
			what := fmt.Sprintf("panel %q query %s", p.Title, target.RefID)
			unknownNames(t, what, q, scraped)
			n, err := prom.query(q)
			switch {
			case err != nil:
				t.Errorf("%s: %v\n%s", what, err, q)
			case externalMetric.MatchString(q):
				external++
				t.Logf("%s: %d series (needs kube-state-metrics, not in this cluster)", what, n)
			case n == 0:
				t.Errorf("%s returned no series:\n%s", what, q)
			}
		}
	}
	if queries < 20 {
		t.Errorf("the dashboard has %d queries; did its format change?", queries)
	}
	t.Logf("dashboard: %d queries parsed and named scraped metrics, %d returned series (%d need kube-state-metrics)", queries, queries-external, external)
}

// dashboardPanel is what the test reads of a Grafana panel (a row's Panels when collapsed).
type dashboardPanel struct {
	Title   string
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string
	}
	Panels []dashboardPanel
}

// checkAlertExprs evaluates every alert's expression: each parses and names only scraped
// metrics (an expression returns series only while its alert fires; the firing ones are
// checked in /api/v1/alerts).
func checkAlertExprs(t *testing.T, prom *prometheus, scraped map[string]bool) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string
				Expr  string
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(monitoringDir, "dirpv-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			unknownNames(t, "alert "+r.Alert, r.Expr, scraped)
			n, err := prom.query(r.Expr)
			if err != nil {
				t.Errorf("alert %s: %v\n%s", r.Alert, err, r.Expr)
				continue
			}
			t.Logf("alert %s: expression returns %d series", r.Alert, n)
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts in dirpv-alerts.yaml; did its format change?", alerts)
	}
}

// unknownNames fails the test for each metric q names that Prometheus has not scraped.
func unknownNames(t *testing.T, what, q string, scraped map[string]bool) {
	t.Helper()
	for _, name := range metricName.FindAllString(q, -1) {
		if !scraped[name] {
			t.Errorf("%s names %s, which dirpv does not export:\n%s", what, name, q)
		}
	}
}

// prometheus is a Prometheus server this test runs, and its HTTP API.
type prometheus struct {
	url string
	log string
}

// startPrometheus runs Debian's Prometheus server, scraping dirpv's replicas as job dirpv with
// the alerting rules loaded (a copy whose for: is promFor); it is stopped when the test ends.
// Debian builds Prometheus without kubernetes_sd_configs, so the targets are the replicas' pod
// IPs, read once (this case restarts none), labelled pod as the scrape config of
// docs/monitoring.md labels them.
func startPrometheus(t *testing.T) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join(monitoringDir, "dirpv-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	forLine := regexp.MustCompile(`(?m)^(\s+for:) \S+$`)
	if n := len(forLine.FindAll(rules, -1)); n < 10 {
		t.Fatalf("dirpv-alerts.yaml: %d lines \"for: <duration>\" to shorten; did its format change?", n)
	}
	rules = forLine.ReplaceAll(rules, []byte("${1} "+promFor))
	rulesFile := filepath.Join(dir, "dirpv-alerts.yaml")
	if err := os.WriteFile(rulesFile, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	var targets []any
	for _, pod := range replicas(t) {
		targets = append(targets, map[string]any{
			"targets": []string{net.JoinHostPort(pod.Status.PodIP, "8080")},
			"labels":  map[string]string{"pod": pod.Name},
		})
	}
	cfg := map[string]any{
		"global":     map[string]any{"scrape_interval": "2s", "evaluation_interval": "2s"},
		"rule_files": []string{rulesFile},
		"scrape_configs": []any{map[string]any{
			"job_name": "dirpv", "static_configs": targets,
		}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}

	addr := freeAddress(t)
	p := &prometheus{url: "http://" + addr, log: filepath.Join(dir, "prometheus.log")}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("prometheus", "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("prometheus (Debian's prometheus package, hack/install-deps.sh): %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	poll(t, "Prometheus ready at "+p.url, func(ctx context.Context) (bool, error) {
		select {
		case err := <-exited:
			exited <- err
			p.dumpLog(t)
			return false, fmt.Errorf("prometheus exited: %v", err)
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return p
}

// replicas are dirpv's running replicas, once both have an IP.
func replicas(t *testing.T) []v1.Pod {
	t.Helper()
	var pods []v1.Pod
	poll(t, "two running replicas of dirpv", func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(dirpvNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=dirpv,app.kubernetes.io/component=provisioner"})
		if err != nil {
			return false, nil
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.Status.Phase == v1.PodRunning && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		return len(pods) == 2, nil
	})
	return pods
}

// freeAddress is a loopback address with a port nothing listens on.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (p *prometheus) dumpLog(t *testing.T) {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("prometheus log (last lines):\n%s", strings.Join(lines, "\n"))
}

// api GETs an endpoint of Prometheus's HTTP API (params in the query string) and decodes its
// data into data; a parse error of a query comes back as the error.
func (p *prometheus) api(ctx context.Context, path string, params url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status    string
		ErrorType string
		Error     string
		Data      json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, body.ErrorType, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// query evaluates q now and returns how many series (or samples) it gave.
func (p *prometheus) query(q string) (int, error) {
	var data struct {
		ResultType string
		Result     json.RawMessage
	}
	if err := p.api(context.Background(), "/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return 0, err
	}
	if data.ResultType != "vector" && data.ResultType != "matrix" {
		return 0, fmt.Errorf("result of type %s, want a vector", data.ResultType)
	}
	var series []json.RawMessage
	err := json.Unmarshal(data.Result, &series)
	return len(series), err
}

// waitSeries waits until q returns series.
func (p *prometheus) waitSeries(t *testing.T, q string) {
	t.Helper()
	poll(t, "series of "+q+" in Prometheus", func(context.Context) (bool, error) {
		n, err := p.query(q)
		return err == nil && n > 0, nil
	})
}

// waitTargets waits until n targets of job dirpv are up: both replicas found and scraped.
func (p *prometheus) waitTargets(t *testing.T, n int) {
	t.Helper()
	p.waitSeries(t, fmt.Sprintf(`count(up{job="dirpv"} == 1) == %d`, n))
}

// names are the metric names Prometheus scraped.
func (p *prometheus) names(t *testing.T) map[string]bool {
	t.Helper()
	var names []string
	if err := p.api(context.Background(), "/api/v1/label/__name__/values", nil, &names); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return set
}

// waitFiring waits until Prometheus reports alert firing and returns its labels.
func (p *prometheus) waitFiring(t *testing.T, alert string) map[string]string {
	t.Helper()
	var labels map[string]string
	var states []string
	pollFor(t, 3*time.Minute, alert+" firing in /api/v1/alerts", func(ctx context.Context) (bool, error) {
		var data struct {
			Alerts []struct {
				Labels map[string]string
				State  string
			}
		}
		if err := p.api(ctx, "/api/v1/alerts", nil, &data); err != nil {
			return false, nil
		}
		states = states[:0]
		for _, a := range data.Alerts {
			states = append(states, a.Labels["alertname"]+"="+a.State)
			if a.Labels["alertname"] == alert && a.State == "firing" {
				labels = a.Labels
				return true, nil
			}
		}
		return false, nil
	})
	sort.Strings(states)
	t.Logf("alerts when %s fired: %v", alert, states)
	return labels
}
