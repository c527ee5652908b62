package pathname

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"dirpv.io/dirpv/provisioner/config"
)

func data(labels, annotations map[string]string) Data {
	return Data{
		PVC: Claim{Namespace: "team-a", Name: "www-web-0", Labels: labels, Annotations: annotations},
		PV:  Volume{Name: "pvc-0a1b"},
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name        string
		pattern     string
		annotations map[string]string
		labels      map[string]string
		want        string
		wantErr     string
	}{
		{name: "default", pattern: config.DefaultPathPattern, want: "team-a-www-web-0-pvc-0a1b"},
		{name: "nested", pattern: "{{.PVC.Namespace}}/{{.PVC.Name}}", want: "team-a/www-web-0"},
		{name: "label", pattern: "{{.PVC.Labels.app}}/{{.PV.Name}}", labels: map[string]string{"app": "web"}, want: "web/pvc-0a1b"},
		{name: "annotation", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "data"}, want: "data"},
		{name: "missing label is an error", pattern: "{{.PVC.Labels.app}}", wantErr: "map has no entry"},
		{name: "unknown field", pattern: "{{.PVC.Spec}}", wantErr: "can't evaluate field Spec"},
		{name: "traversal", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "../../etc"}, wantErr: "escapes"},
		{name: "traversal inside", pattern: `a/{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "../../etc"}, wantErr: "escapes"},
		{name: "absolute", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "/etc"}, wantErr: "absolute"},
		{name: "root itself", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "."}, wantErr: "starts with"},
		{name: "parent", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": ".."}, wantErr: "escapes"},
		{name: "empty", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": ""}, wantErr: "empty"},
		{name: "empty component", pattern: `a/{{index .PVC.Annotations "dir"}}/b`, annotations: map[string]string{"dir": ""}, wantErr: "not clean"},
		{name: "trailing slash", pattern: `{{.PVC.Name}}/`, wantErr: "not clean"},
		{name: "hidden", pattern: `.{{.PVC.Name}}`, wantErr: "starts with"},
		{name: "marker name", pattern: `a/.b.dirpv`, wantErr: "starts with"},
		{name: "newline", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "a\nb"}, wantErr: "control"},
		{name: "backslash", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": `..\x`}, wantErr: "backslash"},
		{name: "long component", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": strings.Repeat("x", 201)}, wantErr: "longer than 200"},
		{name: "long path", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": strings.Repeat("x/", 600) + "x"}, wantErr: "longer than 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := config.ParsePathPattern(tt.pattern)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := Render(tmpl, data(tt.labels, tt.annotations))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Render = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// FuzzValidate checks that whatever Validate accepts stays strictly inside its root.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../a", "a/../..", "/x", ".", "a/./b", "a//b", ".x", "a\\..\\b", "x/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if Validate(p) != nil {
			return
		}
		if !filepath.IsLocal(p) {
			t.Fatalf("accepted non-local %q", p)
		}
		joined := filepath.Join("/root", p)
		if !strings.HasPrefix(joined, "/root/") {
			t.Fatalf("accepted %q escaping to %q", p, joined)
		}
		for _, c := range strings.Split(p, "/") {
			if c == "" || c == "." || c == ".." || strings.HasPrefix(c, ".") {
				t.Fatalf("accepted %q with component %q", p, c)
			}
		}
		if !errors.Is(Validate("../"+p), ErrUnsafe) {
			t.Fatalf("accepted ../%s", p)
		}
	})
}
