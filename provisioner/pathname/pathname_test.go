package pathname

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
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
		{name: "nested", pattern: "{{.PVC.Namespace}}/{{.PVC.Name}}", want: "team-a/www-web-0"},
		{name: "label", pattern: "{{.PVC.Labels.app}}/{{.PV.Name}}", labels: map[string]string{"app": "web"}, want: "web/pvc-0a1b"},
		{name: "annotation", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "data"}, want: "data"},
		{name: "label by index", pattern: `x{{index .PVC.Labels "app"}}/{{.PVC.Name}}`, labels: map[string]string{"app": "web"}, want: "xweb/www-web-0"},
		{name: "annotation key with a slash", pattern: `{{index .PVC.Annotations "example.com/team"}}/{{.PVC.Name}}`,
			annotations: map[string]string{"example.com/team": "blue"}, want: "blue/www-web-0"},
		{name: "empty label value is not missing", pattern: `x{{index .PVC.Labels "app"}}`, labels: map[string]string{"app": ""}, want: "x"},
		// A missing key fails even inside with, if and or (cases below). A pattern renders something
		// for a missing key only when its author chooses so explicitly: by testing the whole map with
		// if, or by ranging over it and comparing keys.
		{name: "range chooses the missing case", pattern: `x{{range $k, $v := .PVC.Labels}}{{if eq $k "app"}}-{{$v}}{{end}}{{end}}`, want: "x"},
		{name: "if chooses the missing case", pattern: `{{if .PVC.Labels}}{{.PVC.Labels.app}}{{else}}none{{end}}`, want: "none"},
		{name: "missing label is an error", pattern: "{{.PVC.Labels.app}}", wantErr: "map has no entry"},
		{name: "missing label field in with", pattern: "{{with .PVC.Labels.app}}{{.}}{{end}}x", wantErr: `map has no entry for key "app"`},
		{name: "missing label by index", pattern: `x{{index .PVC.Labels "team"}}/{{.PVC.Name}}`, labels: map[string]string{"app": "web"}, wantErr: `label "team" is not set on the claim`},
		{name: "missing label on a claim without labels", pattern: `x{{index .PVC.Labels "team"}}`, wantErr: `label "team" is not set on the claim`},
		{name: "missing annotation", pattern: `x{{index .PVC.Annotations "example.com/team"}}`, wantErr: `annotation "example.com/team" is not set on the claim`},
		{name: "missing annotation in with", pattern: `{{with index .PVC.Annotations "dir"}}{{.}}{{else}}x{{end}}`, wantErr: `annotation "dir" is not set on the claim`},
		{name: "missing annotation in or", pattern: `{{or (index .PVC.Annotations "dir") "x"}}`, wantErr: `annotation "dir" is not set on the claim`},
		{name: "index of something else", pattern: `{{index .PVC.Name 0}}`, wantErr: "index reads only .PVC.Labels and .PVC.Annotations, not a value of type string"},
		{name: "index with two keys", pattern: `{{index .PVC.Labels "a" "b"}}`, wantErr: "index of the labels takes one key, not 2"},
		{name: "index with a number", pattern: `{{index .PVC.Annotations 1}}`, wantErr: "index of the annotations takes a string key, not a value of type int"},
		{name: "unknown field", pattern: "{{.PVC.Spec}}", wantErr: "can't evaluate field Spec"},
		{name: "endless output", pattern: "{{range 1000000000}}x{{end}}", wantErr: "longer than 1024 bytes"},
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
			tmpl, err := Parse(tt.pattern)
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

func TestParse(t *testing.T) {
	for _, pattern := range []string{"{{.PVC.Name", "{{nosuchfunc}}", "{{end}}"} {
		if _, err := Parse(pattern); err == nil {
			t.Errorf("Parse(%q) succeeded", pattern)
		}
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
