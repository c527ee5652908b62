package peer

import (
	"errors"
	"maps"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
)

var adoption = config.Adoption{Peer: config.PeerNSP, Name: config.DefaultNSPName, Server: "nfs.example.com", Path: "/exports/nsp"}

func nspClass(params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs-client"}, Provisioner: config.DefaultNSPName, Parameters: params}
}

// nspPV is a PV as NSP makes it for claim ns/data (UID u1).
func nspPV(name, path string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{backend.AnnProvisionedBy: config.DefaultNSPName}},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs.example.com", Path: path}},
			ClaimRef:               &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "u1"},
			StorageClassName:       "nfs-client",
		},
	}
}

func claim(labels map[string]string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "u1", Labels: labels}}
}

func TestRecord(t *testing.T) {
	team := map[string]string{ParamNSPPathPattern: "${.PVC.namespace}/${.PVC.labels.team}"}
	tests := []struct {
		name    string
		pv      *v1.PersistentVolume
		class   *storagev1.StorageClass
		claim   *v1.PersistentVolumeClaim
		edit    func(pv *v1.PersistentVolume)
		want    map[string]string // the record's path and on-delete
		wantErr string
	}{
		{name: "default naming, archive by default", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(nil),
			want: map[string]string{backend.AnnPath: "ns-data-pvc-1", backend.AnnOnDelete: "archive"}},
		{name: "archiveOnDelete false", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(map[string]string{ParamNSPArchiveOnDelete: "false"}),
			want: map[string]string{backend.AnnPath: "ns-data-pvc-1", backend.AnnOnDelete: "delete"}},
		{name: "onDelete retain wins", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(map[string]string{ParamNSPOnDelete: "retain", ParamNSPArchiveOnDelete: "false"}),
			want: map[string]string{backend.AnnPath: "ns-data-pvc-1", backend.AnnOnDelete: "retain"}},
		{name: "pathPattern with its claim", pv: nspPV("pvc-1", "/exports/nsp/ns/blue"), class: nspClass(team), claim: claim(map[string]string{"team": "blue"}),
			want: map[string]string{backend.AnnPath: "ns/blue", backend.AnnOnDelete: "archive"}},
		{name: "pathPattern of names only, claim gone", pv: nspPV("pvc-1", "/exports/nsp/ns/data"), class: nspClass(map[string]string{ParamNSPPathPattern: "${.PVC.namespace}/${.PVC.name}"}),
			want: map[string]string{backend.AnnPath: "ns/data", backend.AnnOnDelete: "archive"}},

		{name: "pathPattern of labels, claim gone", pv: nspPV("pvc-1", "/exports/nsp/ns/blue"), class: nspClass(team), wantErr: "its claim is gone"},
		{name: "another claim", pv: nspPV("pvc-1", "/exports/nsp/ns/blue"), class: nspClass(team),
			claim: &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "u2", Labels: map[string]string{"team": "blue"}}}, wantErr: "not the one it is bound to"},
		{name: "forged PV copying a real path", pv: nspPV("pvc-2", "/exports/nsp/ns-data-pvc-1"), class: nspClass(nil), wantErr: "not where"},
		{name: "forged claim", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(nil),
			edit: func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef.Name = "other" }, wantErr: "not where"},
		{name: "no claim", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(nil),
			edit: func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef = nil }, wantErr: "names no claim"},
		{name: "dot-dot", pv: nspPV("pvc-1", "/exports/nsp/../other/ns-data-pvc-1"), class: nspClass(nil), wantErr: "not a directory under"},
		{name: "dot-dot at the end", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1/.."), class: nspClass(nil), wantErr: "not a directory under"},
		{name: "outside the export", pv: nspPV("pvc-1", "/exports/other/ns-data-pvc-1"), class: nspClass(nil), wantErr: "not a directory under"},
		{name: "a prefix of the export", pv: nspPV("pvc-1", "/exports/nspx/ns-data-pvc-1"), class: nspClass(nil), wantErr: "not a directory under"},
		{name: "the export itself", pv: nspPV("pvc-1", "/exports/nsp"), class: nspClass(nil), wantErr: "not a directory under"},
		{name: "hidden component", pv: nspPV("pvc-1", "/exports/nsp/.x/ns-data-pvc-1"), class: nspClass(map[string]string{ParamNSPPathPattern: ".x/${.PVC.namespace}-${.PVC.name}"}), wantErr: "starts with"},
		{name: "pathPattern escaping", pv: nspPV("pvc-1", "/exports/etc"), class: nspClass(map[string]string{ParamNSPPathPattern: "../etc"}), wantErr: "not a directory under"},
		{name: "another server", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(nil),
			edit: func(pv *v1.PersistentVolume) { pv.Spec.NFS.Server = "evil.example.com" }, wantErr: "NFS server"},
		{name: "not nfs", pv: nspPV("pvc-1", ""), class: nspClass(nil),
			edit: func(pv *v1.PersistentVolume) {
				pv.Spec.NFS = nil
				pv.Spec.HostPath = &v1.HostPathVolumeSource{Path: "/exports/nsp/ns-data-pvc-1"}
			}, wantErr: "no nfs source"},
		{name: "another provisioner's", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(nil),
			edit: func(pv *v1.PersistentVolume) { pv.Annotations[backend.AnnProvisionedBy] = "example.com/other" }, wantErr: "provisioned by"},
		{name: "class gone", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), wantErr: "StorageClass \"nfs-client\" is gone"},
		{name: "class of another provisioner", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"),
			class: &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs-client"}, Provisioner: "dirpv.io/provisioner"}, wantErr: "not k8s-sigs.io"},
		{name: "bad archiveOnDelete", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(map[string]string{ParamNSPArchiveOnDelete: "maybe"}), wantErr: "not a boolean"},
		{name: "onDelete NSP passes over", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(map[string]string{ParamNSPOnDelete: "Delete"}), wantErr: "not delete or retain"},
		{name: "unknown parameter", pv: nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"), class: nspClass(map[string]string{"backend": "hostPath"}), wantErr: "unknown to"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.edit != nil {
				tc.edit(tc.pv)
			}
			got, err := Record(tc.pv, adoption, Found{Class: tc.class, Claim: tc.claim})
			if tc.wantErr != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q (ErrRefused)", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{backend.AnnBackend: "nfs", "dirpv.io/server": "nfs.example.com", "dirpv.io/share": "/exports/nsp",
				backend.AnnAdoptedFrom: "nfs-subdir-external-provisioner"}
			maps.Copy(want, tc.want)
			if !maps.Equal(got, want) {
				t.Fatalf("record %v, want %v", got, want)
			}
		})
	}
}

