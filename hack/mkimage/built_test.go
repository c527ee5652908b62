//go:build imagetest

// The images hack/images.sh built, checked by make image-test (hack/image-test.sh): each
// platform's image in the index, its binary built for it and running (under qemu-user when
// foreign), and the SBOM beside it naming what the binary links.
package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// arches: what each GOARCH's binary is, and the qemu-user-static that runs it elsewhere.
var arches = map[string]struct {
	machine elf.Machine
	class   elf.Class
	order   binary.ByteOrder
	qemu    string
}{
	"amd64":   {elf.EM_X86_64, elf.ELFCLASS64, binary.LittleEndian, "qemu-x86_64-static"},
	"arm64":   {elf.EM_AARCH64, elf.ELFCLASS64, binary.LittleEndian, "qemu-aarch64-static"},
	"arm":     {elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian, "qemu-arm-static"},
	"ppc64le": {elf.EM_PPC64, elf.ELFCLASS64, binary.LittleEndian, "qemu-ppc64le-static"},
	"s390x":   {elf.EM_S390, elf.ELFCLASS64, binary.BigEndian, "qemu-s390x-static"},
}

func TestBuiltImages(t *testing.T) {
	archive, out := os.Getenv("DIRPV_IMAGE_ARCHIVE"), os.Getenv("DIRPV_OUTPUT")
	platforms := strings.Fields(os.Getenv("DIRPV_PLATFORMS"))
	if archive == "" || out == "" || len(platforms) == 0 {
		t.Fatal("run by hack/image-test.sh: DIRPV_IMAGE_ARCHIVE, DIRPV_OUTPUT and DIRPV_PLATFORMS must be set")
	}
	images := readIndex(t, archive)
	if len(images) != len(platforms) {
		t.Errorf("the index has %d images, want one for each of %v", len(images), platforms)
	}
	for _, plat := range platforms {
		t.Run(plat, func(t *testing.T) {
			p, err := v1.ParsePlatform(plat)
			if err != nil {
				t.Fatal(err)
			}
			img, ok := images[p.String()]
			if !ok {
				t.Fatalf("no image for %s in the index", plat)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OS != p.OS || cfg.Architecture != p.Architecture || cfg.Variant != p.Variant {
				t.Errorf("config says %s/%s/%s", cfg.OS, cfg.Architecture, cfg.Variant)
			}
			bin := filepath.Join(t.TempDir(), "dirpv")
			if err := os.WriteFile(bin, fileInImage(t, img, "dirpv"), 0o755); err != nil {
				t.Fatal(err)
			}
			checkBinary(t, bin, p)
			bi, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			checkSBOM(t, filepath.Join(out, "dirpv-"+strings.ReplaceAll(plat, "/", "-")+".cdx.json"), bi)
		})
	}
}

// readIndex reads the OCI layout archive's index: its images by platform.
func readIndex(t *testing.T, archive string) map[string]v1.Image {
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	topm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topm.Manifests) != 1 {
		t.Fatalf("the layout holds %d entries, want the image index alone", len(topm.Manifests))
	}
	idx, err := top.ImageIndex(topm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{}
	for _, d := range m.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s names no platform", d.Digest)
		}
		if images[d.Platform.String()], err = idx.Image(d.Digest); err != nil {
			t.Fatal(err)
		}
	}
	return images
}

// fileInImage is the content of the regular file name in the image's layer.
func fileInImage(t *testing.T, img v1.Image, name string) []byte {
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the image: %v", name, err)
		}
		if h.Name == name && h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// checkBinary: bin is an ELF for p, built for its variant, and runs there: it prints its version
// with p as its platform, and `dirpv helper` prints its usage.
func checkBinary(t *testing.T, bin string, p *v1.Platform) {
	a, ok := arches[p.Architecture]
	if !ok {
		t.Fatalf("no ELF expectations for %s", p.Architecture)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != a.machine || f.Class != a.class || f.ByteOrder != a.order {
		t.Errorf("ELF %v %v %v, want %v %v %v", f.Machine, f.Class, f.ByteOrder, a.machine, a.class, a.order)
	}
	f.Close()
	var cmd []string
	if p.OS != runtime.GOOS || p.Architecture != runtime.GOARCH {
		q, err := exec.LookPath(a.qemu)
		if err != nil {
			t.Fatalf("%s (Debian's qemu-user-static, hack/install-deps.sh) runs the %s binary: %v", a.qemu, p.Architecture, err)
		}
		cmd = append(cmd, q)
	}
	run := func(args ...string) string {
		c := exec.Command(cmd[0], append(cmd[1:], args...)...)
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", c.Args, err, b)
		}
		return string(b)
	}
	cmd = append(cmd, bin)
	if v := run("--version"); !strings.HasPrefix(v, "dirpv ") || !strings.HasSuffix(v, ", "+p.String()+")\n") {
		t.Errorf("--version printed %q, want the platform %s", v, p.String())
	}
	if u := run("helper", "-h"); !strings.Contains(u, "Usage of helper") || !strings.Contains(u, "-termination-log") {
		t.Errorf("dirpv helper -h printed %q", u)
	}
}

// checkSBOM: the CycloneDX SBOM names the binary's main module and every module it links, each
// at the version the binary was built with.
func checkSBOM(t *testing.T, path string, bi *buildinfo.BuildInfo) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type component struct{ Name, Version, Purl string }
	var sbom struct {
		BOMFormat  string `json:"bomFormat"`
		Metadata   struct{ Component component }
		Components []component
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&sbom); err != nil {
		t.Fatal(err)
	}
	if sbom.BOMFormat != "CycloneDX" || sbom.Metadata.Component.Name != bi.Main.Path {
		t.Errorf("%s: format %q, main component %q, want CycloneDX and %s", path, sbom.BOMFormat, sbom.Metadata.Component.Name, bi.Main.Path)
	}
	have := map[string]string{}
	for _, c := range sbom.Components {
		have[c.Name] = c.Version
	}
	if len(bi.Deps) == 0 {
		t.Fatal("the binary names no modules")
	}
	sawClientGo := false
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		sawClientGo = sawClientGo || d.Path == "k8s.io/client-go"
		if have[d.Path] != d.Version {
			t.Errorf("%s: module %s at %q, the binary has %s", path, d.Path, have[d.Path], d.Version)
		}
	}
	if !sawClientGo {
		t.Error("the binary links no k8s.io/client-go")
	}
}
