// Command mkimage builds one-layer container images from directories, without a container
// engine, and writes them as a tarball that `ctr images import` (and `docker load`) accept.
//
//	mkimage --rootfs DIR --ref IMAGE_REF --out OUT.tar --entrypoint /path [--user UID:GID] [--env K=V]... [ARG...]
//	mkimage --platform OS/ARCH[/VARIANT]=DIR... --ref IMAGE_REF --out OUT.tar --entrypoint /path ...
//
// With --rootfs, one image for this machine's platform, in Docker's `docker save` format. With
// --platform (repeatable), an image per platform, each from its directory and with that platform
// in its config, under one OCI image index named IMAGE_REF, in an OCI image layout archive; an
// importer picks its platform's image from the index.
//
// Every entry in a layer is owned by 0:0 whoever owns the files on disk, so the image is
// the same whichever user built it; modes are kept. Timestamps are fixed, so the same
// rootfs always gives the same image digest. Extra positional arguments become the
// image's Cmd (arguments to the entrypoint).
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the modification time of every layer entry (reproducible layers).
var epoch = time.Unix(0, 0).UTC()

type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }
func (e *envList) Set(s string) error {
	if !strings.Contains(s, "=") {
		return fmt.Errorf("%q is not K=V", s)
	}
	*e = append(*e, s)
	return nil
}

// platformRoot is an image of the index: its platform and the directory it is made from.
type platformRoot struct {
	platform v1.Platform
	rootfs   string
}

type platformList []platformRoot

func (l *platformList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, p.platform.String()+"="+p.rootfs)
	}
	return strings.Join(s, ",")
}

// Set parses OS/ARCH[/VARIANT]=DIR.
func (l *platformList) Set(s string) error {
	spec, dir, ok := strings.Cut(s, "=")
	parts := strings.Split(spec, "/")
	if !ok || dir == "" || len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return fmt.Errorf("%q is not OS/ARCH[/VARIANT]=DIR", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	for _, q := range *l {
		if q.platform.Equals(p) {
			return fmt.Errorf("platform %s given twice", p.String())
		}
	}
	*l = append(*l, platformRoot{platform: p, rootfs: dir})
	return nil
}

type options struct {
	rootfs, ref, out, entrypoint, user string
	platforms                          platformList
	env                                envList
	cmd                                []string
}

func main() {
	var o options
	flag.StringVar(&o.rootfs, "rootfs", "", "directory to pack as the image's only layer, for this machine's platform")
	flag.Var(&o.platforms, "platform", "OS/ARCH[/VARIANT]=DIR: an image for that platform from DIR, in an OCI image index (repeatable; instead of --rootfs)")
	flag.StringVar(&o.ref, "ref", "", "image reference to tag the image with, e.g. dirpv.io/dirpv:v0.1.0")
	flag.StringVar(&o.out, "out", "", "output tarball path")
	flag.StringVar(&o.entrypoint, "entrypoint", "", "absolute path of the entrypoint inside the image")
	flag.StringVar(&o.user, "user", "", "user the container runs as, UID[:GID] (default: root)")
	flag.Var(&o.env, "env", "environment variable K=V (repeatable; PATH has a default)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mkimage {--rootfs DIR | --platform OS/ARCH[/VARIANT]=DIR...} --ref IMAGE_REF --out OUT.tar --entrypoint /path [--user UID:GID] [--env K=V]... [ARG...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	o.cmd = flag.Args()
	if (o.rootfs == "") == (len(o.platforms) == 0) || o.ref == "" || o.out == "" || o.entrypoint == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(o); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func build(o options) error {
	if !strings.HasPrefix(o.entrypoint, "/") {
		return fmt.Errorf("entrypoint %q must be an absolute path", o.entrypoint)
	}
	tag, err := name.NewTag(o.ref)
	if err != nil {
		return err
	}
	// Write next to the target and rename, so a failed run never leaves a truncated tarball
	// that a later cached run would import.
	tmp := o.out + ".tmp"
	if o.rootfs != "" {
		img, err := image(o, o.rootfs, v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH})
		if err == nil {
			err = tarball.WriteToFile(tmp, tag, img)
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
		return os.Rename(tmp, o.out)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pr := range o.platforms {
		img, err := image(o, pr.rootfs, pr.platform)
		if err != nil {
			return fmt.Errorf("%s: %w", pr.platform.String(), err)
		}
		p := pr.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	if err := writeLayoutArchive(tmp, tag, idx); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, o.out)
}

// image is the image of platform p made from the directory rootfs.
func image(o options, rootfs string, p v1.Platform) (v1.Image, error) {
	// The entrypoint must exist in the rootfs (a symlink is fine), or the image cannot run.
	if _, err := os.Lstat(filepath.Join(rootfs, o.entrypoint)); err != nil {
		return nil, fmt.Errorf("entrypoint not in rootfs: %w", err)
	}
	var layerTar bytes.Buffer
	if err := tarDir(&layerTar, rootfs); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Created = v1.Time{Time: epoch}
	for i := range cfg.History {
		cfg.History[i].Created = v1.Time{Time: epoch}
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, kv := range o.env {
		if strings.HasPrefix(kv, "PATH=") {
			env[0] = kv
		} else {
			env = append(env, kv)
		}
	}
	cfg.Config = v1.Config{
		Entrypoint: []string{o.entrypoint},
		Cmd:        o.cmd,
		Env:        env,
		User:       o.user,
		WorkingDir: "/",
	}
	return mutate.ConfigFile(img, cfg)
}

// writeLayoutArchive writes idx, named tag, as a tar of an OCI image layout: what `ctr images
// import`, `docker load` (Docker 25+) and skopeo's oci-archive read.
func writeLayoutArchive(out string, tag name.Tag, idx v1.ImageIndex) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	// containerd names the image by io.containerd.image.name; OCI tools by ref.name, the tag.
	err = lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          tag.Name(),
		"org.opencontainers.image.ref.name": tag.TagStr(),
	}))
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := tarDir(f, dir); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tarDir packs a directory tree (regular files, directories, symlinks) into an uncompressed
// tar written to w, with root ownership and fixed timestamps. Other file types are refused.
func tarDir(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{
			Name:    filepath.ToSlash(rel),
			Mode:    int64(fi.Mode().Perm()),
			ModTime: epoch,
			Uid:     0,
			Gid:     0,
			Uname:   "root",
			Gname:   "root",
		}
		// Keep setuid/setgid/sticky (e.g. /tmp's 1777): fs.FileMode keeps them outside Perm().
		if fi.Mode()&fs.ModeSetuid != 0 {
			h.Mode |= 04000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			h.Mode |= 02000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			h.Mode |= 01000
		}
		switch t := fi.Mode().Type(); {
		case t == 0:
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		case t == fs.ModeDir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case t == fs.ModeSymlink:
			h.Typeflag = tar.TypeSymlink
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, t)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, f)
		if err == nil && n != h.Size {
			err = errors.New(p + ": file changed while packing")
		}
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
