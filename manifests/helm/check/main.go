// Command check decodes the Prometheus Operator objects that `helm template` renders (on standard
// input) into the operator's own API types, strictly: a field the operator does not know, or a
// value of the wrong type, fails. It is a module of its own so that the operator's API module
// stays out of dirpv's go.mod. manifests/helm_test.go runs it.
//
// usage: helm template ... | check KIND...
// Each KIND named must be rendered exactly once.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Stdin, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		os.Exit(1)
	}
}

// typed makes the operator's type for a kind it checks.
var typed = map[string]func() any{
	"PodMonitor":     func() any { return &monitoringv1.PodMonitor{} },
	"PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

func run(in io.Reader, want []string) error {
	seen := map[string]int{}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(in))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		mk, ok := typed[meta.Kind]
		if !ok {
			continue
		}
		if meta.APIVersion != monitoringv1.SchemeGroupVersion.String() {
			return fmt.Errorf("%s: apiVersion %q, want %q", meta.Kind, meta.APIVersion, monitoringv1.SchemeGroupVersion)
		}
		if err := yaml.UnmarshalStrict(doc, mk()); err != nil {
			return fmt.Errorf("%s: %w", meta.Kind, err)
		}
		seen[meta.Kind]++
	}
	for _, k := range want {
		if _, ok := typed[k]; !ok {
			return fmt.Errorf("%s: not a kind this checks", k)
		}
		if seen[k] != 1 {
			return fmt.Errorf("%s: rendered %d times, want once", k, seen[k])
		}
	}
	return nil
}
