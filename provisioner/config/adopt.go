package config

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"dirpv.io/dirpv/provisioner/pathname"
)

// Peer names another provisioner whose volumes and classes dirpv can take over (--adopt).
type Peer string

// PeerNSP is nfs-subdir-external-provisioner: its PVs are nfs subdirectories of one export.
const PeerNSP Peer = "nfs-subdir-external-provisioner"

// Peers are the provisioners dirpv can take over.
var Peers = []Peer{PeerNSP}

// DefaultNSPName is the provisioner name nfs-subdir-external-provisioner's deployment and chart
// use unless its PROVISIONER_NAME was changed.
const DefaultNSPName = "k8s-sigs.io/nfs-subdir-external-provisioner"

// Adoption is one --adopt: the peer, the provisioner name its classes and PVs bear, and (for
// nfs-subdir-external-provisioner) the export it made its directories in (its NFS_SERVER and
// NFS_PATH).
type Adoption struct {
	Peer   Peer
	Name   string
	Server string
	Path   string
}

// String is the flag's value for a.
func (a Adoption) String() string {
	return fmt.Sprintf("%s,server=%s,path=%s,name=%s", a.Peer, a.Server, a.Path, a.Name)
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

// Set implements flag.Value, parsing PEER,server=S,path=/P[,name=N]. What the other flags must
// agree with (the export is served, the name is not dirpv's own) is Options.Validate's.
func (as *Adoptions) Set(v string) error {
	fields := strings.Split(v, ",")
	a := Adoption{Peer: Peer(fields[0])}
	if !slices.Contains(Peers, a.Peer) {
		return fmt.Errorf("%s: %s is not a provisioner dirpv can take over (%s)", pathname.Quote(v), pathname.Quote(fields[0]), Join(Peers))
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		if !ok || seen[key] {
			return fmt.Errorf("%s: %s: want key=value, each key once", pathname.Quote(v), pathname.Quote(f))
		}
		seen[key] = true
		switch key {
		case "server":
			a.Server = val
		case "path":
			a.Path = val
		case "name":
			a.Name = val
		default:
			return fmt.Errorf("%s: unknown key %s (want server, path, name)", pathname.Quote(v), pathname.Quote(key))
		}
	}
	if a.Name == "" {
		a.Name = DefaultNSPName
	}
	if msgs := validation.IsQualifiedName(a.Name); len(msgs) > 0 {
		return fmt.Errorf("%s: name %s: %s", pathname.Quote(v), pathname.Quote(a.Name), strings.Join(msgs, "; "))
	}
	if err := CheckServer(a.Server); err != nil {
		return fmt.Errorf("%s: server: %w", pathname.Quote(v), err)
	}
	// The same rule as a class's share: a directory volumes are made in.
	p, err := CleanRoot(a.Path)
	if err != nil {
		return fmt.Errorf("%s: path: %w", pathname.Quote(v), err)
	}
	a.Path = p
	for _, b := range *as {
		if b.Name == a.Name {
			return fmt.Errorf("%s: provisioner name %s adopted twice", pathname.Quote(v), a.Name)
		}
	}
	*as = append(*as, a)
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
// already, and each export is one dirpv has mounted (its volumes are worked on there).
func (as Adoptions) validate(o *Options, bad func(flag, format string, args ...any)) {
	for _, a := range as {
		if a.Name == o.Name || a.Name == o.CapacityName {
			bad("adopt", "%s: provisioner name %s is dirpv's own (--name, --capacity-name)", a, a.Name)
		}
		if e, _ := o.NFSExports.Containing(a.Server, a.Path); e == nil {
			bad("adopt", "%s: %s:%s is not within an export dirpv mounts; add --nfs-export=%s:%s=/local/path and its volume to the Deployment", a, a.Server, a.Path, a.Server, a.Path)
		}
	}
}
