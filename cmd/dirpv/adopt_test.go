package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"dirpv.io/dirpv/provisioner"
	"dirpv.io/dirpv/provisioner/backend"
	"dirpv.io/dirpv/provisioner/backend/nfs"
)

func TestProvisionerOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cmdline")
	write := func(args ...string) {
		if err := os.WriteFile(file, []byte(strings.Join(args, "\x00")+"\x00"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("/dirpv", "--namespace=dirpv", "--pod-name=p", "--v=2", "--nfs-export=nfs:/exports=/mnt/e",
		"--adopt=nfs-subdir-external-provisioner,server=nfs,path=/exports/nsp")
	opts, err := provisionerOptions(file)
	if err != nil || len(opts.Adopt) != 1 || opts.Adopt[0].Path != "/exports/nsp" {
		t.Fatalf("options %+v, %v", opts, err)
	}
	write("/dirpv", "helper", "--root=/data")
	if _, err := provisionerOptions(file); err == nil || !strings.Contains(err.Error(), "not the command line of the dirpv provisioner") {
		t.Errorf("helper's command line: %v", err)
	}
	write("/bin/sh")
	if _, err := provisionerOptions(file); err == nil {
		t.Error("another program's command line accepted")
	}
}

// TestAdoptAll: a dry run lists the PVs it would take over and those it refuses, and changes
// nothing; the real run adopts the good one and leaves the forged one as it was.
func TestAdoptAll(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	export := t.TempDir()
	if err := os.MkdirAll(filepath.Join(export, "nsp/ns-data-pvc-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	nspPV := func(name, path string) *v1.PersistentVolume {
		return &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{backend.AnnProvisionedBy: "k8s-sigs.io/nfs-subdir-external-provisioner"}},
			Spec: v1.PersistentVolumeSpec{
				PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs", Path: path}},
				ClaimRef:               &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "u1"},
				StorageClassName:       "nfs-client",
			},
		}
	}
	client := fake.NewClientset(
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs-client"}, Provisioner: "k8s-sigs.io/nfs-subdir-external-provisioner"},
		nspPV("pvc-1", "/exports/nsp/ns-data-pvc-1"),
		nspPV("pvc-forged", "/exports/nsp/ns-data-pvc-1"),
		&v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-other", Annotations: map[string]string{backend.AnnProvisionedBy: "example.com/other"}}},
	)
	file := filepath.Join(t.TempDir(), "cmdline")
	args := []string{"/dirpv", "--namespace=dirpv", "--pod-name=p", "--nfs-export=nfs:/exports=" + export,
		"--adopt=nfs-subdir-external-provisioner,server=nfs,path=/exports/nsp"}
	if err := os.WriteFile(file, []byte(strings.Join(args, "\x00")), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := provisionerOptions(file)
	if err != nil {
		t.Fatal(err)
	}
	prov := &provisioner.Provisioner{Backends: backend.Set{nfs.New(opts, nil, nil)}, Recorder: syncRecorder{ctx: ctx, client: client}, Now: time.Now,
		PVs: client.CoreV1().PersistentVolumes(), Adoptions: opts.Adopt, Peers: provisioner.ClientPeers{Client: client}}

	var out bytes.Buffer
	if err := adoptAll(ctx, client, prov, true, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"would adopt  PV pvc-1: nfs:/exports/nsp/ns-data-pvc-1, onDelete archive", "refused      PV pvc-forged", "2 PVs to take over (dry run: nothing changed)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run lists\n%s\nwant %q", out.String(), want)
		}
	}
	events := func() []string {
		list, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range list.Items {
			got = append(got, e.InvolvedObject.Name+" "+e.Type+" "+e.Reason)
		}
		slices.Sort(got)
		return got
	}
	if entries, _ := os.ReadDir(filepath.Join(export, "nsp")); len(entries) != 1 || len(events()) != 0 {
		t.Errorf("dry run changed the export (%v) or recorded events (%q)", entries, events())
	}

	out.Reset()
	if err := adoptAll(ctx, client, prov, false, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "adopted      PV pvc-1") || !strings.Contains(out.String(), "refused      PV pvc-forged") {
		t.Errorf("run lists\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(export, "nsp/.ns-data-pvc-1.dirpv")); err != nil {
		t.Errorf("marker: %v", err)
	}
	// Recorded before the command exits.
	if got, want := events(), []string{"pvc-1 Normal VolumeAdopted", "pvc-forged Warning AdoptionRefused"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	forged, _ := client.CoreV1().PersistentVolumes().Get(ctx, "pvc-forged", metav1.GetOptions{})
	if backend.Recorded(forged) {
		t.Errorf("forged PV recorded: %v", forged.Annotations)
	}
}
