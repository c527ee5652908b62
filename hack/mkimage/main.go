// Command mkimage builds a one-layer container image from a directory, without a container
// engine, and writes it as a tarball that `ctr images import` (and `docker load`) accept.
//
//	mkimage --rootfs DIR --ref IMAGE_REF --out OUT.tar --entrypoint /path [--user UID:GID] [--env K=V]... [ARG...]
//
// Every entry in the layer is owned by 0:0 whoever owns the files on disk, so the image is
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
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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

type options struct {
	rootfs, ref, out, entrypoint, user string
	env                                envList
	cmd                                []string
}

func main() {
	var o options
	flag.StringVar(&o.rootfs, "rootfs", "", "directory to pack as the image's only layer")
	flag.StringVar(&o.ref, "ref", "", "image reference to tag the image with, e.g. dirpv.io/dirpv:v0.1.0")
	flag.StringVar(&o.out, "out", "", "output tarball path")
	flag.StringVar(&o.entrypoint, "entrypoint", "", "absolute path of the entrypoint inside the image")
	flag.StringVar(&o.user, "user", "", "user the container runs as, UID[:GID] (default: root)")
	flag.Var(&o.env, "env", "environment variable K=V (repeatable; PATH has a default)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mkimage --rootfs DIR --ref IMAGE_REF --out OUT.tar --entrypoint /path [--user UID:GID] [--env K=V]... [ARG...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	o.cmd = flag.Args()
	if o.rootfs == "" || o.ref == "" || o.out == "" || o.entrypoint == "" {
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
	// The entrypoint must exist in the rootfs (a symlink is fine), or the image cannot run.
	if _, err := os.Lstat(filepath.Join(o.rootfs, o.entrypoint)); err != nil {
		return fmt.Errorf("entrypoint not in rootfs: %w", err)
	}
	tag, err := name.NewTag(o.ref)
	if err != nil {
		return err
	}
	layerTar, err := tarDir(o.rootfs)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = runtime.GOARCH, runtime.GOOS
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
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	// Write next to the target and rename, so a failed run never leaves a truncated tarball
	// that a later cached run would import.
	tmp := o.out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, o.out)
}

// tarDir packs a directory tree (regular files, directories, symlinks) into an uncompressed
// tar, with root ownership and fixed timestamps. Other file types are refused.
func tarDir(root string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
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
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
