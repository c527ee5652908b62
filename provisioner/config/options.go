package config

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"

	"dirpv.io/dirpv/provisioner/pathname"
)

// Options are the provisioner process's settings, one per command-line flag.
type Options struct {
	// Name is the provisioner name StorageClasses refer to.
	Name string
	// CapacityName is a second provisioner name, slash-free so that a CSIDriver object can bear
	// it: hostPath classes that name it get capacity-aware scheduling. Empty: not served.
	CapacityName string
	// CapacityInterval is how often the room of every node is measured again for it.
	CapacityInterval time.Duration
	Kubeconfig       string
	KubeQPS          float64
	KubeBurst        int
	Workers          int

	LeaderElect          bool
	LeaderElectNamespace string
	LeaseDuration        time.Duration
	RenewDeadline        time.Duration
	RetryPeriod          time.Duration

	// HTTPAddress serves /healthz, /readyz and /metrics, and with Profiling /debug/pprof/.
	HTTPAddress string
	Profiling   bool

	NFSExports NFSExports
	// NFSAllow lists the NFS servers and exports classes with access: direct may name; empty:
	// direct access is off. NFSUID and NFSGID are the AUTH_UNIX credentials dirpv sends them.
	NFSAllow NFSAllow
	NFSUID   int
	NFSGID   int
	// NFSCallTimeout bounds each call to a server with access: direct.
	NFSCallTimeout time.Duration
	// HostPathRoot bounds every hostPath class's basePath.
	HostPathRoot string
	// LocalRoot, when set, is where HostPathRoot of the node this process runs on is mounted:
	// operations for that node run in-process instead of in a helper pod.
	LocalRoot string
	// NodeName is the node this process runs on (for LocalRoot); empty means every node.
	NodeName string

	// Namespace and PodName identify this process's pod: helper pods run in Namespace and, unless
	// HelperImage is set, with this pod's image.
	Namespace   string
	PodName     string
	HelperImage string
	// HelperBatchSize is the most operations one helper pod runs; HelperBatchWait how long a
	// helper pod that is not full waits for more before it starts.
	HelperBatchSize int
	HelperBatchWait time.Duration
	// HelperKeepAlive, when set, runs batches in helper pods that stay (agents), each
	// deleted this long after its last batch; 0 runs each batch in a helper pod of its own.
	HelperKeepAlive  time.Duration
	OperationTimeout time.Duration
	// Adopt lists the other provisioners whose classes and volumes dirpv takes over.
	Adopt Adoptions
	// UsageInterval is how often the usage of every bound volume whose capacity is enforced is
	// read from its quota for the metrics; 0: never.
	UsageInterval time.Duration
}

// Defaults for Options.
const (
	DefaultName         = "dirpv.io/provisioner"
	DefaultCapacityName = "dirpv.io"
	DefaultHostPathRoot = "/var/lib/dirpv"
)

