package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"dirpv.io/dirpv/provisioner/pathname"
)

// Peer names another provisioner whose volumes and classes dirpv can take over (--adopt).
type Peer string

const (
	// PeerNSP is nfs-subdir-external-provisioner: its PVs are nfs subdirectories of one export.
	PeerNSP Peer = "nfs-subdir-external-provisioner"
	// PeerLocalPath is local-path-provisioner: its PVs are directories on nodes.
	PeerLocalPath Peer = "local-path-provisioner"
)

// Peers are the provisioners dirpv can take over.
var Peers = []Peer{PeerNSP, PeerLocalPath}

// DefaultNSPName is the provisioner name nfs-subdir-external-provisioner's deployment and chart
// use unless its PROVISIONER_NAME was changed.
const DefaultNSPName = "k8s-sigs.io/nfs-subdir-external-provisioner"

// Adoption is one --adopt: the peer, the provisioner name its classes and PVs bear, and where
// it made its directories: for nfs-subdir-external-provisioner the export (its NFS_SERVER and
// NFS_PATH), for local-path-provisioner the paths of its config.json.
type Adoption struct {
	Peer   Peer
	Name   string
	Server string
	Path   string
	// Config is local-path-provisioner's config.json, LocalPath what it says.
	Config    string
	LocalPath *LocalPath
}

// String is the flag's value for a.
func (a Adoption) String() string {
	if a.Peer == PeerLocalPath {
		return fmt.Sprintf("%s,config=%s,name=%s", a.Peer, a.Config, a.Name)
	}
	return fmt.Sprintf("%s,server=%s,path=%s,name=%s", a.Peer, a.Server, a.Path, a.Name)
}

// adoptKeys are the keys of each peer's --adopt, and its default name.
var adoptKeys = map[Peer]struct {
	keys []string
	name string
}{
	PeerNSP:       {[]string{"server", "path", "name"}, DefaultNSPName},
	PeerLocalPath: {[]string{"config", "name"}, DefaultLocalPathName},
}

// Adoptions is the repeatable --adopt flag.
type Adoptions []Adoption

// String implements flag.Value.
func (as *Adoptions) String() string {
	var parts []string
	for _, a := range *as {
		parts = append(parts, a.String())
	}
	return strings.Join(parts, " ")
}

// Set implements flag.Value, parsing nfs-subdir-external-provisioner,server=S,path=/P[,name=N]
// or local-path-provisioner,config=FILE[,name=N]. What the other flags must agree with (the
// export is served, the paths lie within --hostpath-root, the name is not dirpv's own) is
// Options.Validate's.
func (as *Adoptions) Set(v string) error {
	fields := strings.Split(v, ",")
	a := Adoption{Peer: Peer(fields[0])}
	spec, ok := adoptKeys[a.Peer]
	if !ok {
		return fmt.Errorf("%s: %s is not a provisioner dirpv can take over (%s)", pathname.Quote(v), pathname.Quote(fields[0]), Join(Peers))
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		if !ok || seen[key] {
			return fmt.Errorf("%s: %s: want key=value, each key once", pathname.Quote(v), pathname.Quote(f))
		}
		seen[key] = true
		if !slices.Contains(spec.keys, key) {
			return fmt.Errorf("%s: unknown key %s (want %s)", pathname.Quote(v), pathname.Quote(key), strings.Join(spec.keys, ", "))
		}
		switch key {
		case "server":
			a.Server = val
		case "path":
			a.Path = val
		case "name":
			a.Name = val
		case "config":
			a.Config = val
		}
	}
	if a.Name == "" {
		a.Name = spec.name
	}
	if msgs := validation.IsQualifiedName(a.Name); len(msgs) > 0 {
		return fmt.Errorf("%s: name %s: %s", pathname.Quote(v), pathname.Quote(a.Name), strings.Join(msgs, "; "))
	}
	if err := a.where(); err != nil {
		return fmt.Errorf("%s: %w", pathname.Quote(v), err)
	}
	for _, b := range *as {
		if b.Name == a.Name {
			return fmt.Errorf("%s: provisioner name %s adopted twice", pathname.Quote(v), a.Name)
		}
	}
	*as = append(*as, a)
	return nil
}

// where reads and checks where a's peer made its directories.
func (a *Adoption) where() error {
	if a.Peer == PeerLocalPath {
		if a.Config == "" {
			return errors.New("config: the path of local-path-provisioner's config.json (the file of its ConfigMap local-path-config) is required")
		}
		l, err := ReadLocalPath(a.Config)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		a.LocalPath = l
		return nil
	}
	if err := CheckServer(a.Server); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	// The same rule as a class's share: a directory volumes are made in.
	p, err := CleanRoot(a.Path)
	if err != nil {
		return fmt.Errorf("path: %w", err)
	}
	a.Path = p
	return nil
}

// ByName returns the adoption of provisioner name, or nil.
func (as Adoptions) ByName(name string) *Adoption {
	for i := range as {
		if as[i].Name == name {
			return &as[i]
		}
	}
	return nil
}

// validate checks the adoptions against the other options: each name is not one dirpv serves
// already, each export is one dirpv has mounted (its volumes are worked on there), and each
// node path lies within --hostpath-root (dirpv works on nodes only there).
func (as Adoptions) validate(o *Options, bad func(flag, format string, args ...any)) {
	for _, a := range as {
		if a.Name == o.Name || a.Name == o.CapacityName {
			bad("adopt", "%s: provisioner name %s is dirpv's own (--name, --capacity-name)", a, a.Name)
		}
		if a.LocalPath != nil {
			for _, p := range a.LocalPath.all() {
				if _, ok := RelWithin(o.HostPathRoot, p); !ok {
					bad("adopt", "%s: path %s of local-path-provisioner's config is not within --hostpath-root %s; set --hostpath-root to a directory holding every path of the config", a, p, o.HostPathRoot)
				}
			}
			continue
		}
		if e, _ := o.NFSExports.Containing(a.Server, a.Path); e == nil {
			bad("adopt", "%s: %s:%s is not within an export dirpv mounts; add --nfs-export=%s:%s=/local/path and its volume to the Deployment", a, a.Server, a.Path, a.Server, a.Path)
		}
	}
}