func TestNSPPattern(t *testing.T) {
	for in, want := range map[string]string{
		"${.PVC.namespace}/${.PVC.name}":          "{{.PVC.Namespace}}/{{.PVC.Name}}",
		"team-${.PVC.labels.team}":                `team-{{index .PVC.Labels "team"}}`,
		"${.PVC.annotations.example.com/owner}/x": `{{index .PVC.Annotations "example.com/owner"}}/x`,
		`${.PVC.labels.a"b}`:                      `{{index .PVC.Labels "a\"b"}}`,
		"plain":                                   "plain",
	} {
		if got, err := nspPattern(in); err != nil || got != want {
			t.Errorf("nspPattern(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"${.PVC.uid}", "{{.PVC.Name}}", "a}}b"} {
		if got, err := nspPattern(in); err == nil {
			t.Errorf("nspPattern(%q) = %q, want an error", in, got)
		}
	}
}

func TestClassParams(t *testing.T) {
	got, err := ClassParams(nspClass(map[string]string{ParamNSPArchiveOnDelete: "false"}), adoption, Target{})
	want := map[string]string{"backend": "nfs", "server": "nfs.example.com", "share": "/exports/nsp",
		"pathPattern": config.DefaultPathPattern, "onDelete": "delete"}
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("ClassParams = %v, %v; want %v", got, err, want)
	}
}