// AddFlags registers every option on fs, with its default.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Name, "name", DefaultName, "provisioner name that StorageClasses name in their provisioner field")
	fs.StringVar(&o.CapacityName, "capacity-name", DefaultCapacityName, "a second provisioner name, without a slash, served as well: dirpv publishes the room of hostPath classes that name it on each node (CSIStorageCapacity), and the scheduler sends their pods only where their volumes fit (with the CSIDriver object of that name); empty: off")
	fs.DurationVar(&o.CapacityInterval, "capacity-interval", 10*time.Minute, "how often the room of every node is measured again for --capacity-name's classes (it is also measured after each create, delete and resize on a node)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster configuration")
	fs.Float64Var(&o.KubeQPS, "kube-api-qps", 100, "queries per second to the Kubernetes API")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", 200, "burst of queries to the Kubernetes API")
	fs.IntVar(&o.Workers, "workers", 256, "claims and volumes processed in parallel")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect one active replica through a Lease")
	fs.StringVar(&o.LeaderElectNamespace, "leader-elect-namespace", "", "namespace of the Lease; empty: --namespace")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a lost leader's Lease is honoured")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader tries to renew before it steps down")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", time.Second, "how often candidates try to take the Lease")
	fs.StringVar(&o.HTTPAddress, "http-address", ":8080", "address serving /healthz, /readyz and /metrics; empty: off")
	fs.BoolVar(&o.Profiling, "profiling", false, "also serve Go's profiles at /debug/pprof/ on --http-address")
	fs.Var(&o.NFSExports, "nfs-export", "SERVER:SHARE=/local/path: where the export SERVER:SHARE is mounted in this pod (repeatable)")
	fs.Var(&o.NFSAllow, "nfs-allow", "SERVER or SERVER:/EXPORT that classes with access: direct may name (repeatable); none: direct access is off")
	fs.IntVar(&o.NFSUID, "nfs-uid", 0, "uid dirpv presents to NFS servers with access: direct (AUTH_UNIX)")
	fs.IntVar(&o.NFSGID, "nfs-gid", 0, "gid dirpv presents to NFS servers with access: direct (AUTH_UNIX)")
	fs.DurationVar(&o.NFSCallTimeout, "nfs-call-timeout", 15*time.Second, "how long one call to an NFS server with access: direct may take; a server that takes longer is taken to have stopped answering")
	fs.StringVar(&o.HostPathRoot, "hostpath-root", DefaultHostPathRoot, "directory on the nodes that every hostPath basePath must lie within")
	fs.StringVar(&o.LocalRoot, "local-root", "", "where --hostpath-root of this pod's node is mounted; hostPath work for that node then runs here instead of in helper pods")
	fs.StringVar(&o.NodeName, "node-name", "", "the node this pod runs on (with --local-root); empty: every node (single-node clusters)")
	fs.StringVar(&o.Namespace, "namespace", "", "namespace of this pod, its Lease and helper pods")
	fs.StringVar(&o.PodName, "pod-name", "", "name of this pod: helper pods run its image unless --helper-image is set, and it is their controller")
	fs.StringVar(&o.HelperImage, "helper-image", "", "image of helper pods; empty: this pod's own image")
	fs.IntVar(&o.HelperBatchSize, "helper-batch-size", 64, "most operations one helper pod runs; a node's operations that arrive while its helper pods run share the next one")
	fs.DurationVar(&o.HelperBatchWait, "helper-batch-wait", 250*time.Millisecond, "how long a helper pod that is not full waits for more operations before it starts")
	fs.DurationVar(&o.HelperKeepAlive, "helper-keep-alive", time.Minute, "run batches in a helper pod per node (an agent, through one exec) that stays this long after its last batch; 0: a helper pod per batch")
	fs.DurationVar(&o.OperationTimeout, "operation-timeout", 2*time.Minute, "how long one operation on a volume directory may take, helper pod included")
	fs.Var(&o.Adopt, "adopt", "nfs-subdir-external-provisioner,server=SERVER,path=/PATH[,name=NAME]: serve that provisioner's StorageClasses and take over its PVs on the export SERVER:/PATH (its NFS_SERVER and NFS_PATH; NAME its PROVISIONER_NAME, default "+DefaultNSPName+"), which must lie within an --nfs-export; or local-path-provisioner,config=FILE[,name=NAME]: the same for local-path-provisioner, FILE its config.json, every path of which must lie within --hostpath-root (NAME its --provisioner-name, default "+DefaultLocalPathName+") (repeatable)")
	fs.DurationVar(&o.UsageInterval, "usage-interval", 5*time.Minute, "how often the leader reads what each bound volume whose capacity is enforced holds from its quota, for dirpv_volume_used_bytes and dirpv_volume_capacity_bytes (on hostPath, a helper pod for about every 16 of a node's volumes); 0: never")
}

// Validate checks the options and fills in derived defaults.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if msgs := validation.IsQualifiedName(o.Name); len(msgs) > 0 {
		bad("name", "%q: %s", o.Name, strings.Join(msgs, "; "))
	}
	if o.CapacityName != "" {
		// kube-scheduler finds a class's CSIDriver by the class's provisioner name.
		if msgs := validation.IsDNS1123Subdomain(o.CapacityName); len(msgs) > 0 {
			bad("capacity-name", "%q is not a CSIDriver name (a DNS subdomain): %s", o.CapacityName, strings.Join(msgs, "; "))
		} else if o.CapacityName == o.Name {
			bad("capacity-name", "%q is --name already", o.CapacityName)
		}
		if o.CapacityInterval < time.Second {
			bad("capacity-interval", "must be at least 1s")
		}
	}
	if o.KubeQPS <= 0 {
		bad("kube-api-qps", "must be positive")
	}
	if o.KubeBurst < 1 {
		bad("kube-api-burst", "must be at least 1")
	}
	if o.Workers < 1 {
		bad("workers", "must be at least 1")
	}
	if o.HelperBatchSize < 1 {
		bad("helper-batch-size", "must be at least 1")
	}
	if o.HelperBatchWait < 0 || o.HelperBatchWait > 10*time.Second {
		bad("helper-batch-wait", "must be between 0 and 10s")
	}
	if o.HelperKeepAlive < 0 || o.HelperKeepAlive > time.Hour {
		bad("helper-keep-alive", "must be between 0 and 1h")
	}
	if o.Namespace == "" {
		bad("namespace", "is required (set it from the pod's metadata.namespace)")
	}
	if o.LeaderElectNamespace == "" {
		o.LeaderElectNamespace = o.Namespace
	}
	if o.LeaderElect && !(o.LeaseDuration > o.RenewDeadline && o.RenewDeadline > o.RetryPeriod && o.RetryPeriod > 0) {
		bad("leader-elect-lease-duration", "need lease duration > renew deadline > retry period > 0")
	}
	if _, err := CleanAbsolute(o.HostPathRoot); err != nil {
		bad("hostpath-root", "%v", err)
	}
	if o.LocalRoot != "" {
		if _, err := CleanAbsolute(o.LocalRoot); err != nil {
			bad("local-root", "%v", err)
		}
	}
	if o.HelperImage == "" && o.PodName == "" {
		bad("helper-image", "is required when --pod-name is not set")
	}
	for flag, id := range map[string]int{"nfs-uid": o.NFSUID, "nfs-gid": o.NFSGID} {
		if id < 0 || id > 1<<31-1 {
			bad(flag, "%d is not a number from 0 to %d", id, 1<<31-1)
		}
	}
	if o.NFSCallTimeout <= 0 {
		bad("nfs-call-timeout", "must be positive")
	}
	if o.OperationTimeout <= 0 {
		bad("operation-timeout", "must be positive")
	}
	if o.UsageInterval != 0 && o.UsageInterval < time.Second {
		bad("usage-interval", "must be 0 (off) or at least 1s")
	}
	o.Adopt.validate(o, bad)
	return errors.Join(errs...)
}

