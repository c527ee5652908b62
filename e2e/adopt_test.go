//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// nspName and nspDir: dirpv adopts nfs-subdir-external-provisioner under its default name, on
// the export's subdirectory nsp (testdata/install: --adopt).
const (
	nspName = "k8s-sigs.io/nfs-subdir-external-provisioner"
	nspDir  = exportDir + "/nsp"
)

// testAdopt: dirpv takes over what nfs-subdir-external-provisioner (NSP) left, shaped exactly as
// NSP makes it (its cmd/nfs-subdir-external-provisioner/provisioner.go): a class of NSP's name,
// PVs with an nfs source ${path}/${namespace}-${pvcName}-${pvName} bound to their claims, their
// directories on the export. `dirpv adopt --dry-run` lists them and changes nothing; `dirpv
// adopt` takes one over, and a Linux NFS client mounting its PV's source reads its data; deleting the claims archives their directories as NSP names archives;
// a new claim of the class gets an NSP-shaped directory; a forged PV and one outside NSP's
// path are refused with an event and can still be deleted.
func testAdopt(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	del := v1.PersistentVolumeReclaimDelete
	class := storageClass(t, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs-client-" + ns}, Provisioner: nspName,
		Parameters: map[string]string{"archiveOnDelete": "true"}, ReclaimPolicy: &del})
	// NSP runs as root on its export and makes every directory 0777.
	if err := os.MkdirAll(nspDir, 0o777); err != nil {
		t.Fatal(err)
	}

	// nspVolume makes what NSP made for claim name: the claim, its PV bound to it with the nfs
	// source at path (NSP's own unless given), and the directory with data. It returns the PV's
	// name and the directory.
	nspVolume := func(name, path string) (string, string) {
		t.Helper()
		c := claim(t, ns, name, class, func(c *v1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
			c.Spec.VolumeName = "pvc-" + name + "-" + ns // bound to it, never provisioned
		})
		pvName := c.Spec.VolumeName
		dir := nspDir + "/" + ns + "-" + name + "-" + pvName
		if path == "" {
			path = dir
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "data"), []byte(name+" data"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": nspName}},
			Spec: v1.PersistentVolumeSpec{
				PersistentVolumeReclaimPolicy: del,
				AccessModes:                   c.Spec.AccessModes,
				Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: nfsServer, Path: path}},
				ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: name, UID: c.UID},
				StorageClassName:              class,
			},
		}
		createPeerPV(t, pv)
		return pvName, dir
	}
	_, oldDir := nspVolume("old", "")
	_, keptDir := nspVolume("kept", "")
	nspVolume("forged", oldDir)                                   // another PV's directory
	nspVolume("outside", exportDir+"/"+ns+"-outside-pvc-outside") // not under NSP's path
	// Bound together: the binder takes pre-bound claims on its periodic pass.
	old, kept, forged, outside := bound(t, ns, "old"), bound(t, ns, "kept"), bound(t, ns, "forged"), bound(t, ns, "outside")

	t.Run("dry run lists and changes nothing", func(t *testing.T) {
		out := kubectl(t, "-n", dirpvNamespace, "exec", "deploy/dirpv", "-c", "dirpv", "--", "/dirpv", "adopt", "--dry-run")
		t.Logf("dirpv adopt --dry-run:\n%s", out)
		for _, want := range []string{
			"would adopt  PV " + old.Name + ": " + nfsServer + ":" + oldDir + ", onDelete archive",
			"would adopt  PV " + kept.Name,
			"refused      PV " + forged.Name, "is not where",
			"refused      PV " + outside.Name, "is not a directory under " + nspDir,
			"(dry run: nothing changed)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run does not list %q", want)
			}
		}
		for _, pv := range []*v1.PersistentVolume{old, kept, forged, outside} {
			if recorded(pv.Name) {
				t.Errorf("PV %s recorded by a dry run", pv.Name)
			}
		}
		if exists(markerPath(oldDir)) || exists(markerPath(keptDir)) {
			t.Errorf("a dry run wrote a marker")
		}
	})

	t.Run("deleting a claim adopts and archives as NSP does", func(t *testing.T) {
		deleteClaim(t, ns, "old")
		event(t, "", old.Name, "VolumeAdopted", oldDir)
		event(t, "", old.Name, "VolumeArchived", "archived as nsp/archived-"+filepath.Base(oldDir))
		pvGone(t, old.Name)
		archived := filepath.Join(nspDir, "archived-"+filepath.Base(oldDir))
		if b, err := os.ReadFile(filepath.Join(archived, "data")); err != nil || string(b) != "old data" {
			t.Errorf("archive %s: %q %v", archived, b, err)
		}
		if exists(oldDir) {
			t.Errorf("%s still there after archiving", oldDir)
		}
	})

	t.Run("dirpv adopt takes over", func(t *testing.T) {
		out := kubectl(t, "-n", dirpvNamespace, "exec", "deploy/dirpv", "-c", "dirpv", "--", "/dirpv", "adopt")
		t.Logf("dirpv adopt:\n%s", out)
		if !strings.Contains(out, "adopted      PV "+kept.Name) || !strings.Contains(out, "refused      PV "+forged.Name) {
			t.Errorf("dirpv adopt does not list %s adopted and %s refused", kept.Name, forged.Name)
		}
		if !recorded(kept.Name) || !exists(markerPath(keptDir)) {
			t.Fatalf("PV %s not recorded, or its marker missing", kept.Name)
		}
		event(t, "", kept.Name, "VolumeAdopted", keptDir)
		if b, err := os.ReadFile(filepath.Join(keptDir, "data")); err != nil || string(b) != "kept data" {
			t.Errorf("data after adoption: %q %v", b, err)
		}
		// No pod here can mount nfs: a Linux NFS client in a VM mounts the PV's source, as the
		// kubelet would, and finds the data NSP's volume held.
		token := "dirpv-e2e-" + rand.String(10)
		report := vmMount(t, kept, token)
		if !regexp.MustCompile(`(?m)^NFS-VM-LS .* data$`).MatchString(report) {
			t.Errorf("the adopted volume, mounted, does not list its file data:\n%s", report)
		}
		if got, err := os.ReadFile(filepath.Join(keptDir, "dirpv-vm-check")); err != nil || string(got) != token {
			t.Errorf("the file written through the mount, on the server: %q, %v; want %q", got, err, token)
		}
		deleteClaim(t, ns, "kept")
		pvGone(t, kept.Name)
		if !exists(filepath.Join(nspDir, "archived-"+filepath.Base(keptDir), "data")) || exists(keptDir) {
			t.Errorf("%s not archived as archived-%s", keptDir, filepath.Base(keptDir))
		}
	})

	t.Run("new claim of the class", func(t *testing.T) {
		claim(t, ns, "new", class, func(c *v1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
		})
		pv := bound(t, ns, "new")
		dir := nspDir + "/" + ns + "-new-" + pv.Name
		if pv.Spec.NFS == nil || pv.Spec.NFS.Server != nfsServer || pv.Spec.NFS.Path != dir || pv.Annotations["dirpv.io/adopted-from"] != "nfs-subdir-external-provisioner" {
			t.Fatalf("PV source %+v, annotations %v; want %s:%s, laid out as NSP would", pv.Spec.NFS, pv.Annotations, nfsServer, dir)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || !exists(markerPath(dir)) {
			t.Fatalf("%s: %v %v, or no marker", dir, fi, err)
		}
		deleteClaim(t, ns, "new")
		pvGone(t, pv.Name)
		waitGone(t, dir)
		if !exists(filepath.Join(nspDir, "archived-"+filepath.Base(dir))) {
			t.Errorf("%s not archived as archived-%s", dir, filepath.Base(dir))
		}
	})

	t.Run("forged and out-of-root PVs refused", func(t *testing.T) {
		for _, c := range []struct {
			pv        *v1.PersistentVolume
			name, why string
		}{{forged, "forged", "is not where"}, {outside, "outside", "is not a directory under " + nspDir}} {
			deleteClaim(t, ns, c.name)
			event(t, "", c.pv.Name, "AdoptionRefused", c.why)
			if recorded(c.pv.Name) {
				t.Errorf("refused PV %s recorded", c.pv.Name)
			}
			// Refused, it is left as it was, and deleting it is not held by a finalizer of dirpv's.
			if err := client.CoreV1().PersistentVolumes().Delete(ctx, c.pv.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			pvGone(t, c.pv.Name)
		}
		// The archive the forged PV pointed at is untouched.
		if b, err := os.ReadFile(filepath.Join(nspDir, "archived-"+filepath.Base(oldDir), "data")); err != nil || string(b) != "old data" {
			t.Errorf("archive after the forged PV: %q %v", b, err)
		}
	})
}

// createPeerPV creates pv, a PV as a peer made it, and removes it (and the library's finalizer,
// which a refused PV keeps) when the test ends.
func createPeerPV(t *testing.T, pv *v1.PersistentVolume) {
	t.Helper()
	ctx := context.Background()
	if _, err := client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, "application/merge-patch+json", dropFinalizers, metav1.PatchOptions{})
		_ = client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	})
}

// recorded reports whether PV name bears dirpv's record: it was taken over.
func recorded(name string) bool {
	pv, err := client.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	return err == nil && pv.Annotations["dirpv.io/backend"] != ""
}
