package config_test

import (
	"io/fs"
	"maps"
	"net/netip"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"dirpv.io/dirpv/provisioner/backend/hostpath"
	"dirpv.io/dirpv/provisioner/backend/nfs"
	"dirpv.io/dirpv/provisioner/config"
	"dirpv.io/dirpv/provisioner/pathname"
)

// backends are the real ones: class validation is theirs and config's together.
var backends = []config.Backend{&nfs.Backend{}, &hostpath.Backend{}}

// claimData is what tests render patterns with.
var claimData = pathname.Data{
	PVC: pathname.Claim{Namespace: "team-a", Name: "www-web-0",
		Labels: pathname.Labels{"app": "web"}, Annotations: pathname.Annotations{"example.com/team": "blue", "dir": "data"}},
	PV: pathname.Volume{Name: "pvc-0a1b"},
}

// classTests also seed FuzzParseClass.
var classTests = []struct {
	name    string
	params  map[string]string
	check   func(t *testing.T, c *config.Class)
	wantErr []string
}{
	{
		name:   "hostPath defaults",
		params: map[string]string{"backend": "hostPath"},
		check: func(t *testing.T, c *config.Class) {
			if c.Backend != hostpath.Name || !slices.Equal(c.Params.(hostpath.Class).BasePaths, []string{hostpath.DefaultBasePath}) || c.OnDelete != config.OnDeleteDelete ||
				c.Mode != 0o777 || c.UID != -1 || c.GID != -1 || c.PathPattern == nil {
				t.Errorf("got %+v", c)
			}
			if p, err := pathname.Render(c.PathPattern, claimData); p != "team-a-www-web-0-pvc-0a1b" || err != nil {
				t.Errorf("default pathPattern rendered %q, %v", p, err)
			}
		},
	},
	{
		name: "nfs full",
		params: map[string]string{"backend": "nfs", "server": "10.0.0.5", "share": "/exports/k8s",
			"pathPattern": "{{.PVC.Namespace}}/{{.PVC.Name}}", "onDelete": "archive", "mode": "2770", "uid": "1000", "gid": "2000"},
		check: func(t *testing.T, c *config.Class) {
			if n := c.Params.(nfs.Class); n.Server != "10.0.0.5" || n.Share != "/exports/k8s" || c.OnDelete != config.OnDeleteArchive ||
				c.Mode != fs.ModeSetgid|0o770 || c.UID != 1000 || c.GID != 2000 {
				t.Errorf("got %+v", c)
			}
		},
	},
	{name: "custom basePath", params: map[string]string{"backend": "hostPath", "basePath": "/var/lib/dirpv/fast"},
		check: func(t *testing.T, c *config.Class) {
			if p := c.Params.(hostpath.Class).BasePaths; !slices.Equal(p, []string{"/var/lib/dirpv/fast"}) {
				t.Errorf("basePath %q", p)
			}
		}},
	{name: "retain", params: map[string]string{"backend": "hostPath", "onDelete": "retain"},
		check: func(t *testing.T, c *config.Class) {
			if c.OnDelete != config.OnDeleteRetain {
				t.Errorf("onDelete %q", c.OnDelete)
			}
		}},
	{name: "recycle", params: map[string]string{"backend": "hostPath", "recycle": "true"},
		check: func(t *testing.T, c *config.Class) {
			if !c.Recycle {
				t.Error("recycle not set")
			}
		}},
	{name: "recycle off", params: map[string]string{"backend": "hostPath", "recycle": "false"},
		check: func(t *testing.T, c *config.Class) {
			if c.Recycle {
				t.Error("recycle set")
			}
		}},
	{name: "bad recycle", params: map[string]string{"backend": "hostPath", "recycle": "yes"}, wantErr: []string{`"recycle": "yes" is not one of true, false`}},
	{name: "capacity is a label by default", params: map[string]string{"backend": "hostPath"},
		check: func(t *testing.T, c *config.Class) {
			if c.Capacity != config.CapacityLabel {
				t.Errorf("Capacity = %q, want label", c.Capacity)
			}
		}},
	{name: "capacity enforce", params: map[string]string{"backend": "hostPath", "capacity": "enforce"},
		check: func(t *testing.T, c *config.Class) {
			if c.Capacity != config.CapacityEnforce {
				t.Errorf("Capacity = %q, want enforce", c.Capacity)
			}
		}},
	{name: "bad capacity", params: map[string]string{"backend": "hostPath", "capacity": "hard"}, wantErr: []string{`"capacity": "hard" is not one of label, enforce`}},
	{name: "overcommit", params: map[string]string{"backend": "hostPath", "capacity": "enforce", "overcommit": "1.5"},
		check: func(t *testing.T, c *config.Class) {
			if c.Overcommit != 1.5 {
				t.Errorf("Overcommit = %g, want 1.5", c.Overcommit)
			}
		}},
	{name: "overcommit defaults to 1", params: map[string]string{"backend": "hostPath", "capacity": "enforce"},
		check: func(t *testing.T, c *config.Class) {
			if c.Overcommit != 1 {
				t.Errorf("Overcommit = %g, want 1", c.Overcommit)
			}
		}},
	{name: "overcommit without enforce", params: map[string]string{"backend": "hostPath", "overcommit": "2"},
		wantErr: []string{`"overcommit": applies only with capacity: enforce`}},
	{name: "bad overcommit", params: map[string]string{"backend": "hostPath", "capacity": "enforce", "overcommit": "0"},
		wantErr: []string{`"overcommit": "0" is not a number above 0 and at most 100`}},
	{name: "NaN overcommit", params: map[string]string{"backend": "hostPath", "capacity": "enforce", "overcommit": "NaN"},
		wantErr: []string{`"overcommit": "NaN" is not a number above 0 and at most 100`}},
	{name: "nfs cannot enforce", params: map[string]string{"backend": "nfs", "server": "nfs.example", "share": "/srv", "capacity": "enforce"},
		wantErr: []string{`"capacity": enforce is not possible with backend nfs: only the NFS server can enforce sizes`}},
	{name: "nfs sizes are labels", params: map[string]string{"backend": "nfs", "server": "nfs.example", "share": "/srv", "capacity": "label"},
		check: func(t *testing.T, c *config.Class) {
			if c.Capacity != config.CapacityLabel {
				t.Errorf("Capacity = %q, want label", c.Capacity)
			}
		}},
	{name: "missing backend", params: map[string]string{}, wantErr: []string{`"backend": is required`}},
	{name: "bad backend", params: map[string]string{"backend": "ceph"}, wantErr: []string{`"backend": "ceph" is not one of nfs, hostPath`}},
	{name: "unknown key names it and the allowed keys", params: map[string]string{"backend": "hostPath", "archiveOnDelete": "true"},
		wantErr: []string{`"archiveOnDelete": unknown parameter (allowed: access, backend, basePath, capacity, gid, mode, onDelete, overcommit, pathPattern, recycle, requireMount, rootPolicy, server, share, uid, volumeType)`}},
	{name: "nfs key on hostPath", params: map[string]string{"backend": "hostPath", "server": "x"},
		wantErr: []string{`"server": applies only to backend nfs, not hostPath`}},
	{name: "hostPath key on nfs", params: map[string]string{"backend": "nfs", "server": "s", "share": "/e", "basePath": "/x"},
		wantErr: []string{`"basePath": applies only to backend hostPath, not nfs`}},
	{name: "nfs direct", params: map[string]string{"backend": "nfs", "server": "s", "share": "/e", "access": "direct"},
		check: func(t *testing.T, c *config.Class) {
			if a := c.Params.(nfs.Class).Access; a != nfs.AccessDirect {
				t.Errorf("access %q", a)
			}
		}},
	{name: "nfs mount by default", params: map[string]string{"backend": "nfs", "server": "s", "share": "/e"},
		check: func(t *testing.T, c *config.Class) {
			if a := c.Params.(nfs.Class).Access; a != nfs.AccessMount {
				t.Errorf("access %q", a)
			}
		}},
	{name: "bad access", params: map[string]string{"backend": "nfs", "server": "s", "share": "/e", "access": "smb"},
		wantErr: []string{`"access": "smb" is not one of mount, direct`}},
	{name: "access on hostPath", params: map[string]string{"backend": "hostPath", "access": "direct"},
		wantErr: []string{`"access": applies only to backend nfs, not hostPath`}},
	{name: "nfs needs server and share", params: map[string]string{"backend": "nfs"},
		wantErr: []string{`"server": is required`, `"share": is required`}},
	{name: "relative share", params: map[string]string{"backend": "nfs", "server": "s", "share": "exports"},
		wantErr: []string{`"share": "exports" is not an absolute path`}},
	{name: "unclean share", params: map[string]string{"backend": "nfs", "server": "s", "share": "/exports/../etc"},
		wantErr: []string{`"share": "/exports/../etc" is not a clean path`}},
	{name: "bad server", params: map[string]string{"backend": "nfs", "server": "a/b", "share": "/e"},
		wantErr: []string{`"server": "a/b" is not a host name`}},
	{name: "IPv6 server", params: map[string]string{"backend": "nfs", "server": "fd00::1", "share": "/e"}, check: wantServer("fd00::1")},
	{name: "IPv6 server in brackets", params: map[string]string{"backend": "nfs", "server": "[fd00::1]", "share": "/e"}, check: wantServer("[fd00::1]")},
	{name: "host name with hyphens", params: map[string]string{"backend": "nfs", "server": "nfs-1.storage-a.example.com", "share": "/e"},
		check: wantServer("nfs-1.storage-a.example.com")},
	{name: "NUL in server", params: map[string]string{"backend": "nfs", "server": "nfs\x00.example", "share": "/e"},
		wantErr: []string{`"server": "nfs\x00.example" is not a host name or an IP address: character U+0000`}},
	{name: "DEL in server", params: map[string]string{"backend": "nfs", "server": "nfs\x7f", "share": "/e"}, wantErr: []string{`"server": "nfs\x7f" is not a host name or an IP address: character U+007F`}},
	{name: "CR in server", params: map[string]string{"backend": "nfs", "server": "nfs\r", "share": "/e"}, wantErr: []string{`"server": "nfs\r" is not a host name or an IP address: character U+000D`}},
	{name: "VT in server", params: map[string]string{"backend": "nfs", "server": "nfs\v", "share": "/e"}, wantErr: []string{`"server": "nfs\v" is not a host name or an IP address: character U+000B`}},
	{name: "FF in server", params: map[string]string{"backend": "nfs", "server": "\fnfs", "share": "/e"}, wantErr: []string{`"server": "\fnfs" is not a host name or an IP address: character U+000C`}},
	{name: "bidi override in server", params: map[string]string{"backend": "nfs", "server": "nfs\u202e", "share": "/e"},
		wantErr: []string{`"server": "nfs\u202e" is not a host name or an IP address: character U+202E`}},
	{name: "zero-width space in server", params: map[string]string{"backend": "nfs", "server": "nfs\u200b", "share": "/e"},
		wantErr: []string{`"server": "nfs\u200b" is not a host name or an IP address: character U+200B`}},
	{name: "Hangul filler in server", params: map[string]string{"backend": "nfs", "server": "nfs\u3164", "share": "/e"},
		wantErr: []string{`"server": "nfs\u3164" is not a host name or an IP address: character U+3164`}},
	{name: "mount option as server", params: map[string]string{"backend": "nfs", "server": "-oro", "share": "/e"},
		wantErr: []string{`"server": "-oro" is not a host name or an IP address: label "-oro" starts or ends with a hyphen`}},
	{name: "two servers", params: map[string]string{"backend": "nfs", "server": "a,b", "share": "/e"},
		wantErr: []string{`"server": "a,b" is not a host name or an IP address: character U+002C`}},
	{name: "root share", params: map[string]string{"backend": "nfs", "server": "s", "share": "/"},
		check: func(t *testing.T, c *config.Class) {
			if p := c.Params.(nfs.Class).Share; p != "/" {
				t.Errorf("share %q", p)
			}
		}},
	{name: "root basePath", params: map[string]string{"backend": "hostPath", "basePath": "/"}, check: wantBasePath("/")},
	{name: "default basePath", params: map[string]string{"backend": "hostPath", "basePath": hostpath.DefaultBasePath}, check: wantBasePath(hostpath.DefaultBasePath)},
	{name: "UTF-8 basePath", params: map[string]string{"backend": "hostPath", "basePath": "/srv/données"}, check: wantBasePath("/srv/données")},
	{name: "hidden basePath", params: map[string]string{"backend": "hostPath", "basePath": "/var/lib/dirpv/.a.dirpv"},
		wantErr: []string{`"basePath": "/var/lib/dirpv/.a.dirpv": unsafe volume path: component ".a.dirpv" starts with "."`}},
	{name: "hidden share", params: map[string]string{"backend": "nfs", "server": "s", "share": "/exports/.a.dirpv/x"},
		wantErr: []string{`"share": "/exports/.a.dirpv/x": unsafe volume path: component ".a.dirpv" starts with "."`}},
	{name: "hidden top share", params: map[string]string{"backend": "nfs", "server": "s", "share": "/.snapshot"},
		wantErr: []string{`"share": "/.snapshot": unsafe volume path: component ".snapshot" starts with "."`}},
	{name: "backslash in basePath", params: map[string]string{"backend": "hostPath", "basePath": `/var/lib/a\..\b`},
		wantErr: []string{`"basePath": "/var/lib/a\\..\\b": unsafe volume path: contains a backslash`}},
	{name: "Hangul filler in basePath", params: map[string]string{"backend": "hostPath", "basePath": "/var/lib/dirpv/\u3164"},
		wantErr: []string{`"basePath": "/var/lib/dirpv/\u3164": invisible filler character U+3164`}},
	{name: "pathPattern doubling a value", params: map[string]string{"backend": "hostPath",
		"pathPattern": `{{$a := printf "%s%s" .PVC.Name .PVC.Name}}` + strings.Repeat(`{{$a = printf "%s%s" $a $a}}`, 15) + `{{len $a}}`},
		wantErr: []string{`"pathPattern": rendered for a sample claim: `, `pathPattern over its limits: printf made a value of 8096 bytes (at most 4096)`}},
	{name: "relative basePath", params: map[string]string{"backend": "hostPath", "basePath": "var/lib"},
		wantErr: []string{`"basePath": "var/lib" is not an absolute path`}},
	{name: "traversing basePath", params: map[string]string{"backend": "hostPath", "basePath": "/var/lib/dirpv/../../etc"},
		wantErr: []string{`"basePath": "/var/lib/dirpv/../../etc" is not a clean path`}},
	{name: "bad onDelete", params: map[string]string{"backend": "hostPath", "onDelete": "shred"},
		wantErr: []string{`"onDelete": "shred" is not one of delete, retain, archive`}},
	{name: "bad mode", params: map[string]string{"backend": "hostPath", "mode": "0999"}, wantErr: []string{`"mode": "0999" is not an octal mode`}},
	{name: "mode too big", params: map[string]string{"backend": "hostPath", "mode": "17777"}, wantErr: []string{`"mode": "17777"`}},
	{name: "mode too short", params: map[string]string{"backend": "hostPath", "mode": "7"}, wantErr: []string{`"mode": "7"`}},
	{name: "bad uid", params: map[string]string{"backend": "hostPath", "uid": "-1"}, wantErr: []string{`"uid": "-1" is not a number`}},
	{name: "uid too big", params: map[string]string{"backend": "hostPath", "uid": "2147483648"}, wantErr: []string{`"uid": "2147483648" is not a number from 0 to 2147483647`}},
	{name: "bad gid", params: map[string]string{"backend": "hostPath", "gid": "root"}, wantErr: []string{`"gid": "root" is not a number`}},
	{name: "bad template", params: map[string]string{"backend": "hostPath", "pathPattern": "{{.PVC.Name"}, wantErr: []string{`"pathPattern":`}},
	{name: "unknown function", params: map[string]string{"backend": "hostPath", "pathPattern": "{{env .PVC.Name}}"}, wantErr: []string{`"pathPattern":`, `function "env" not defined`}},
	{name: "pattern reading an annotation", params: map[string]string{"backend": "hostPath", "pathPattern": `{{index .PVC.Annotations "example.com/team"}}/{{.PVC.Name}}`},
		check: func(t *testing.T, c *config.Class) {
			if p, err := pathname.Render(c.PathPattern, claimData); p != "blue/www-web-0" || err != nil {
				t.Errorf("rendered %q, %v", p, err)
			}
		}},
	{name: "pattern reading a missing label", params: map[string]string{"backend": "hostPath", "pathPattern": `x{{index .PVC.Labels "team"}}/{{.PVC.Name}}`},
		check: func(t *testing.T, c *config.Class) {
			if p, err := pathname.Render(c.PathPattern, claimData); err == nil || !strings.Contains(err.Error(), `label "team" is not set on the claim`) {
				t.Errorf("rendered %q, %v", p, err)
			}
		}},
	{name: "control character in basePath", params: map[string]string{"backend": "hostPath", "basePath": "/var/lib/dirpv\u0085"},
		wantErr: []string{`"basePath": "/var/lib/dirpv\u0085": control character U+0085`}},
	{name: "trailing space in share", params: map[string]string{"backend": "nfs", "server": "s", "share": "/exports/k8s "},
		wantErr: []string{`"share": "/exports/k8s ": component "k8s " ends with white space U+0020`}},
	{name: "empty pattern", params: map[string]string{"backend": "hostPath", "pathPattern": " "}, wantErr: []string{`"pathPattern": must not be empty`}},
	{name: "all problems reported", params: map[string]string{"backend": "hostPath", "mode": "x", "foo": "1"},
		wantErr: []string{`"foo": unknown`, `"mode": "x"`}},
}

