package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"dirpv.io/dirpv/provisioner/pathname"
)

// DefaultLocalPathName is the provisioner name local-path-provisioner serves unless its
// --provisioner-name was changed.
const DefaultLocalPathName = "rancher.io/local-path"

// LocalPathOtherNodes is the nodePathMap entry of local-path-provisioner that applies to every
// node not listed by name.
const LocalPathOtherNodes = "DEFAULT_PATH_FOR_NON_LISTED_NODES"

// LocalPath is local-path-provisioner's config.json (the file of its ConfigMap
// local-path-config), as dirpv honours it: where each node's volumes go, for every class or
// class by class. What dirpv cannot do as local-path-provisioner does is refused when the file
// is read, so dirpv does not start.
type LocalPath struct {
	// Paths applies to every class when Classes is nil (its top-level nodePathMap).
	Paths NodePaths
	// Classes is its storageClassConfigs: each class's own paths; a class not listed has none.
	Classes map[string]NodePaths
}

// NodePaths maps a node's name, or LocalPathOtherNodes, to the directories its volumes go in.
type NodePaths map[string][]string

// localPathFile is config.json as local-path-provisioner v0.0.37 reads it (its provisioner.go,
// ConfigData); every key is read, so that none is passed over in silence.
type localPathFile struct {
	NodePathMap          []localPathNode           `json:"nodePathMap"`
	SharedFileSystemPath string                    `json:"sharedFileSystemPath"`
	StorageClassConfigs  map[string]localPathClass `json:"storageClassConfigs"`
	CmdTimeoutSeconds    int                       `json:"cmdTimeoutSeconds"`
	SetupCommand         string                    `json:"setupCommand"`
	TeardownCommand      string                    `json:"teardownCommand"`
}

type localPathClass struct {
	NodePathMap          []localPathNode `json:"nodePathMap"`
	SharedFileSystemPath string          `json:"sharedFileSystemPath"`
}

type localPathNode struct {
	Node  string   `json:"node"`
	Paths []string `json:"paths"`
}

// maxLocalPathFile bounds the file read: a config of thousands of nodes is far smaller.
const maxLocalPathFile = 4 << 20

// ReadLocalPath reads local-path-provisioner's config.json from file.
func ReadLocalPath(file string) (*LocalPath, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLocalPathFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxLocalPathFile {
		return nil, fmt.Errorf("%s: more than %d bytes", file, maxLocalPathFile)
	}
	l, err := ParseLocalPath(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return l, nil
}

// ParseLocalPath validates local-path-provisioner's config.json. It refuses what dirpv cannot
// honour: a sharedFileSystemPath (a filesystem every node mounts is dirpv's nfs backend),
// setupCommand and teardownCommand (dirpv makes and removes directories itself, confined to
// them), unknown keys, and paths local-path-provisioner itself would refuse.
func ParseLocalPath(data []byte) (*LocalPath, error) {
	var f localPathFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("local-path-provisioner's config.json: %w", err)
	}
	var errs []error
	if f.SetupCommand != "" || f.TeardownCommand != "" {
		errs = append(errs, errors.New("setupCommand, teardownCommand: dirpv makes and removes the directories itself and runs no commands of the config's; remove them (dirpv makes each directory mode 0777, as local-path-provisioner's own setup script does)"))
	}
	l := &LocalPath{}
	if f.StorageClassConfigs == nil {
		var err error
		if l.Paths, err = localPathNodes(f.NodePathMap, f.SharedFileSystemPath); err != nil {
			errs = append(errs, err)
		}
	} else {
		// local-path-provisioner reads only storageClassConfigs when it is there.
		l.Classes = map[string]NodePaths{}
		for _, name := range sortedKeys(f.StorageClassConfigs) {
			c := f.StorageClassConfigs[name]
			paths, err := localPathNodes(c.NodePathMap, c.SharedFileSystemPath)
			if err != nil {
				errs = append(errs, fmt.Errorf("storageClassConfigs %s: %w", pathname.Quote(name), err))
			}
			l.Classes[name] = paths
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return l, nil
}

// localPathNodes validates one nodePathMap.
func localPathNodes(nodes []localPathNode, shared string) (NodePaths, error) {
	if shared != "" {
		return nil, fmt.Errorf("sharedFileSystemPath %s: dirpv has no volume that every node reaches through a local path; serve that filesystem with dirpv's nfs backend instead (see docs/migration.md)", pathname.Quote(shared))
	}
	if len(nodes) == 0 {
		return nil, errors.New("nodePathMap is empty: no node has a path for volumes")
	}
	out := NodePaths{}
	var errs []error
	for _, n := range nodes {
		if _, dup := out[n.Node]; dup {
			errs = append(errs, fmt.Errorf("nodePathMap: node %s listed twice", pathname.Quote(n.Node)))
			continue
		}
		var roots []string
		for _, p := range n.Paths {
			root, err := localPathRoot(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("nodePathMap: node %s: %w", pathname.Quote(n.Node), err))
				continue
			}
			if slices.Contains(roots, root) {
				errs = append(errs, fmt.Errorf("nodePathMap: node %s: path %s listed twice", pathname.Quote(n.Node), root))
				continue
			}
			roots = append(roots, root)
		}
		sort.Strings(roots) // local-path-provisioner keeps them as a set
		out[n.Node] = roots
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// localPathRoot is one path of a nodePathMap as dirpv uses it: local-path-provisioner takes any
// absolute path but "/" and cleans it; dirpv drops a trailing "/" and otherwise takes only clean
// paths it would take as a basePath (no "..", no hidden component).
func localPathRoot(p string) (string, error) {
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
	}
	if p == "/" || p == "" {
		return "", errors.New(`path "/" cannot hold volumes`)
	}
	return CleanRoot(p)
}

// Roots are the directories on node where class's volumes go, as local-path-provisioner
// chooses them: the node's own entry, or else the entry for nodes not listed; none is an error
// that says why. Node "" is a node not chosen yet.
func (l *LocalPath) Roots(class, node string) ([]string, error) {
	paths := l.Paths
	if l.Classes != nil {
		var ok bool
		if paths, ok = l.Classes[class]; !ok {
			return nil, fmt.Errorf("local-path-provisioner's config has no storageClassConfigs entry for StorageClass %s", class)
		}
	}
	if node == "" && len(paths) > 1 {
		// dirpv would choose the node (Immediate binding); the paths must not depend on it.
		return nil, fmt.Errorf("local-path-provisioner's config gives nodes paths of their own, so a volume of StorageClass %s needs its node first (volumeBindingMode WaitForFirstConsumer)", class)
	}
	roots, ok := paths[node]
	if !ok {
		if roots, ok = paths[LocalPathOtherNodes]; !ok {
			return nil, fmt.Errorf("local-path-provisioner's config lists no paths for node %s, and none for %s", node, LocalPathOtherNodes)
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("local-path-provisioner's config gives node %s no paths", node)
	}
	return roots, nil
}

// all is every path of the config, each once, in order.
func (l *LocalPath) all() []string {
	var out []string
	add := func(np NodePaths) {
		for _, roots := range np {
			for _, r := range roots {
				if !slices.Contains(out, r) {
					out = append(out, r)
				}
			}
		}
	}
	add(l.Paths)
	for _, np := range l.Classes {
		add(np)
	}
	slices.Sort(out)
	return out
}
