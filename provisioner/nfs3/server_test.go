package nfs3

// A real NFS server for the tests: nfs-ganesha (VFS FSAL) and rpcbind in a
// scratch network namespace, modelled on shared/reference/nfs-vm. This file
// is the only one that knows how the server is started, so it can later call
// hack/nfs-server.sh (up STATE_DIR NETNS EXPORT..., down STATE_DIR) instead.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serverAddr is where the server listens inside its namespace.
const serverAddr = "127.0.0.1"

// testExport is one export: Path = Pseudo = Dir.
type testExport struct {
	Dir    string
	Squash bool // root_squash instead of no_root_squash
}

type testServer struct {
	netns    string
	stateDir string
	exports  []testExport
}

const ganeshaInstallHint = "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nfs-ganesha nfs-ganesha-vfs rpcbind nfs-common"

// startServer starts ganesha serving exports and stops it (and removes the
// namespace) when the test ends. It fails, never skips, when the server
// cannot run here.
func startServer(t *testing.T, exports ...testExport) *testServer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests start nfs-ganesha in a network namespace and must run as root")
	}
	for _, bin := range []string{"ganesha.nfsd", "rpcbind", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found (%v): install the NFS server packages: %s", bin, err, ganeshaInstallHint)
		}
	}
	if m, _ := filepath.Glob("/usr/lib/*/ganesha/libfsalvfs.so"); len(m) == 0 {
		t.Fatalf("ganesha's VFS FSAL (libfsalvfs.so) not found: %s", ganeshaInstallHint)
	}

	rnd := make([]byte, 4)
	rand.Read(rnd)
	s := &testServer{
		netns:    fmt.Sprintf("dirpv-nfs3-%d-%s", os.Getpid(), hex.EncodeToString(rnd)),
		stateDir: t.TempDir(),
		exports:  exports,
	}
	if err := os.MkdirAll(filepath.Join(s.stateDir, "recovery"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.stateDir, "ganesha.conf"), []byte(ganeshaConf(s.stateDir, exports)), 0o644); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command("ip", "netns", "add", s.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", s.netns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", s.netns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", s.netns, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", s.netns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", s.netns, err, out)
	}

	// One shell holds both daemons so they share a private /run (rpcbind's
	// socket is a file, not namespaced by the netns; "ip netns exec" gives
	// the shell a mount namespace of its own). rpcbind must be up before
	// ganesha, which exits if it cannot register v3.
	const script = `set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/rpcbind /run/ganesha
rpcbind -f & echo $! > "$1/rpcbind.pid"
i=0; while [ ! -S /run/rpcbind.sock ]; do
  i=$((i+1)); [ $i -le 600 ] || { echo "rpcbind did not create its socket" >&2; exit 1; }; sleep 0.1
done
ganesha.nfsd -F -f "$1/ganesha.conf" -L "$1/ganesha.log" -p /run/ganesha/ganesha.pid -N NIV_EVENT &
echo $! > "$1/ganesha.pid"
wait`
	logf, err := os.Create(filepath.Join(s.stateDir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", s.netns, "sh", "-c", script, "sh", s.stateDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the NFS server: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { s.stop(t, cmd, exited) })

	s.waitReady(t, exited)
	return s
}

func ganeshaConf(stateDir string, exports []testExport) string {
	var b strings.Builder
	fmt.Fprintf(&b, `NFS_CORE_PARAM {
    Protocols = 3, 4;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_NLM = false;     # no rpc.statd
    Enable_RQUOTA = false;
    Mount_Path_Pseudo = true;
}
NFSv4 {
    Graceless = true;
    Only_Numeric_Owners = true;
    RecoveryBackend = fs;
    RecoveryRoot = "%s/recovery";
}
NFS_KRB5 { Active_krb5 = false; }
LOG { Default_Log_Level = EVENT; }
`, stateDir)
	for i, e := range exports {
		squash := "No_Root_Squash"
		if e.Squash {
			squash = "Root_Squash"
		}
		fmt.Fprintf(&b, `EXPORT {
    Export_Id = %d;
    Path = "%s";
    Pseudo = "%s";
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = RW;          # the default is None
    Squash = %s;
    SecType = sys;
    PrivilegedPort = false;    # the client binds no reserved port
    Attr_Expiration_Time = 0;  # the tests change the directory behind ganesha's back
    FSAL { Name = VFS; }
}
`, i+1, e.Dir, e.Dir, squash)
	}
	return b.String()
}

// waitReady polls until every export can be mounted.
func (s *testServer) waitReady(t *testing.T, exited <-chan struct{}) {
	t.Helper()
	c, err := New(s.config())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(90 * time.Second)
	for _, e := range s.exports {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _, err := c.Mount(ctx, e.Dir)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-exited:
				t.Fatalf("NFS server exited during startup (last error: %v)\n%s", err, s.logs())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("NFS server not ready after 90s: %v\n%s", err, s.logs())
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-exited:
			}
		}
	}
}

