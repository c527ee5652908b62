package config

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func parseOptions(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var o Options
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return &o, o.Validate()
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, o *Options)
	}{
		{name: "defaults", args: []string{"--namespace=dirpv", "--pod-name=p"}, check: func(t *testing.T, o *Options) {
			if o.Name != DefaultName || o.KubeQPS != 100 || o.KubeBurst != 200 || o.LeaderElectNamespace != "dirpv" || !o.LeaderElect || o.HostPathRoot != "/var/lib/dirpv" || o.UsageInterval != 5*time.Minute || o.HelperKeepAlive != time.Minute {
				t.Errorf("got %+v", o)
			}
		}},
		{name: "exports", args: []string{"--namespace=d", "--helper-image=i", "--nfs-export=10.0.0.5:/exports/k8s=/mnt/a", "--nfs-export=[fd00::1]:/e=/mnt/b"},
			check: func(t *testing.T, o *Options) {
				if e := o.NFSExports.Find("10.0.0.5", "/exports/k8s"); e == nil || e.LocalPath != "/mnt/a" {
					t.Errorf("export a: %+v", o.NFSExports)
				}
				if e := o.NFSExports.Find("[fd00::1]", "/e"); e == nil || e.LocalPath != "/mnt/b" {
					t.Errorf("export b: %+v", o.NFSExports)
				}
			}},
		{name: "export without local path", args: []string{"--nfs-export=server:/e"}, wantErr: "want SERVER:SHARE=/local/path"},
		{name: "export without share", args: []string{"--nfs-export=server=/mnt"}, wantErr: "want SERVER:SHARE=/local/path"},
		{name: "export twice", args: []string{"--nfs-export=s:/e=/a", "--nfs-export=s:/e=/b"}, wantErr: "given twice"},
		{name: "export relative local", args: []string{"--nfs-export=s:/e=mnt"}, wantErr: "not an absolute path"},
		{name: "namespace required", args: []string{"--helper-image=i"}, wantErr: "--namespace: is required"},
		{name: "capacity name", args: []string{"--namespace=d", "--helper-image=i"}, check: func(t *testing.T, o *Options) {
			if got := o.Names(); !slices.Equal(got, []string{"dirpv.io/provisioner", "dirpv.io"}) {
				t.Errorf("names %q", got)
			}
		}},
		{name: "capacity name off", args: []string{"--namespace=d", "--helper-image=i", "--capacity-name="}, check: func(t *testing.T, o *Options) {
			if got := o.Names(); !slices.Equal(got, []string{"dirpv.io/provisioner"}) {
				t.Errorf("names %q", got)
			}
		}},
		{name: "capacity name with a slash", args: []string{"--namespace=d", "--helper-image=i", "--capacity-name=dirpv.io/x"}, wantErr: `--capacity-name: "dirpv.io/x" is not a CSIDriver name`},
		{name: "capacity name is the name", args: []string{"--namespace=d", "--helper-image=i", "--name=dirpv.io", "--capacity-name=dirpv.io"}, wantErr: "is --name already"},
		{name: "capacity interval", args: []string{"--namespace=d", "--helper-image=i", "--capacity-interval=10ms"}, wantErr: "--capacity-interval: must be at least 1s"},
		{name: "bad name", args: []string{"--namespace=d", "--helper-image=i", "--name=not a name"}, wantErr: "--name"},
		{name: "helper image or pod", args: []string{"--namespace=d"}, wantErr: "--helper-image: is required"},
		{name: "bad root", args: []string{"--namespace=d", "--helper-image=i", "--hostpath-root=/var/../etc"}, wantErr: "--hostpath-root"},
		{name: "bad election timings", args: []string{"--namespace=d", "--helper-image=i", "--leader-elect-renew-deadline=20s"}, wantErr: "lease duration > renew deadline"},
		{name: "workers", args: []string{"--namespace=d", "--helper-image=i", "--workers=0"}, wantErr: "--workers"},
		{name: "keep-alive too long", args: []string{"--namespace=d", "--helper-image=i", "--helper-keep-alive=2h"}, wantErr: "--helper-keep-alive"},
		{name: "no agents", args: []string{"--namespace=d", "--helper-image=i", "--helper-keep-alive=0"},
			check: func(t *testing.T, o *Options) {
				if o.HelperKeepAlive != 0 {
					t.Errorf("HelperKeepAlive %v", o.HelperKeepAlive)
				}
			}},
		{name: "keep-alive", args: []string{"--namespace=d", "--helper-image=i", "--helper-keep-alive=90s"},
			check: func(t *testing.T, o *Options) {
				if o.HelperKeepAlive != 90*time.Second {
					t.Errorf("HelperKeepAlive %v", o.HelperKeepAlive)
				}
			}},
		{name: "allow", args: []string{"--namespace=d", "--helper-image=i", "--nfs-allow=10.0.0.1", "--nfs-allow=nfs2:/srv/nfs", "--nfs-uid=1000", "--nfs-gid=2000"},
			check: func(t *testing.T, o *Options) {
				want := NFSAllow{{Server: "10.0.0.1"}, {Server: "nfs2", Share: "/srv/nfs"}}
				if len(o.NFSAllow) != 2 || o.NFSAllow[0] != want[0] || o.NFSAllow[1] != want[1] || o.NFSUID != 1000 || o.NFSGID != 2000 {
					t.Errorf("got %+v uid %d gid %d", o.NFSAllow, o.NFSUID, o.NFSGID)
				}
			}},
		{name: "allow twice", args: []string{"--nfs-allow=s:/e", "--nfs-allow=s:/e"}, wantErr: "given twice"},
		{name: "allow an unclean export", args: []string{"--nfs-allow=s:/e/../x"}, wantErr: "not a clean path"},
		{name: "allow a path", args: []string{"--nfs-allow=a/b"}, wantErr: "is not a host name"},
		{name: "allow nothing", args: []string{"--nfs-allow=:/e"}, wantErr: "the server is empty"},
		{name: "export of a bad server", args: []string{"--nfs-export=a b:/e=/mnt"}, wantErr: "is not a host name"},
		{name: "export of a bare IPv6 address", args: []string{"--namespace=d", "--helper-image=i", "--nfs-export=fd00::1:/e=/mnt/b"},
			check: func(t *testing.T, o *Options) {
				if e := o.NFSExports.Find("fd00::1", "/e"); e == nil || e.LocalPath != "/mnt/b" {
					t.Errorf("export: %+v", o.NFSExports)
				}
			}},
		{name: "export of a mount option", args: []string{"--nfs-export=-oro:/e=/mnt"}, wantErr: `"-oro" is not a host name or an IP address: label "-oro" starts or ends with a hyphen`},
		{name: "export of a bidi override", args: []string{"--nfs-export=nfs\u202e:/e=/mnt"}, wantErr: `"nfs\u202e" is not a host name or an IP address: character U+202E`},
		{name: "allow two servers", args: []string{"--nfs-allow=a,b:/e"}, wantErr: `"a,b" is not a host name or an IP address: character U+002C`},
		{name: "allow NUL", args: []string{"--nfs-allow=nfs\x00"}, wantErr: `"nfs\x00" is not a host name or an IP address: character U+0000`},
		{name: "allow an IPv6 address", args: []string{"--namespace=d", "--helper-image=i", "--nfs-allow=[fd00::1]:/e", "--nfs-allow=fd00::2"},
			check: func(t *testing.T, o *Options) {
				if want := (NFSAllow{{Server: "[fd00::1]", Share: "/e"}, {Server: "fd00::2"}}); len(o.NFSAllow) != 2 || o.NFSAllow[0] != want[0] || o.NFSAllow[1] != want[1] {
					t.Errorf("got %+v", o.NFSAllow)
				}
			}},
		{name: "negative uid", args: []string{"--namespace=d", "--helper-image=i", "--nfs-uid=-1"}, wantErr: "--nfs-uid"},
		{name: "usage interval", args: []string{"--namespace=d", "--helper-image=i", "--usage-interval=5s"}, check: func(t *testing.T, o *Options) {
			if o.UsageInterval != 5*time.Second {
				t.Errorf("UsageInterval = %v, want 5s", o.UsageInterval)
			}
		}},
		{name: "usage off", args: []string{"--namespace=d", "--helper-image=i", "--usage-interval=0"}, check: func(t *testing.T, o *Options) {
			if o.UsageInterval != 0 {
				t.Errorf("UsageInterval = %v, want 0", o.UsageInterval)
			}
		}},
		{name: "usage interval too short", args: []string{"--namespace=d", "--helper-image=i", "--usage-interval=100ms"}, wantErr: "--usage-interval: must be 0 (off) or at least 1s"},
		{name: "negative usage interval", args: []string{"--namespace=d", "--helper-image=i", "--usage-interval=-1m"}, wantErr: "--usage-interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseOptions(t, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// TestCheckServer: an NFS server is a host name or an IP address; whatever else is refused, the
// error naming the problem without echoing what the character rule refuses.
func TestCheckServer(t *testing.T) {
	tests := []struct {
		server  string
		wantErr string // "" means accepted
	}{
		{server: "nfs"},
		{server: "localhost"},
		{server: "nfs.example.com"},
		{server: "nfs-1.storage-a.example.com"},
		{server: "NFS.Example.COM"},
		{server: "1nfs.example"},
		{server: "nfs.example.c0m"},
		{server: strings.Repeat("a", 63) + ".example"},
		{server: strings.Repeat("a.", 126) + "b"}, // 253 bytes
		{server: "10.0.0.5"},
		{server: "255.255.255.255"},
		{server: "fd00::1"},
		{server: "[fd00::1]"},
		{server: "2001:DB8::a:1"},
		{server: "::ffff:10.0.0.1"},

		{server: "", wantErr: "the server is empty"},
		{server: "nfs\x00", wantErr: `"nfs\x00" is not a host name or an IP address: character U+0000`},
		{server: "nfs\x7f", wantErr: "character U+007F"},
		{server: "nfs\r", wantErr: "character U+000D"},
		{server: "nfs\v", wantErr: "character U+000B"},
		{server: "nfs\f", wantErr: "character U+000C"},
		{server: "nfs\n", wantErr: "character U+000A"},
		{server: "nfs\u202e", wantErr: `"nfs\u202e" is not a host name or an IP address: character U+202E`},
		{server: "nfs\u200b", wantErr: "character U+200B"},
		{server: "nfs\u3164", wantErr: `"nfs\u3164" is not a host name or an IP address: character U+3164`},
		{server: "données.example", wantErr: "character U+00E9"},
		{server: "-oro", wantErr: `label "-oro" starts or ends with a hyphen`},
		{server: "nfs-", wantErr: `label "nfs-" starts or ends with a hyphen`},
		{server: "a.-b.c", wantErr: `label "-b" starts or ends with a hyphen`},
		{server: "a,b", wantErr: "character U+002C"},
		{server: "nfs ro", wantErr: "character U+0020"},
		{server: "nfs_1", wantErr: "character U+005F"},
		{server: "a/b", wantErr: "character U+002F"},
		{server: "nfs:2049", wantErr: "character U+003A"},
		{server: "nfs.example.", wantErr: "empty label"},
		{server: ".nfs", wantErr: "empty label"},
		{server: "a..b", wantErr: "empty label"},
		{server: strings.Repeat("a", 64), wantErr: "label longer than 63 bytes"},
		{server: strings.Repeat("a.", 126) + "bc", wantErr: "longer than 253 bytes"},
		{server: "1.2.3", wantErr: "numeric, but not an IPv4 address in dotted decimal"},
		{server: "010.0.0.1", wantErr: "numeric, but not an IPv4 address in dotted decimal"},
		{server: "10.0.0.256", wantErr: "numeric, but not an IPv4 address in dotted decimal"},
		{server: "2130706433", wantErr: "numeric, but not an IPv4 address in dotted decimal"},
		{server: "0x7f000001", wantErr: "numeric, but not an IPv4 address in dotted decimal"},
		{server: "fe80::1%eth0", wantErr: "an IPv6 zone (%) is not allowed"},
		{server: "[fe80::1%eth0]", wantErr: "brackets hold an IPv6 address and nothing else"},
		{server: "[10.0.0.5]", wantErr: "brackets hold an IPv6 address and nothing else"},
		{server: "[fd00::1", wantErr: "brackets hold an IPv6 address and nothing else"},
		{server: "[fd00::1]:2049", wantErr: "brackets hold an IPv6 address and nothing else"},
	}
	for _, tt := range tests {
		checkError(t, fmt.Sprintf("CheckServer(%q)", tt.server), CheckServer(tt.server), tt.wantErr)
	}
}

func TestWithin(t *testing.T) {
	tests := []struct {
		root, p string
		want    bool
		rel     string
	}{
		{"/var/lib/dirpv", "/var/lib/dirpv", true, "."},
		{"/var/lib/dirpv", "/var/lib/dirpv/a", true, "a"},
		{"/var/lib/dirpv", "/var/lib/dirpv/a/b", true, "a/b"},
		{"/var/lib/dirpv", "/var/lib/dirpvx", false, ""},
		{"/var/lib/dirpv", "/var/lib", false, ""},
		{"/var/lib/dirpv", "/etc", false, ""},
		{"/var/lib/dirpv", "/var/lib/dirpv/../../etc", false, ""},
		{"/", "/etc", true, "etc"},
		{"/", "/", true, "."},
	}
	for _, tt := range tests {
		if got := Within(tt.root, tt.p); got != tt.want {
			t.Errorf("Within(%q, %q) = %v", tt.root, tt.p, got)
		}
		if rel, ok := RelWithin(tt.root, tt.p); ok != tt.want || rel != tt.rel {
			t.Errorf("RelWithin(%q, %q) = %q, %v; want %q", tt.root, tt.p, rel, ok, tt.rel)
		}
	}
}

// TestContaining: a share is served from the outermost mounted export of its server that holds it.
func TestContaining(t *testing.T) {
	var e NFSExports
	for _, v := range []string{"nfs1:/exports/fast=/mnt/fast", "nfs1:/exports=/mnt/all", "nfs2:/data=/mnt/data"} {
		if err := e.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		server, share string
		local, rel    string
	}{
		{"nfs1", "/exports", "/mnt/all", "."},
		{"nfs1", "/exports/fast", "/mnt/all", "fast"},
		{"nfs1", "/exports/team/a", "/mnt/all", "team/a"},
		{"nfs2", "/data/x", "/mnt/data", "x"},
		{"nfs2", "/exports", "", ""},
		{"nfs1", "/export", "", ""},
		{"nfs3", "/exports", "", ""},
	}
	for _, tt := range tests {
		x, rel := e.Containing(tt.server, tt.share)
		local := ""
		if x != nil {
			local = x.LocalPath
		}
		if local != tt.local || rel != tt.rel {
			t.Errorf("Containing(%s, %s) = %q, %q; want %q, %q", tt.server, tt.share, local, rel, tt.local, tt.rel)
		}
	}
}

// TestAllowRoot: a direct class works from the outermost allowed export holding its share, or
// from its share when the server is allowed as a whole.
func TestAllowRoot(t *testing.T) {
	var a NFSAllow
	for _, v := range []string{"nfs1:/exports/fast", "nfs1:/exports", "nfs2", "nfs3:/data"} {
		if err := a.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		server, share string
		root, rel     string
		ok            bool
	}{
		{"nfs1", "/exports", "/exports", ".", true},
		{"nfs1", "/exports/fast/x", "/exports", "fast/x", true},
		{"nfs1", "/export", "", "", false},
		{"nfs2", "/anything/at/all", "/anything/at/all", ".", true},
		{"nfs3", "/data/team", "/data", "team", true},
		{"nfs3", "/database", "", "", false},
		{"nfs4", "/data", "", "", false},
	}
	for _, tt := range tests {
		root, rel, ok := a.Root(tt.server, tt.share)
		if root != tt.root || rel != tt.rel || ok != tt.ok {
			t.Errorf("Root(%s, %s) = %q, %q, %v; want %q, %q, %v", tt.server, tt.share, root, rel, ok, tt.root, tt.rel, tt.ok)
		}
	}
}
