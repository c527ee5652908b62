package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"dirpv.io/dirpv/provisioner/pathname"
)

// Backend is a kind of volume as class validation sees it: its name and the parameters only it
// takes. Each backend package implements it; config knows none of them.
type Backend interface {
	// Name is the value of the class parameter "backend" that selects it.
	Name() string
	// Params lists the parameters only this backend takes.
	Params() []string
	// ParseParams validates those of its parameters that are in params (which holds every
	// parameter of the class), reports each problem with bad, and returns its part of the class.
	ParseParams(params map[string]string, bad func(key, format string, args ...any)) any
}

// OnDelete is what happens to a volume's directory when its PV is deleted under reclaimPolicy Delete.
type OnDelete string

const (
	OnDeleteDelete  OnDelete = "delete"
	OnDeleteRetain  OnDelete = "retain"
	OnDeleteArchive OnDelete = "archive"
)

// OnDeleteValues are the values of OnDelete.
var OnDeleteValues = []OnDelete{OnDeleteDelete, OnDeleteRetain, OnDeleteArchive}

// Capacity is what a volume's size means.
type Capacity string

const (
	// CapacityLabel: the size is recorded on the PV and not enforced.
	CapacityLabel Capacity = "label"
	// CapacityEnforce: the volume directory is held to its size by the filesystem.
	CapacityEnforce Capacity = "enforce"
)

// StorageClass parameter keys.
const (
	ParamBackend     = "backend"
	ParamPathPattern = "pathPattern"
	ParamOnDelete    = "onDelete"
	ParamMode        = "mode"
	ParamUID         = "uid"
	ParamGID         = "gid"
	ParamRecycle     = "recycle"
	ParamCapacity    = "capacity"
	ParamOvercommit  = "overcommit"
)

// Defaults of StorageClass parameters.
const (
	DefaultPathPattern = "{{.PVC.Namespace}}-{{.PVC.Name}}-{{.PV.Name}}"
	DefaultMode        = fs.FileMode(0o777)
)

// commonParams are the parameters of every backend.
var commonParams = []string{ParamBackend, ParamPathPattern, ParamOnDelete, ParamMode, ParamUID, ParamGID, ParamRecycle, ParamCapacity, ParamOvercommit}

// Class is the validated form of a StorageClass's parameters.
type Class struct {
	// Backend names the class's backend; Params is that backend's part of the class, the value
	// its ParseParams returned.
	Backend string
	Params  any
	// PathPattern renders each volume's directory, relative to the export or basePath.
	PathPattern *template.Template
	OnDelete    OnDelete
	// Mode is applied to each new directory; UID and GID are -1 when not set.
	Mode fs.FileMode
	UID  int
	GID  int
	// Recycle makes released volumes scrubbed and offered to the next claim instead of reclaimed.
	Recycle bool
	// Capacity says whether volumes are held to their size.
	Capacity Capacity
	// Overcommit: with CapacityEnforce, the limits of the volumes on a filesystem may add up to
	// its size times this.
	Overcommit float64
}

// ParseClass validates a StorageClass's parameters for one of backends. Every problem is
// reported, each naming its key.
func ParseClass(params map[string]string, backends []Backend) (*Class, error) {
	c := &Class{OnDelete: OnDeleteDelete, Mode: DefaultMode, UID: -1, GID: -1, Capacity: CapacityLabel, Overcommit: 1}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("parameter %q: %s", key, fmt.Sprintf(format, args...)))
	}
	if b := chooseBackend(params, backends, bad); b != nil {
		c.Backend = b.Name()
		c.Params = b.ParseParams(params, bad)
	}
	c.parseCommon(params, bad)
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, fmt.Errorf("invalid StorageClass parameters: %w", errors.Join(errs...))
	}
	return c, nil
}

