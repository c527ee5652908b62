package hostpath

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"dirpv.io/dirpv/provisioner/config"
)

// TestParseVolumeType: volumeType is hostPath (the default) or local, and nothing else.
func TestParseVolumeType(t *testing.T) {
	tests := []struct {
		name    string
		params  map[string]string
		want    VolumeType
		wantErr string
	}{
		{name: "default", params: map[string]string{}, want: VolumeTypeHostPath},
		{name: "hostPath", params: map[string]string{ParamVolumeType: "hostPath"}, want: VolumeTypeHostPath},
		{name: "local", params: map[string]string{ParamVolumeType: "local"}, want: VolumeTypeLocal},
		{name: "case matters", params: map[string]string{ParamVolumeType: "Local"}, wantErr: `volumeType: "Local" is not one of hostPath, local`},
		{name: "empty", params: map[string]string{ParamVolumeType: ""}, wantErr: `volumeType: "" is not one of hostPath, local`},
		{name: "other source", params: map[string]string{ParamVolumeType: "nfs"}, wantErr: `volumeType: "nfs" is not one of hostPath, local`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errs []string
			bad := func(key, format string, args ...any) {
				errs = append(errs, key+": "+fmt.Sprintf(format, args...))
			}
			c := (&Backend{}).ParseParams(tt.params, bad).(Class)
			if tt.wantErr != "" {
				if len(errs) != 1 || errs[0] != tt.wantErr {
					t.Fatalf("errors %q, want %q", errs, tt.wantErr)
				}
				return
			}
			if len(errs) != 0 || c.VolumeType != tt.want || !slices.Equal(c.BasePaths, []string{DefaultBasePath}) {
				t.Fatalf("class %+v, errors %q; want volumeType %s", c, errs, tt.want)
			}
		})
	}

	// The class as a whole: volumeType is one of the backend's parameters.
	c, err := config.ParseClass(map[string]string{config.ParamBackend: Name, ParamVolumeType: "local"}, []config.Backend{&Backend{}})
	if err != nil || c.Params.(Class).VolumeType != VolumeTypeLocal {
		t.Fatalf("ParseClass = %+v, %v", c, err)
	}
}

// TestSpecVolumeType: Place carries the class's volumeType to the PV's source; either way the
// PV is pinned to the node by its hostname.
func TestSpecVolumeType(t *testing.T) {
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-a", Labels: map[string]string{v1.LabelHostname: "host-1"}}}
	for name, vt := range map[string]VolumeType{"unset": "", "hostPath": VolumeTypeHostPath, "local": VolumeTypeLocal} {
		t.Run(name, func(t *testing.T) {
			b := &Backend{Root: "/var/lib/dirpv"}
			class := &config.Class{Backend: Name, Params: Class{BasePaths: []string{"/var/lib/dirpv/fast"}, VolumeType: vt}}
			sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, VolumeBindingMode: &wffc}
			loc, err := b.Place(context.Background(), class, controller.ProvisionOptions{StorageClass: sc, SelectedNode: node})
			if err != nil {
				t.Fatal(err)
			}
			var spec v1.PersistentVolumeSpec
			loc.Spec(&spec, "/var/lib/dirpv/fast/x", sc)
			if vt == VolumeTypeLocal {
				if spec.HostPath != nil || spec.Local == nil || spec.Local.Path != "/var/lib/dirpv/fast/x" || spec.Local.FSType != nil {
					t.Errorf("source %+v, want local /var/lib/dirpv/fast/x only", spec.PersistentVolumeSource)
				}
			} else {
				hp := spec.HostPath
				if spec.Local != nil || hp == nil || hp.Path != "/var/lib/dirpv/fast/x" || hp.Type == nil || *hp.Type != v1.HostPathDirectory {
					t.Errorf("source %+v, want hostPath /var/lib/dirpv/fast/x of type Directory only", spec.PersistentVolumeSource)
				}
			}
			na := spec.NodeAffinity
			if na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) != 1 {
				t.Fatalf("node affinity %+v", na)
			}
			if m := na.Required.NodeSelectorTerms[0].MatchExpressions; len(m) != 1 || m[0].Key != v1.LabelHostname ||
				m[0].Operator != v1.NodeSelectorOpIn || len(m[0].Values) != 1 || m[0].Values[0] != "host-1" {
				t.Errorf("node affinity %+v, want %s In [host-1]", na.Required.NodeSelectorTerms, v1.LabelHostname)
			}
		})
	}
}

// TestLocateVolumeType: a PV's source may be hostPath or local, whatever its class says now, but
// it must be there and be the directory its annotations name.
func TestLocateVolumeType(t *testing.T) {
	dir := v1.HostPathDirectory
	hostPath := func(p string) v1.PersistentVolumeSource {
		return v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: p, Type: &dir}}
	}
	local := func(p string) v1.PersistentVolumeSource {
		return v1.PersistentVolumeSource{Local: &v1.LocalVolumeSource{Path: p}}
	}
	tests := []struct {
		name     string
		basePath string
		source   v1.PersistentVolumeSource
		want     VolumeType
		wantErr  string
	}{
		{name: "hostPath", source: hostPath("/var/lib/dirpv/fast/x"), want: VolumeTypeHostPath},
		{name: "local", source: local("/var/lib/dirpv/fast/x"), want: VolumeTypeLocal},
		{name: "hostPath elsewhere", source: hostPath("/var/lib/dirpv/fast/y"),
			wantErr: "the PV's hostPath source does not match its dirpv.io/ annotations (/var/lib/dirpv/fast/x on node node1)"},
		{name: "local elsewhere", source: local("/etc"),
			wantErr: "the PV's local source does not match its dirpv.io/ annotations (/var/lib/dirpv/fast/x on node node1)"},
		{name: "local in another basePath", source: local("/var/lib/dirpv/x"),
			wantErr: "the PV's local source does not match"},
		{name: "no source", wantErr: "the PV must have one source, hostPath or local, of the directory its dirpv.io/ annotations name (/var/lib/dirpv/fast/x on node node1)"},
		{name: "nfs source", source: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "10.0.0.5", Path: "/var/lib/dirpv/fast/x"}},
			wantErr: "the PV must have one source, hostPath or local, of the directory its dirpv.io/ annotations name (/var/lib/dirpv/fast/x on node node1)"},
		{name: "both", source: v1.PersistentVolumeSource{HostPath: hostPath("/var/lib/dirpv/fast/x").HostPath, Local: local("/var/lib/dirpv/fast/x").Local},
			wantErr: "the PV must have one source, hostPath or local, of the directory its dirpv.io/ annotations name (/var/lib/dirpv/fast/x on node node1)"},
		{name: "local outside the root", basePath: "/etc", source: local("/etc/x"),
			wantErr: "basePath /etc is not within the provisioner's --hostpath-root /var/lib/dirpv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := "/var/lib/dirpv/fast"
			if tt.basePath != "" {
				base = tt.basePath
			}
			pv := &v1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: "pvc-1", Annotations: map[string]string{AnnNode: "node1", AnnNodeUID: "uid-a", AnnBasePath: base}},
				Spec:       v1.PersistentVolumeSpec{PersistentVolumeSource: tt.source},
			}
			loc, err := (&Backend{Root: "/var/lib/dirpv"}).Locate(pv, "x")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Locate = %+v, %v; want error containing %q", loc, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Location{Node: "node1", NodeUID: "uid-a", BasePath: "/var/lib/dirpv/fast", VolumeType: tt.want}
			if loc != want {
				t.Errorf("Locate = %+v, want %+v", loc, want)
			}
		})
	}
}