// wantServer checks that an nfs class has server s.
func wantServer(s string) func(t *testing.T, c *config.Class) {
	return func(t *testing.T, c *config.Class) {
		if got := c.Params.(nfs.Class).Server; got != s {
			t.Errorf("server %q, want %q", got, s)
		}
	}
}

// wantBasePath checks that a hostPath class has basePath p.
func wantBasePath(p string) func(t *testing.T, c *config.Class) {
	return func(t *testing.T, c *config.Class) {
		if got := c.Params.(hostpath.Class).BasePaths; !slices.Equal(got, []string{p}) {
			t.Errorf("basePath %q, want %q", got, p)
		}
	}
}

func TestParseClass(t *testing.T) {
	for _, tt := range classTests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.ParseClass(tt.params, backends)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseClass succeeded: %+v", c)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				if config.HasRefused(strings.ReplaceAll(err.Error(), "\n", " ")) { // the newlines are errors.Join's
					t.Errorf("error %q echoes a refused character", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseClass: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// FuzzParseClass parses StorageClass parameters made of up to eight fuzzed "key=value" strings
// and checks what a parsed Class promises.
func FuzzParseClass(f *testing.F) {
	for _, tt := range classTests {
		var kv [8]string
		if len(tt.params) > len(kv) {
			f.Fatalf("test %q has more parameters than FuzzParseClass takes", tt.name)
		}
		i := 0
		keys := slices.Sorted(maps.Keys(tt.params))
		for _, k := range keys {
			kv[i] = k + "=" + tt.params[k]
			i++
		}
		f.Add(kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[6], kv[7])
	}
	f.Fuzz(func(t *testing.T, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7 string) {
		params := map[string]string{}
		for _, kv := range []string{kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7} {
			if k, v, ok := strings.Cut(kv, "="); ok {
				params[k] = v
			}
		}
		c, err := config.ParseClass(params, backends)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseClass returned %+v with error %v", c, err)
			}
			return
		}
		allowed := []string{"backend", "pathPattern", "onDelete", "mode", "uid", "gid", "recycle", "capacity", "overcommit"}
		for _, b := range backends {
			if b.Name() == c.Backend {
				allowed = append(allowed, b.Params()...)
			}
		}
		for k := range params {
			if !slices.Contains(allowed, k) {
				t.Fatalf("accepted parameter %q for backend %s", k, c.Backend)
			}
		}
		switch p := c.Params.(type) {
		case nfs.Class:
			if c.Backend != nfs.Name || !hostOrAddress(p.Server) {
				t.Fatalf("accepted server %q (backend %s)", p.Server, c.Backend)
			}
			checkAbsolute(t, "share", p.Share)
			if p.Access != nfs.AccessMount && p.Access != nfs.AccessDirect {
				t.Fatalf("accepted access %q", p.Access)
			}
		case hostpath.Class:
			if c.Backend != hostpath.Name {
				t.Fatalf("backend %s with hostPath parameters", c.Backend)
			}
			for _, b := range p.BasePaths {
				checkAbsolute(t, "basePath", b)
			}
		default:
			t.Fatalf("accepted backend %q (%T)", c.Backend, c.Params)
		}
		switch c.OnDelete {
		case config.OnDeleteDelete, config.OnDeleteRetain, config.OnDeleteArchive:
		default:
			t.Fatalf("accepted onDelete %q", c.OnDelete)
		}
		if c.Mode&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Fatalf("accepted mode %v", c.Mode)
		}
		if m, err := config.ParseMode(config.FormatMode(c.Mode)); err != nil || m != c.Mode {
			t.Fatalf("mode %v does not round-trip: %v, %v", c.Mode, m, err)
		}
		for _, id := range []int{c.UID, c.GID} {
			if id < -1 || id > 1<<31-1 {
				t.Fatalf("accepted uid/gid %d", id)
			}
		}
		if c.PathPattern == nil {
			t.Fatal("no pathPattern")
		}
		p, err := pathname.Render(c.PathPattern, claimData)
		if err != nil {
			return
		}
		if err := pathname.Validate(p); err != nil || !filepath.IsLocal(p) {
			t.Fatalf("pathPattern rendered %q, which is not a safe relative path: %v", p, err)
		}
	})
}