// Names are the provisioner names this process serves: Name, CapacityName if set, and the
// names of the provisioners it adopts.
func (o *Options) Names() []string {
	names := []string{o.Name}
	if o.CapacityName != "" {
		names = append(names, o.CapacityName)
	}
	for _, a := range o.Adopt {
		names = append(names, a.Name)
	}
	return names
}

// NFSExport is one NFS export the provisioner has mounted.
type NFSExport struct {
	Server    string
	Share     string
	LocalPath string
}

// NFSExports is the repeatable --nfs-export flag.
type NFSExports []NFSExport

// String implements flag.Value.
func (e *NFSExports) String() string {
	var parts []string
	for _, x := range *e {
		parts = append(parts, x.Server+":"+x.Share+"="+x.LocalPath)
	}
	return strings.Join(parts, ",")
}

// Set implements flag.Value, parsing SERVER:SHARE=/local/path.
func (e *NFSExports) Set(v string) error {
	remote, local, ok := strings.Cut(v, "=")
	i := strings.Index(remote, ":/")
	if !ok || i <= 0 {
		return fmt.Errorf("%s: want SERVER:SHARE=/local/path", pathname.Quote(v))
	}
	x := NFSExport{Server: remote[:i], Share: remote[i+1:], LocalPath: local}
	err := CheckServer(x.Server)
	if err != nil {
		return fmt.Errorf("%s: %w", pathname.Quote(v), err)
	}
	if x.Share, err = CleanAbsolute(x.Share); err != nil {
		return fmt.Errorf("%s: share: %w", pathname.Quote(v), err)
	}
	if x.LocalPath, err = CleanAbsolute(x.LocalPath); err != nil {
		return fmt.Errorf("%s: local path: %w", pathname.Quote(v), err)
	}
	if e.Find(x.Server, x.Share) != nil {
		return fmt.Errorf("%s: export %s:%s given twice", pathname.Quote(v), x.Server, x.Share)
	}
	*e = append(*e, x)
	return nil
}

// Find returns the export SERVER:SHARE, or nil.
func (e NFSExports) Find(server, share string) *NFSExport {
	for i := range e {
		if e[i].Server == server && e[i].Share == share {
			return &e[i]
		}
	}
	return nil
}

// Containing returns the outermost export of server that share lies within (share itself or a
// directory below it), and share's path relative to it ("." for the export itself); nil if
// there is none. Working in the outermost export lets every check see the volumes of every
// class on that export, whatever share each names.
func (e NFSExports) Containing(server, share string) (*NFSExport, string) {
	var best *NFSExport
	for i := range e {
		if e[i].Server == server && Within(e[i].Share, share) && (best == nil || len(e[i].Share) < len(best.Share)) {
			best = &e[i]
		}
	}
	if best == nil {
		return nil, ""
	}
	rel, _ := RelWithin(best.Share, share)
	return best, rel
}

// Within reports whether p is root or lies below it. Both must be clean absolute paths.
func Within(root, p string) bool {
	_, ok := RelWithin(root, p)
	return ok
}

