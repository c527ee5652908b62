package config

import (
	"slices"
	"strings"
	"testing"
)

func TestAdopt(t *testing.T) {
	base := []string{"--namespace=d", "--helper-image=i", "--nfs-export=nfs.example.com:/exports=/mnt/e"}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		want    Adoption
	}{
		{name: "default name", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports/nsp"},
			want: Adoption{Peer: PeerNSP, Name: DefaultNSPName, Server: "nfs.example.com", Path: "/exports/nsp"}},
		{name: "own name, export itself", args: []string{"--adopt=nfs-subdir-external-provisioner,name=example.com/nfs,path=/exports,server=nfs.example.com"},
			want: Adoption{Peer: PeerNSP, Name: "example.com/nfs", Server: "nfs.example.com", Path: "/exports"}},
		{name: "unknown peer", args: []string{"--adopt=local-path,server=nfs.example.com,path=/exports"}, wantErr: "not a provisioner dirpv can take over"},
		{name: "unknown key", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports,archive=yes"}, wantErr: "unknown key"},
		{name: "key twice", args: []string{"--adopt=nfs-subdir-external-provisioner,server=a,server=nfs.example.com,path=/exports"}, wantErr: "each key once"},
		{name: "no server", args: []string{"--adopt=nfs-subdir-external-provisioner,path=/exports"}, wantErr: "server: the server is empty"},
		{name: "relative path", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=exports"}, wantErr: "not an absolute path"},
		{name: "path with ..", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports/../etc"}, wantErr: "not a clean path"},
		{name: "hidden path", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports/.x"}, wantErr: "starts with"},
		{name: "outside the exports", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/srv"}, wantErr: "not within an export dirpv mounts"},
		{name: "another server", args: []string{"--adopt=nfs-subdir-external-provisioner,server=other.example.com,path=/exports"}, wantErr: "not within an export dirpv mounts"},
		{name: "dirpv's own name", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports,name=dirpv.io/provisioner"}, wantErr: "is dirpv's own"},
		{name: "bad name", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports,name=a b"}, wantErr: "name"},
		{name: "name twice", args: []string{"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports",
			"--adopt=nfs-subdir-external-provisioner,server=nfs.example.com,path=/exports/b"}, wantErr: "adopted twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(t, append(slices.Clone(base), tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(o.Adopt) != 1 || o.Adopt[0] != tc.want {
				t.Fatalf("adopt %+v, want %+v", o.Adopt, tc.want)
			}
			if names := o.Names(); names[len(names)-1] != tc.want.Name {
				t.Errorf("names %q do not end with %s", names, tc.want.Name)
			}
			if o.Adopt.ByName(tc.want.Name) == nil {
				t.Errorf("ByName(%s) = nil", tc.want.Name)
			}
		})
	}
}