// chooseBackend returns the backend that params name, or nil, and finds every parameter that is
// unknown or belongs to another backend.
func chooseBackend(params map[string]string, backends []Backend, bad func(key, format string, args ...any)) Backend {
	var names []string
	owner := map[string]string{} // parameter -> the backend that takes it
	var b Backend
	for _, x := range backends {
		names = append(names, x.Name())
		for _, key := range x.Params() {
			owner[key] = x.Name()
		}
		if x.Name() == params[ParamBackend] {
			b = x
		}
	}
	switch name := params[ParamBackend]; {
	case name == "":
		bad(ParamBackend, "is required (one of %s)", strings.Join(names, ", "))
	case b == nil:
		bad(ParamBackend, "%q is not one of %s", name, strings.Join(names, ", "))
	}

	for _, key := range sortedKeys(params) {
		other, known := owner[key]
		switch {
		case slices.Contains(commonParams, key):
		case !known:
			allowed := append(slices.Clone(commonParams), slices.Collect(maps.Keys(owner))...)
			slices.Sort(allowed)
			bad(key, "unknown parameter (allowed: %s)", strings.Join(allowed, ", "))
		case b != nil && other != b.Name():
			bad(key, "applies only to backend %s, not %s", other, b.Name())
		}
	}
	return b
}

// parseCommon reads the parameters every backend's classes take into c.
func (c *Class) parseCommon(params map[string]string, bad func(key, format string, args ...any)) {
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

	OneOf(params, ParamOnDelete, bad, &c.OnDelete, OnDeleteValues...)
	if v, ok := params[ParamMode]; ok {
		if m, err := ParseMode(v); err != nil {
			bad(ParamMode, "%v", err)
		} else {
			c.Mode = m
		}
	}
	recycle := "false"
	OneOf(params, ParamRecycle, bad, &recycle, "true", "false")
	c.Recycle = recycle == "true"
	OneOf(params, ParamCapacity, bad, &c.Capacity, CapacityLabel, CapacityEnforce)
	if v, ok := params[ParamOvercommit]; ok {
		f, err := ParseOvercommit(v)
		switch {
		case err != nil:
			bad(ParamOvercommit, "%v", err)
		case c.Capacity != CapacityEnforce:
			bad(ParamOvercommit, "applies only with %s: %s", ParamCapacity, CapacityEnforce)
		default:
			c.Overcommit = f
		}
	}
	for key, dst := range map[string]*int{ParamUID: &c.UID, ParamGID: &c.GID} {
		if v, ok := params[key]; ok {
			n, err := ParseID(v)
			if err != nil {
				bad(key, "%v", err)
				continue
			}
			*dst = n
		}
	}
}

// OneOf sets *dst to the parameter key of params when it is one of values, and reports any other
// value with bad, naming them all. A parameter that is not there leaves *dst as it is.
func OneOf[T ~string](params map[string]string, key string, bad func(key, format string, args ...any), dst *T, values ...T) {
	v, ok := params[key]
	if !ok {
		return
	}
	if slices.Contains(values, T(v)) {
		*dst = T(v)
		return
	}
	bad(key, "%q is not one of %s", v, Join(values))
}

// Join lists values for messages: "a, b, c".
func Join[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// maxOvercommit bounds the overcommit parameter: beyond it, a class had better say label.
const maxOvercommit = 100

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
		return "", fmt.Errorf("%s is not an absolute path", pathname.Quote(p))
	}
	if path.Clean(p) != p {
		return "", fmt.Errorf("%s is not a clean path (want %s)", pathname.Quote(p), pathname.Quote(path.Clean(p)))
	}
	if err := pathname.CheckCharacters(p); err != nil {
		return "", fmt.Errorf("%s: %w", pathname.Quote(p), err)
	}
	return p, nil
}

// CleanRoot accepts the directory a class makes its volumes under (a hostPath basePath, an nfs
// share): "/", or a path CleanAbsolute accepts whose components below "/" are those a rendered
// pathPattern may have (pathname.Validate). In particular none is hidden: names starting with "."
// are dirpv's ownership markers, and a root inside one would mix volumes with them.
func CleanRoot(p string) (string, error) {
	p, err := CleanAbsolute(p)
	if err != nil || p == "/" {
		return p, err
	}
	if err := pathname.Validate(p[1:]); err != nil {
		return "", fmt.Errorf("%s: %w", pathname.Quote(p), err)
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