// checkAbsolute fails unless p is a clean absolute path following the character rule, without
// hidden components or backslashes.
func checkAbsolute(t *testing.T, what, p string) {
	t.Helper()
	if !path.IsAbs(p) || path.Clean(p) != p || config.HasRefused(p) || strings.Contains(p, `\`) {
		t.Fatalf("accepted %s %q", what, p)
	}
	for _, c := range strings.Split(p, "/") {
		first, _ := utf8.DecodeRuneInString(c)
		last, _ := utf8.DecodeLastRuneInString(c)
		if unicode.IsSpace(first) || unicode.IsSpace(last) || strings.HasPrefix(c, ".") {
			t.Fatalf("accepted %s %q with component %q", what, p, c)
		}
	}
}

// hostOrAddress reports whether s is an IP address, bare or an IPv6 one in brackets, or made of
// labels of ASCII letters, digits and inner hyphens.
func hostOrAddress(s string) bool {
	inner, bracketed := strings.CutPrefix(s, "[")
	if bracketed {
		if inner, bracketed = strings.CutSuffix(inner, "]"); !bracketed {
			return false
		}
	}
	if a, err := netip.ParseAddr(inner); err == nil || bracketed {
		return err == nil && a.Zone() == "" && (a.Is6() || !bracketed)
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' || strings.Trim(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return false
		}
	}
	return len(s) <= 253
}