// RelWithin returns p relative to root ("." for root itself) if p is root or lies below it.
// Both must be clean absolute paths.
func RelWithin(root, p string) (string, bool) {
	rel, ok := strings.CutPrefix(p, root)
	if !ok || (rel != "" && root != "/" && !strings.HasPrefix(rel, "/")) || path.Clean(p) != p {
		return "", false
	}
	if rel = strings.TrimPrefix(rel, "/"); rel == "" {
		rel = "."
	}
	return rel, true
}

// NFSAllowed is one entry of --nfs-allow: a server, and the export whose volumes classes may
// name (Share empty: any export of that server).
type NFSAllowed struct {
	Server string
	Share  string
}

// NFSAllow is the repeatable --nfs-allow flag.
type NFSAllow []NFSAllowed

// String implements flag.Value.
func (a *NFSAllow) String() string {
	var parts []string
	for _, x := range *a {
		if x.Share == "" {
			parts = append(parts, x.Server)
		} else {
			parts = append(parts, x.Server+":"+x.Share)
		}
	}
	return strings.Join(parts, ",")
}

// Set implements flag.Value, parsing SERVER or SERVER:/EXPORT.
func (a *NFSAllow) Set(v string) error {
	x := NFSAllowed{Server: v}
	if i := strings.Index(v, ":/"); i >= 0 {
		x.Server, x.Share = v[:i], v[i+1:]
		var err error
		if x.Share, err = CleanAbsolute(x.Share); err != nil {
			return fmt.Errorf("%s: export: %w", pathname.Quote(v), err)
		}
	}
	if err := CheckServer(x.Server); err != nil {
		return fmt.Errorf("%s: want SERVER or SERVER:/EXPORT: %w", pathname.Quote(v), err)
	}
	for _, y := range *a {
		if y == x {
			return fmt.Errorf("%s given twice", pathname.Quote(v))
		}
	}
	*a = append(*a, x)
	return nil
}

// Root returns the directory of server that operations on volumes of share run from, and
// share's path relative to it; ok is false if the allow-list does not admit share. As with
// mounted exports, an export named in the list that holds share is preferred, the outermost
// one, so that every check sees the volumes of every class on it; a server allowed as a whole
// works from share itself.
func (a NFSAllow) Root(server, share string) (root, rel string, ok bool) {
	for _, x := range a {
		if x.Server != server || x.Share == "" || !Within(x.Share, share) {
			continue
		}
		if !ok || len(x.Share) < len(root) {
			root, ok = x.Share, true
		}
	}
	if ok {
		rel, _ = RelWithin(root, share)
		return root, rel, true
	}
	for _, x := range a {
		if x.Server == server && x.Share == "" {
			return share, ".", true
		}
	}
	return "", "", false
}

// CheckServer checks an NFS server's name as a class, --nfs-export or --nfs-allow gives it: a host
// name or an IP address, the one form every reader of it (mount, the kubelet, dirpv's NFS client,
// whoever reads the PV) takes the same way. A host name is dot-separated labels of ASCII letters,
// digits and hyphens (RFC 1123), none empty, none starting or ending with a hyphen, at most 63
// bytes each and 253 in all, and the last not numeric ("1.2.3" or "0x7f000001" would be read as
// an IPv4 address by some resolvers). An address is IPv4 in dotted decimal, or IPv6, bare or in
// brackets ("fd00::1", "[fd00::1]"), without a zone.
func CheckServer(s string) error {
	if s == "" {
		return errors.New("the server is empty")
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s is not a host name or an IP address: %s", pathname.Quote(s), fmt.Sprintf(format, args...))
	}
	if len(s) > 253 {
		return bad("longer than 253 bytes")
	}
	if inner, ok := strings.CutPrefix(s, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		if a, err := netip.ParseAddr(inner); !ok || err != nil || !a.Is6() || a.Zone() != "" {
			return bad("brackets hold an IPv6 address and nothing else")
		}
		return nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return bad("an IPv6 zone (%%) is not allowed")
		}
		return nil
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return !isHostByte(r) && r != '.' }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return bad("character %U (a host name has ASCII letters, digits, hyphens and dots)", r)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return bad("empty label")
		case len(l) > 63:
			return bad("label longer than 63 bytes")
		case l[0] == '-' || l[len(l)-1] == '-':
			return bad("label %q starts or ends with a hyphen", l)
		}
	}
	last := labels[len(labels)-1]
	if hex, ok := strings.CutPrefix(strings.ToLower(last), "0x"); strings.Trim(last, "0123456789") == "" ||
		ok && strings.Trim(hex, "0123456789abcdef") == "" {
		return bad("numeric, but not an IPv4 address in dotted decimal")
	}
	return nil
}

// isHostByte reports whether r may be part of a host name's label.
func isHostByte(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-'
}
