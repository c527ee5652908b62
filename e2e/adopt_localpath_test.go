//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// lppName and the paths of local-path-provisioner's config dirpv is installed with
// (testdata/install/local-path-config.yaml): node2 has two disks of its own, every other node
// one path.
const (
	lppName    = "rancher.io/local-path"
	lppDefault = "/var/lib/dirpv/lpp"
	lppDisk1   = "/var/lib/dirpv/lpp-disk1"
	lppDisk2   = "/var/lib/dirpv/lpp-disk2"
)

// testAdoptLocalPath: dirpv takes over what local-path-provisioner (LPP) left, shaped exactly as
// LPP makes it (its provisioner.go, v0.0.37): a WaitForFirstConsumer class of LPP's name, PVs
// with a hostPath source <path>/<pv>_<namespace>_<claim> (type DirectoryOrCreate) pinned to
// their node and annotated with it, their directories with data on the nodes. `dirpv adopt
// --dry-run` lists them and changes nothing; a pod keeps reading its volume's data across `dirpv
// adopt`; deleting a claim removes its directory as LPP does; a new claim gets an LPP-shaped
// directory on one of its node's own paths; a forged PV, one outside the node's paths and a
// symlink are refused with an event and can still be deleted.
func testAdoptLocalPath(t *testing.T) {
	nodes := needNodes(t, 2)
	ctx := context.Background()
	ns := namespace(t)
	del, wffc := v1.PersistentVolumeReclaimDelete, storagev1.VolumeBindingWaitForFirstConsumer
	class := storageClass(t, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-path-" + ns}, Provisioner: lppName,
		ReclaimPolicy: &del, VolumeBindingMode: &wffc})
	for _, d := range []string{onHost(nodes[0], lppDefault), onHost(nodes[1], lppDisk1), onHost(nodes[1], lppDisk2), onHost(nodes[0], "/var/lib/dirpv/other")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(d) }) // LPP's paths are this test's only
	}

	// lppVolume makes what LPP made for claim name on node: the claim, its PV bound to it with
	// the hostPath source at path (LPP's own under root unless given), and the directory with
	// data. It returns the PV's name and its directory.
	lppVolume := func(name, node, root, path string) (string, string) {
		t.Helper()
		c := claim(t, ns, name, class, func(c *v1.PersistentVolumeClaim) {
			c.Spec.VolumeName = "pvc-" + name + "-" + ns // bound to it, never provisioned
		})
		pvName := c.Spec.VolumeName
		dir := root + "/" + pvName + "_" + ns + "_" + name
		if path == "" {
			path = dir
			if err := os.Mkdir(onHost(node, dir), 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(onHost(node, dir), "data"), []byte(name+" data"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dirOrCreate := v1.HostPathDirectoryOrCreate
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{
				"pv.kubernetes.io/provisioned-by": lppName, "local.path.provisioner/selected-node": node}},
			Spec: v1.PersistentVolumeSpec{
				PersistentVolumeReclaimPolicy: del,
				AccessModes:                   c.Spec.AccessModes,
				VolumeMode:                    ptr(v1.PersistentVolumeFilesystem),
				Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				PersistentVolumeSource:        v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: path, Type: &dirOrCreate}},
				NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
					MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{node}}},
				}}}},
				ClaimRef:         &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: name, UID: c.UID},
				StorageClassName: class,
			},
		}
		createPeerPV(t, pv)
		return pvName, dir
	}
	_, oldDir := lppVolume("old", nodes[0], lppDefault, "")
	_, keptDir := lppVolume("kept", nodes[1], lppDisk2, "")
	lppVolume("forged", nodes[0], lppDefault, oldDir)                                                    // another PV's directory
	lppVolume("outside", nodes[0], lppDefault, "/var/lib/dirpv/other/pvc-outside-"+ns+"_"+ns+"_outside") // not under the node's paths
	// A directory that is a symbolic link out of the node's paths, where LPP would have one.
	symDir := lppDefault + "/pvc-sym-" + ns + "_" + ns + "_sym"
	if err := os.Symlink("/etc", onHost(nodes[0], symDir)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(onHost(nodes[0], symDir)) })
	lppVolume("sym", nodes[0], lppDefault, symDir)
	old, kept, forged, outside, sym := bound(t, ns, "old"), bound(t, ns, "kept"), bound(t, ns, "forged"), bound(t, ns, "outside"), bound(t, ns, "sym")
	adopt := func(args ...string) string {
		return kubectl(t, append([]string{"-n", dirpvNamespace, "exec", "deploy/dirpv", "-c", "dirpv", "--", "/dirpv", "adopt"}, args...)...)
	}

	// The pod of an LPP volume runs on its node before, and after, the take-over.
	pod(t, ns, "reader", "kept")
	if got := exec1(t, ns, "reader", "cat /data/data"); got != "kept data" {
		t.Fatalf("the pod reads %q from LPP's volume", got)
	}

	t.Run("dry run lists and changes nothing", func(t *testing.T) {
		out := adopt("--dry-run")
		t.Logf("dirpv adopt --dry-run:\n%s", out)
		for _, want := range []string{
			"would adopt  PV " + old.Name + ": " + oldDir + " on node " + nodes[0] + ", onDelete delete",
			"would adopt  PV " + kept.Name + ": " + keptDir + " on node " + nodes[1],
			"refused      PV " + forged.Name, "is not where",
			"refused      PV " + outside.Name, "is not a directory under the paths",
			"refused      PV " + sym.Name,
			"(dry run: nothing changed)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run does not list %q", want)
			}
		}
		for _, pv := range []string{old.Name, kept.Name, forged.Name, outside.Name, sym.Name} {
			if recorded(pv) {
				t.Errorf("PV %s recorded by a dry run", pv)
			}
		}
		if exists(onHost(nodes[0], markerPath(oldDir))) || exists(onHost(nodes[1], markerPath(keptDir))) {
			t.Errorf("a dry run wrote a marker")
		}
	})

	t.Run("deleting a claim adopts and deletes as LPP does", func(t *testing.T) {
		deleteClaim(t, ns, "old")
		event(t, "", old.Name, "VolumeAdopted", oldDir)
		pvGone(t, old.Name)
		waitGone(t, onHost(nodes[0], oldDir))
	})

	t.Run("dirpv adopt takes over under a running pod", func(t *testing.T) {
		out := adopt()
		t.Logf("dirpv adopt:\n%s", out)
		if !strings.Contains(out, "adopted      PV "+kept.Name) || !strings.Contains(out, "refused      PV "+sym.Name) {
			t.Errorf("dirpv adopt does not list %s adopted and %s refused", kept.Name, sym.Name)
		}
		if !recorded(kept.Name) || !exists(onHost(nodes[1], markerPath(keptDir))) {
			t.Fatalf("PV %s not recorded, or its marker missing on %s", kept.Name, nodes[1])
		}
		event(t, "", kept.Name, "VolumeAdopted", keptDir)
		if got := exec1(t, ns, "reader", "cat /data/data"); got != "kept data" {
			t.Errorf("the pod reads %q after the take-over", got)
		}
		deletePod(t, ns, "reader")
		deleteClaim(t, ns, "kept")
		pvGone(t, kept.Name)
		waitGone(t, onHost(nodes[1], keptDir))
	})

	t.Run("new claim of the class", func(t *testing.T) {
		claim(t, ns, "new", class)
		pod(t, ns, "writer", "new", onNode(nodes[1]))
		pv := bound(t, ns, "new")
		src := pvPath(pv)
		if pv.Spec.HostPath == nil || pv.Annotations["dirpv.io/adopted-from"] != "local-path-provisioner" ||
			(src != lppDisk1+"/"+pv.Name+"_"+ns+"_new" && src != lppDisk2+"/"+pv.Name+"_"+ns+"_new") {
			t.Fatalf("PV source %+v, annotations %v; want a hostPath under %s or %s, laid out as LPP would", pv.Spec.HostPath, pv.Annotations, lppDisk1, lppDisk2)
		}
		exec1(t, ns, "writer", "echo new > /data/data")
		if b, err := os.ReadFile(filepath.Join(onHost(nodes[1], src), "data")); err != nil || string(b) != "new\n" {
			t.Errorf("%s on %s: %q %v", src, nodes[1], b, err)
		}
		if !exists(onHost(nodes[1], markerPath(src))) {
			t.Errorf("%s has no marker", src)
		}
		deletePod(t, ns, "writer")
		deleteClaim(t, ns, "new")
		pvGone(t, pv.Name)
		waitGone(t, onHost(nodes[1], src))
	})

	t.Run("forged, out-of-root and symlinked PVs refused", func(t *testing.T) {
		for _, c := range []struct {
			pv        *v1.PersistentVolume
			name, why string
		}{{forged, "forged", "is not where"}, {outside, "outside", "is not a directory under the paths"}, {sym, "sym", "not a directory"}} {
			deleteClaim(t, ns, c.name)
			event(t, "", c.pv.Name, "AdoptionRefused", c.why)
			if recorded(c.pv.Name) {
				t.Errorf("refused PV %s recorded", c.pv.Name)
			}
			if err := client.CoreV1().PersistentVolumes().Delete(ctx, c.pv.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			pvGone(t, c.pv.Name)
		}
		if fi, err := os.Lstat(onHost(nodes[0], symDir)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the symlink %s: %v %v; want it left as it was", symDir, fi, err)
		}
		if _, err := os.Stat("/etc/hostname"); err != nil {
			t.Errorf("/etc after the refused symlink: %v", err)
		}
	})
}
