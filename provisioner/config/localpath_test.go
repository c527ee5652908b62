package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseLocalPath(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		class   string
		node    string
		want    []string
		wantErr string // of the parse, or else of Roots
	}{
		{name: "the default config", json: `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/local-path-provisioner"]}]}`,
			node: "n1", want: []string{"/opt/local-path-provisioner"}},
		{name: "no node yet, one entry", json: `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]}]}`,
			want: []string{"/opt/lpp"}},
		{name: "a listed node", json: `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]},{"node":"n1","paths":["/mnt/b/","/mnt/a"]}]}`,
			node: "n1", want: []string{"/mnt/a", "/mnt/b"}},
		{name: "a node not listed", json: `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]},{"node":"n1","paths":["/mnt/a"]}]}`,
			node: "n2", want: []string{"/opt/lpp"}},
		{name: "per class", json: `{"storageClassConfigs":{"fast":{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/mnt/ssd"]}]}},"nodePathMap":[]}`,
			class: "fast", node: "n1", want: []string{"/mnt/ssd"}},
		{name: "timeout taken", json: `{"cmdTimeoutSeconds":180,"nodePathMap":[{"node":"n1","paths":["/opt/lpp"]}]}`, node: "n1", want: []string{"/opt/lpp"}},

		{name: "no node yet, nodes of their own", json: `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]},{"node":"n1","paths":["/mnt/a"]}]}`,
			wantErr: "needs its node first"},
		{name: "node not listed, no default", json: `{"nodePathMap":[{"node":"n1","paths":["/mnt/a"]}]}`, node: "n2", wantErr: "no paths for node n2"},
		{name: "node with no paths", json: `{"nodePathMap":[{"node":"n1","paths":[]}]}`, node: "n1", wantErr: "gives node n1 no paths"},
		{name: "class not listed", json: `{"storageClassConfigs":{"fast":{"nodePathMap":[{"node":"n1","paths":["/mnt/ssd"]}]}}}`,
			class: "slow", node: "n1", wantErr: "no storageClassConfigs entry"},
		{name: "shared filesystem", json: `{"sharedFileSystemPath":"/mnt/nfs"}`, wantErr: "sharedFileSystemPath"},
		{name: "shared filesystem of a class", json: `{"storageClassConfigs":{"rwx":{"sharedFileSystemPath":"/mnt/nfs"}}}`, wantErr: `storageClassConfigs "rwx": sharedFileSystemPath`},
		{name: "setup command", json: `{"setupCommand":"/manager","nodePathMap":[{"node":"n1","paths":["/opt/lpp"]}]}`, wantErr: "setupCommand"},
		{name: "unknown key", json: `{"nodePathMap":[{"node":"n1","paths":["/opt/lpp"]}],"paths":["/x"]}`, wantErr: "unknown field"},
		{name: "empty", json: `{}`, wantErr: "nodePathMap is empty"},
		{name: "root", json: `{"nodePathMap":[{"node":"n1","paths":["/"]}]}`, wantErr: `path "/"`},
		{name: "relative", json: `{"nodePathMap":[{"node":"n1","paths":["opt/lpp"]}]}`, wantErr: "not an absolute path"},
		{name: "dot-dot", json: `{"nodePathMap":[{"node":"n1","paths":["/opt/../etc"]}]}`, wantErr: "not a clean path"},
		{name: "hidden", json: `{"nodePathMap":[{"node":"n1","paths":["/opt/.x"]}]}`, wantErr: "starts with"},
		{name: "node twice", json: `{"nodePathMap":[{"node":"n1","paths":["/a"]},{"node":"n1","paths":["/b"]}]}`, wantErr: "listed twice"},
		{name: "path twice", json: `{"nodePathMap":[{"node":"n1","paths":["/a","/a/"]}]}`, wantErr: "listed twice"},
		{name: "not JSON", json: `nodePathMap: []`, wantErr: "invalid character"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseLocalPath([]byte(tc.json))
			var got []string
			if err == nil {
				got, err = l.Roots(tc.class, tc.node)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("roots %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestAdoptLocalPath(t *testing.T) {
	dir := t.TempDir()
	write := func(name, json string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(json), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]},{"node":"n1","paths":["/opt/disk1"]}]}`)
	outside := write("outside.json", `{"nodePathMap":[{"node":"n1","paths":["/mnt/disk1"]}]}`)
	shared := write("shared.json", `{"sharedFileSystemPath":"/mnt/nfs"}`)
	base := []string{"--namespace=d", "--helper-image=i", "--hostpath-root=/opt"}
	for _, tc := range []struct {
		name, arg, wantErr string
		wantName           string
	}{
		{name: "default name", arg: "local-path-provisioner,config=" + good, wantName: DefaultLocalPathName},
		{name: "own name", arg: "local-path-provisioner,config=" + good + ",name=example.com/local", wantName: "example.com/local"},
		{name: "no config", arg: "local-path-provisioner", wantErr: "config: the path of"},
		{name: "missing file", arg: "local-path-provisioner,config=" + filepath.Join(dir, "none.json"), wantErr: "no such file"},
		{name: "nfs key", arg: "local-path-provisioner,config=" + good + ",server=x", wantErr: "unknown key"},
		{name: "path outside --hostpath-root", arg: "local-path-provisioner,config=" + outside, wantErr: "/mnt/disk1 of local-path-provisioner's config is not within --hostpath-root /opt"},
		{name: "shared filesystem", arg: "local-path-provisioner,config=" + shared, wantErr: "sharedFileSystemPath"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(t, append(slices.Clone(base), "--adopt="+tc.arg)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := o.Adopt.ByName(tc.wantName)
			if a == nil || a.Peer != PeerLocalPath || a.LocalPath == nil {
				t.Fatalf("adopt %+v, want local-path-provisioner under %s", o.Adopt, tc.wantName)
			}
			if roots, err := a.LocalPath.Roots("any", "n1"); err != nil || !slices.Equal(roots, []string{"/opt/disk1"}) {
				t.Errorf("roots on n1: %q, %v", roots, err)
			}
		})
	}
}
