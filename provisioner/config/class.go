package config

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"dirpv.io/dirpv/provisioner/pathname"
)

// Backend names where a class's directories live.
type Backend string

const (
	// BackendNFS makes each volume a subdirectory of an NFS export.
	BackendNFS Backend = "nfs"
	// BackendHostPath makes each volume a directory on the node the claim's pod runs on.
	BackendHostPath Backend = "hostPath"
)

// OnDelete is what happens to a volume's directory when its PV is deleted under reclaimPolicy Delete.
type OnDelete string

const (
	OnDeleteDelete  OnDelete = "delete"
	OnDeleteRetain  OnDelete = "retain"
	OnDeleteArchive OnDelete = "archive"
)

// StorageClass parameter keys.
const (
	ParamBackend     = "backend"
	ParamServer      = "server"
	ParamShare       = "share"
	ParamBasePath    = "basePath"
	ParamPathPattern = "pathPattern"
	ParamOnDelete    = "onDelete"
	ParamMode        = "mode"
	ParamUID         = "uid"
	ParamGID         = "gid"
	ParamRecycle     = "recycle"
)

// Defaults of StorageClass parameters.
const (
	DefaultBasePath    = "/var/lib/dirpv"
	DefaultPathPattern = "{{.PVC.Namespace}}-{{.PVC.Name}}-{{.PV.Name}}"
	DefaultMode        = fs.FileMode(0o777)
)

// allowedParams maps each parameter to the backends it applies to (nil: all).
var allowedParams = map[string][]Backend{
	ParamBackend:     nil,
	ParamServer:      {BackendNFS},
	ParamShare:       {BackendNFS},
	ParamBasePath:    {BackendHostPath},
	ParamPathPattern: nil,
	ParamOnDelete:    nil,
	ParamMode:        nil,
	ParamUID:         nil,
	ParamGID:         nil,
	ParamRecycle:     nil,
}

// Class is the validated form of a StorageClass's parameters.
type Class struct {
	Backend Backend
	// Server and Share name the NFS export (nfs only).
	Server string
	Share  string
	// BasePath is the directory on the node under which volumes are made (hostPath only).
	BasePath string
	// PathPattern renders each volume's directory, relative to the export or basePath.
	PathPattern *template.Template
	OnDelete    OnDelete
	// Mode is applied to each new directory; UID and GID are -1 when not set.
	Mode fs.FileMode
	UID  int
	GID  int
	// Recycle makes released volumes scrubbed and offered to the next claim instead of reclaimed.
	Recycle bool
}

// ParseClass validates a StorageClass's parameters. Every problem is reported, each naming its key.
func ParseClass(params map[string]string) (*Class, error) {
	c := &Class{BasePath: DefaultBasePath, OnDelete: OnDeleteDelete, Mode: DefaultMode, UID: -1, GID: -1}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("parameter %q: %s", key, fmt.Sprintf(format, args...)))
	}

	switch b := Backend(params[ParamBackend]); b {
	case BackendNFS, BackendHostPath:
		c.Backend = b
	case "":
		bad(ParamBackend, "is required (one of %s, %s)", BackendNFS, BackendHostPath)
	default:
		bad(ParamBackend, "%q is not one of %s, %s", b, BackendNFS, BackendHostPath)
	}

	for _, key := range sortedKeys(params) {
		backends, known := allowedParams[key]
		switch {
		case !known:
			bad(key, "unknown parameter (allowed: %s)", strings.Join(sortedKeys(allowedParams), ", "))
		case backends != nil && c.Backend != "" && !slices.Contains(backends, c.Backend):
			bad(key, "applies only to backend %s, not %s", backends[0], c.Backend)
		}
	}

	if c.Backend == BackendNFS {
		c.Server = params[ParamServer]
		if c.Server == "" {
			bad(ParamServer, "is required for backend nfs")
		} else if strings.ContainsAny(c.Server, "/ \t\n") {
			bad(ParamServer, "%q is not a host name or address", c.Server)
		}
		share, ok := params[ParamShare]
		if !ok || share == "" {
			bad(ParamShare, "is required for backend nfs")
		} else if s, err := CleanAbsolute(share); err != nil {
			bad(ParamShare, "%v", err)
		} else {
			c.Share = s
		}
	}
	if v, ok := params[ParamBasePath]; ok && c.Backend == BackendHostPath {
		if p, err := CleanAbsolute(v); err != nil {
			bad(ParamBasePath, "%v", err)
		} else {
			c.BasePath = p
		}
	}

	pattern := DefaultPathPattern
	if v, ok := params[ParamPathPattern]; ok {
		pattern = v
	}
	if strings.TrimSpace(pattern) == "" {
		bad(ParamPathPattern, "must not be empty")
	} else if t, err := pathname.Parse(pattern); err != nil {
		bad(ParamPathPattern, "%v", err)
	} else {
		c.PathPattern = t
	}

	if v, ok := params[ParamOnDelete]; ok {
		switch d := OnDelete(v); d {
		case OnDeleteDelete, OnDeleteRetain, OnDeleteArchive:
			c.OnDelete = d
		default:
			bad(ParamOnDelete, "%q is not one of %s, %s, %s", v, OnDeleteDelete, OnDeleteRetain, OnDeleteArchive)
		}
	}
	if v, ok := params[ParamMode]; ok {
		if m, err := ParseMode(v); err != nil {
			bad(ParamMode, "%v", err)
		} else {
			c.Mode = m
		}
	}
	if v, ok := params[ParamRecycle]; ok {
		switch v {
		case "true":
			c.Recycle = true
		case "false":
		default:
			bad(ParamRecycle, "%q is not one of true, false", v)
		}
	}
	for key, dst := range map[string]*int{ParamUID: &c.UID, ParamGID: &c.GID} {
		if v, ok := params[key]; ok {
			n, err := strconv.ParseUint(v, 10, 31)
			if err != nil {
				bad(key, "%q is not a number from 0 to %d", v, 1<<31-1)
				continue
			}
			*dst = int(n)
		}
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, fmt.Errorf("invalid StorageClass parameters: %w", errors.Join(errs...))
	}
	return c, nil
}

// ParseMode parses an octal permission mode such as "0775" or "2770" into a FileMode.
func ParseMode(s string) (fs.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 || len(s) < 3 {
		return 0, fmt.Errorf("%q is not an octal mode from 000 to 7777", s)
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// FormatMode is the inverse of ParseMode.
func FormatMode(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

// CleanAbsolute accepts an absolute path that is already clean (no "..", "//" or trailing "/"),
// so what an operator wrote is exactly what is used, and that follows the character rule of
// volume paths.
func CleanAbsolute(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%q is not an absolute path", p)
	}
	if path.Clean(p) != p {
		return "", fmt.Errorf("%q is not a clean path (want %q)", p, path.Clean(p))
	}
	if err := pathname.CheckCharacters(p); err != nil {
		return "", fmt.Errorf("%q: %w", p, err)
	}
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
