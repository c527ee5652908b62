// Package nfs3test starts a real NFS server for tests: nfs-ganesha and rpcbind in a network
// namespace of their own, started by hack/nfs-server.sh as the local cluster's server is, and
// a dialer into that namespace.
package nfs3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

// Addr is where the server listens inside its namespace.
const Addr = "127.0.0.1"

// Export is one export: Path = Pseudo = Dir.
type Export struct {
	Dir    string
	Squash bool // root_squash instead of no_root_squash
}

// Server is a running NFS server.
type Server struct {
	netns    string
	stateDir string
	Exports  []Export
}

// Start starts ganesha serving exports with hack/nfs-server.sh in a network namespace of its
// own, and stops it (and removes the namespace) when the test ends. It fails, never skips, when
// the server cannot run here: `make tools` installs it.
func Start(t testing.TB, exports ...Export) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests start nfs-ganesha in a network namespace and must run as root")
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("nfs3test: cannot locate its source file")
	}
	script := filepath.Join(filepath.Dir(file), "..", "..", "..", "hack", "nfs-server.sh")
	rnd := make([]byte, 4)
	rand.Read(rnd)
	s := &Server{
		netns:    fmt.Sprintf("dirpv-nfs3-%d-%s", os.Getpid(), hex.EncodeToString(rnd)),
		stateDir: t.TempDir(),
		Exports:  exports,
	}
	if out, err := exec.Command("ip", "netns", "add", s.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", s.netns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", s.netns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", s.netns, err, out)
		}
	})
	args := []string{"up", s.stateDir, s.netns}
	for _, e := range exports {
		if e.Squash {
			args = append(args, e.Dir+":squash")
		} else {
			args = append(args, e.Dir)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "down", s.stateDir).CombinedOutput(); err != nil {
			t.Errorf("%s down: %v: %s", script, err, out)
		}
	})
	if out, err := exec.Command(script, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", script, strings.Join(args, " "), err, out)
	}
	return s
}

func (s *Server) pid(t testing.TB, name string) int {
	t.Helper()
	return ReadPID(t, s.stateDir, name)
}

// ReadPID is the PID hack/nfs-server.sh recorded for name (ganesha, rpcbind) in stateDir.
func ReadPID(t testing.TB, stateDir, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, name+".pid"))
	if err != nil {
		t.Fatalf("%s pid: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s pid: %v", name, err)
	}
	return pid
}

// Stop SIGSTOPs ganesha and waits until every one of its threads has stopped: kill returns
// before that, and a thread busy in a syscall (on a loaded machine) would otherwise still answer
// a request sent just after.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	StopProcess(t, s.pid(t, "ganesha"))
}

// StopProcess SIGSTOPs the process pid and waits until every one of its threads has stopped.
func StopProcess(t testing.TB, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping process %d: %v", pid, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !allThreadsStopped(t, pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the threads of process %d did not all stop within 30s of SIGSTOP", pid)
		}
		time.Sleep(10 * time.Millisecond) // polling /proc; there is nothing to wait on
	}
}

func allThreadsStopped(t testing.TB, pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("the threads of process %d: %v", pid, err)
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

// Continue resumes a stopped ganesha.
func (s *Server) Continue(t testing.TB) {
	t.Helper()
	ContinueProcess(t, s.pid(t, "ganesha"))
}

// ContinueProcess resumes a process StopProcess stopped.
func ContinueProcess(t testing.TB, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatalf("continuing process %d: %v", pid, err)
	}
}

// Logs is the tail of the server's logs, for a failure message.
func (s *Server) Logs() string {
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

// Dial connects from inside the server's namespace: the socket is made on a
// thread switched into it, and stays there. A literal address keeps the
// dial on this goroutine (no parallel dials, no resolver).
func (s *Server) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
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
