package peer

import (
	"errors"
	"maps"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/config"
)

// lppAdoption: every node has /opt/lpp, node n1 has two disks instead.
func lppAdoption(t *testing.T) config.Adoption {
	t.Helper()
	l, err := config.ParseLocalPath([]byte(`{"nodePathMap":[
		{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]},
		{"node":"n1","paths":["/mnt/disk1","/mnt/disk2"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return config.Adoption{Peer: config.PeerLocalPath, Name: config.DefaultLocalPathName, LocalPath: l}
}

func lppClass(params, annotations map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-path", Annotations: annotations},
		Provisioner: config.DefaultLocalPathName, Parameters: params}
}

// lppPV is a PV as local-path-provisioner makes it on node for claim ns/data (UID u1).
func lppPV(name, node, path string) *v1.PersistentVolume {
	dirOrCreate := v1.HostPathDirectoryOrCreate
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			backend.AnnProvisionedBy: config.DefaultLocalPathName, AnnLPPSelectedNode: node}},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: path, Type: &dirOrCreate}},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
			ClaimRef:         &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "u1"},
			StorageClassName: "local-path",
		},
	}
}

func node(name string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{v1.LabelHostname: name}}}
}

func TestLocalPathRecord(t *testing.T) {
	tests := []struct {
		name    string
		pv      *v1.PersistentVolume
		class   *storagev1.StorageClass
		claim   *v1.PersistentVolumeClaim
		node    *v1.Node
		edit    func(pv *v1.PersistentVolume)
		want    map[string]string // the record's node, roots and path
		wantErr string
		gone    bool // the node is gone: not a refusal
	}{
		{name: "default naming, a node not listed", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			want: map[string]string{"dirpv.io/node": "n2", "dirpv.io/node-uid": "uid-n2", "dirpv.io/base-path": "/opt/lpp", backend.AnnPath: "pvc-1_ns_data"}},
		{name: "the second disk of a listed node", pv: lppPV("pvc-1", "n1", "/mnt/disk2/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n1"),
			want: map[string]string{"dirpv.io/node": "n1", "dirpv.io/node-uid": "uid-n1", "dirpv.io/base-path": "/mnt/disk2", backend.AnnPath: "pvc-1_ns_data"}},
		{name: "local source", pv: lppPV("pvc-1", "n2", ""), class: lppClass(nil, map[string]string{AnnLPPDefaultVolumeType: "local"}), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) {
				pv.Spec.HostPath = nil
				pv.Spec.Local = &v1.LocalVolumeSource{Path: "/opt/lpp/pvc-1_ns_data"}
			},
			want: map[string]string{"dirpv.io/node": "n2", "dirpv.io/node-uid": "uid-n2", "dirpv.io/base-path": "/opt/lpp", backend.AnnPath: "pvc-1_ns_data"}},
		{name: "pathPattern with its claim", pv: lppPV("pvc-1", "n2", "/opt/lpp/ns/data/blue-pvc-1"), node: node("n2"),
			class: lppClass(map[string]string{ParamLPPPathPattern: `{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ .PVC.Labels.team }}-{{ .PVName }}`}, nil),
			claim: &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "u1", Labels: map[string]string{"team": "blue"}}},
			want:  map[string]string{"dirpv.io/node": "n2", "dirpv.io/node-uid": "uid-n2", "dirpv.io/base-path": "/opt/lpp", backend.AnnPath: "ns/data/blue-pvc-1"}},
		{name: "an older PV without the node annotation", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) { delete(pv.Annotations, AnnLPPSelectedNode) },
			want: map[string]string{"dirpv.io/node": "n2", "dirpv.io/node-uid": "uid-n2", "dirpv.io/base-path": "/opt/lpp", backend.AnnPath: "pvc-1_ns_data"}},

		{name: "node gone", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), gone: true, wantErr: "no longer exists"},
		{name: "forged PV copying another's path", pv: lppPV("pvc-2", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"), wantErr: "not where"},
		{name: "forged claim", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef.Namespace = "other" }, wantErr: "not where"},
		{name: "dot-dot", pv: lppPV("pvc-1", "n2", "/opt/lpp/../etc/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"), wantErr: "not a directory under the paths"},
		{name: "the root itself", pv: lppPV("pvc-1", "n2", "/opt/lpp"), class: lppClass(nil, nil), node: node("n2"), wantErr: "not a directory under the paths"},
		{name: "another node's path", pv: lppPV("pvc-1", "n2", "/mnt/disk1/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"), wantErr: "not a directory under the paths"},
		{name: "outside every path", pv: lppPV("pvc-1", "n1", "/var/lib/kubelet/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n1"), wantErr: "not a directory under the paths"},
		{name: "hidden component", pv: lppPV("pvc-1", "n2", "/opt/lpp/.x/pvc-1_ns_data"), node: node("n2"),
			class: lppClass(map[string]string{ParamLPPPathPattern: ".x/{{.PVName}}_{{.PVC.Namespace}}_{{.PVC.Name}}"}, nil), wantErr: "starts with"},
		{name: "pathPattern escaping", pv: lppPV("pvc-1", "n2", "/opt/etc"), node: node("n2"),
			class: lppClass(map[string]string{ParamLPPPathPattern: "../etc", ParamLPPAllowUnsafePath: "true"}, nil), wantErr: "not a directory under the paths"},
		{name: "affinity and annotation disagree", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) {
				pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values = []string{"n3"}
			}, wantErr: "node affinity selects"},
		{name: "two nodes", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) {
				pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values = []string{"n2", "n3"}
			}, wantErr: "one node"},
		{name: "no affinity", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) { pv.Spec.NodeAffinity = nil }, wantErr: "not pinned"},
		{name: "nfs source", pv: lppPV("pvc-1", "n2", ""), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) {
				pv.Spec.HostPath = nil
				pv.Spec.NFS = &v1.NFSVolumeSource{Server: "x", Path: "/opt/lpp/pvc-1_ns_data"}
			}, wantErr: "not one hostPath or local source"},
		{name: "class gone", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), node: node("n2"), wantErr: "is gone"},
		{name: "another provisioner's", pv: lppPV("pvc-1", "n2", "/opt/lpp/pvc-1_ns_data"), class: lppClass(nil, nil), node: node("n2"),
			edit: func(pv *v1.PersistentVolume) { pv.Annotations[backend.AnnProvisionedBy] = "dirpv.io/provisioner" }, wantErr: "provisioned by"},
		{name: "nodePath excludes it", pv: lppPV("pvc-1", "n1", "/mnt/disk2/pvc-1_ns_data"), node: node("n1"),
			class: lppClass(map[string]string{ParamLPPNodePath: "/mnt/disk1"}, nil), wantErr: "not a directory under the paths"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.edit != nil {
				tc.edit(tc.pv)
			}
			got, err := Record(tc.pv, lppAdoption(t), Found{Class: tc.class, Claim: tc.claim, Node: tc.node})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, ErrRefused) == tc.gone || errors.Is(err, backend.ErrNodeGone) != tc.gone {
					t.Fatalf("err %v, want %q (refused: %v)", err, tc.wantErr, !tc.gone)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{backend.AnnBackend: "hostPath", backend.AnnOnDelete: "delete", backend.AnnAdoptedFrom: "local-path-provisioner"}
			maps.Copy(want, tc.want)
			if !maps.Equal(got, want) {
				t.Fatalf("record %v, want %v", got, want)
			}
		})
	}
}

func TestLocalPathClassParams(t *testing.T) {
	local := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnLPPVolumeType: "Local"}}}
	tests := []struct {
		name    string
		class   *storagev1.StorageClass
		target  Target
		want    map[string]string // over the defaults
		wantErr string
	}{
		{name: "defaults, a node not listed", class: lppClass(nil, nil), target: Target{Node: "n2"}},
		{name: "a listed node's disks", class: lppClass(nil, nil), target: Target{Node: "n1"}, want: map[string]string{"basePath": "/mnt/disk1,/mnt/disk2"}},
		{name: "nodePath", class: lppClass(map[string]string{ParamLPPNodePath: "/mnt/disk2"}, nil), target: Target{Node: "n1"}, want: map[string]string{"basePath": "/mnt/disk2"}},
		{name: "claim asks for local", class: lppClass(nil, nil), target: Target{Node: "n2", Claim: local}, want: map[string]string{"volumeType": "local"}},
		{name: "class default local", class: lppClass(nil, map[string]string{AnnLPPDefaultVolumeType: "local"}), target: Target{Node: "n2"}, want: map[string]string{"volumeType": "local"}},
		{name: "pathPattern", class: lppClass(map[string]string{ParamLPPPathPattern: "{{.PVC.Namespace}}/{{.PVC.Name}}/{{.PVName}}", ParamLPPAllowUnsafePath: "false"}, nil),
			target: Target{Node: "n2"}, want: map[string]string{"pathPattern": "{{.PVC.Namespace}}/{{.PVC.Name}}/{{.PV.Name}}"}},
		{name: "nodeAffinityKey hostname", class: lppClass(map[string]string{ParamLPPNodeAffinityKey: v1.LabelHostname}, nil), target: Target{Node: "n2"}},

		{name: "no node yet, nodes of their own", class: lppClass(nil, nil), wantErr: "needs its node first"},
		{name: "nodePath not the node's", class: lppClass(map[string]string{ParamLPPNodePath: "/opt/lpp"}, nil), target: Target{Node: "n1"}, wantErr: "not one of the paths"},
		{name: "owner pattern", class: lppClass(map[string]string{"userPattern": "{{.PVC.Annotations.uid}}"}, nil), target: Target{Node: "n2"}, wantErr: "setup script"},
		{name: "owner pattern annotation", class: lppClass(nil, map[string]string{"permPattern": "0700"}), target: Target{Node: "n2"}, wantErr: "setup script"},
		{name: "another affinity key", class: lppClass(map[string]string{ParamLPPNodeAffinityKey: "topology.kubernetes.io/zone"}, nil), target: Target{Node: "n2"}, wantErr: "kubernetes.io/hostname only"},
		{name: "unknown parameter", class: lppClass(map[string]string{"basePath": "/x"}, nil), target: Target{Node: "n2"}, wantErr: "unknown to local-path-provisioner"},
		{name: "bad volume type", class: lppClass(nil, map[string]string{AnnLPPDefaultVolumeType: "block"}), target: Target{Node: "n2"}, wantErr: "not hostPath or local"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClassParams(tc.class, lppAdoption(t), tc.target)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			want := map[string]string{"backend": "hostPath", "basePath": "/opt/lpp", "volumeType": "hostPath",
				"pathPattern": "{{.PV.Name}}_{{.PVC.Namespace}}_{{.PVC.Name}}", "onDelete": "delete"}
			maps.Copy(want, tc.want)
			if err != nil || !maps.Equal(got, want) {
				t.Fatalf("params %v, %v; want %v", got, err, want)
			}
		})
	}
}