func (s *testServer) pid(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.stateDir, name+".pid"))
	if err != nil {
		t.Fatalf("%s pid: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s pid: %v", name, err)
	}
	return pid
}

// stopGanesha SIGSTOPs ganesha and waits until every one of its threads has
// stopped: kill returns before that, and a thread busy in a syscall (on a
// loaded machine) would otherwise still answer a request sent just after.
func (s *testServer) stopGanesha(t *testing.T) {
	t.Helper()
	pid := s.pid(t, "ganesha")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping ganesha: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !allThreadsStopped(t, pid) {
		if time.Now().After(deadline) {
			t.Fatal("ganesha's threads did not all stop within 30s of SIGSTOP")
		}
		time.Sleep(10 * time.Millisecond) // polling /proc; there is nothing to wait on
	}
}

func allThreadsStopped(t *testing.T, pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("ganesha's threads: %v", err)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			return false // a thread exiting; look again
		}
		// "pid (comm) S ...": the state follows the last ')'.
		rest := b[bytes.LastIndexByte(b, ')')+1:]
		if st := strings.Fields(string(rest)); len(st) == 0 || (st[0] != "T" && st[0] != "t") {
			return false
		}
	}
	return true
}

// continueGanesha resumes a stopped ganesha.
func (s *testServer) continueGanesha(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(s.pid(t, "ganesha"), syscall.SIGCONT); err != nil {
		t.Fatalf("continuing ganesha: %v", err)
	}
}

// stop kills both daemons by PID (SIGKILL: the state is scratch, and a
// stopped ganesha would not act on SIGTERM) and waits for the shell, which
// reaps them.
func (s *testServer) stop(t *testing.T, cmd *exec.Cmd, exited <-chan struct{}) {
	var pids []int
	for _, name := range []string{"ganesha", "rpcbind"} {
		b, err := os.ReadFile(filepath.Join(s.stateDir, name+".pid"))
		if err != nil {
			continue // not started
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids = append(pids, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Errorf("NFS server shell did not exit after its daemons were killed")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("NFS server process %d still exists after stop", pid)
		}
	}
	if t.Failed() {
		t.Logf("NFS server logs:\n%s", s.logs())
	}
}

func (s *testServer) logs() string {
	var b bytes.Buffer
	for _, f := range []string{"server.log", "ganesha.log"} {
		data, _ := os.ReadFile(filepath.Join(s.stateDir, f))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Fprintf(&b, "--- %s (tail) ---\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// config is a Client config for the server, as root.
func (s *testServer) config() Config {
	return Config{Server: serverAddr, MachineName: "nfs3-test", Dial: s.dial}
}

// dial connects from inside the server's namespace: the socket is made on a
// thread switched into it, and stays there. A literal address keeps the
// dial on this goroutine (no parallel dials, no resolver).
func (s *testServer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	target, err := os.Open(filepath.Join("/var/run/netns", s.netns))
	if err != nil {
		return nil, err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns into %s: %w", s.netns, err)
	}
	var d net.Dialer
	conn, dialErr := d.DialContext(ctx, network, addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so nothing else runs in the wrong namespace.
		panic(fmt.Sprintf("setns back to the test's network namespace: %v", err))
	}
	runtime.UnlockOSThread()
	return conn, dialErr
}
