// Package quotatest helps the tests of size enforcement write into a limited directory as an
// unprivileged user: root has CAP_SYS_RESOURCE, which lets it past ext4's limits. The test binary
// runs itself as uid 65534 to write a file, the way a pod would; its TestMain calls Main.
package quotatest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Nobody is the uid and gid the writer runs as.
const Nobody = 65534

const (
	writePathEnv  = "DIRPV_QUOTATEST_WRITE_PATH"
	writeBytesEnv = "DIRPV_QUOTATEST_WRITE_BYTES"
)

// Main is a test binary's TestMain: the writer, when the binary was run as one, or the tests.
func Main(m *testing.M) {
	if path := os.Getenv(writePathEnv); path != "" {
		os.Exit(writeFile(path, os.Getenv(writeBytesEnv)))
	}
	os.Exit(m.Run())
}

// writeFile is the writer: it creates path, writes bytes to it in 1 MiB chunks and syncs, then
// prints how many bytes it wrote and the errno that stopped it (0 for none).
func writeFile(path, bytes string) int {
	n, err := strconv.ParseInt(bytes, 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", writeBytesEnv, err)
		return 2
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 2
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1) // not zeros: nothing may store them as a hole
	}
	var written int64
	for err == nil && written < n {
		var w int
		w, err = f.Write(chunk[:min(int64(len(chunk)), n-written)])
		written += int64(w)
	}
	if serr := f.Sync(); err == nil { // what was written is on disk (and counted) either way
		err = serr
	}
	var errno syscall.Errno
	if err != nil && !errors.As(err, &errno) {
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 2
	}
	fmt.Println(written, int(errno))
	return 0
}

// Writer runs the writer as uid and gid Nobody.
type Writer struct{ bin string }

// NewWriter copies the test binary where uid Nobody may run it (go test builds it in a directory
// only root may enter). The test needs root.
func NewWriter(t *testing.T) Writer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it sets quotas and runs a writer as uid 65534")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "dirpv-quota-writer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "writer")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return Writer{bin}
}

// Write has the writer create path and write bytes to it; it returns how many it wrote and the
// errno that stopped it (0: it wrote them all and synced).
func (w Writer) Write(t *testing.T, path string, bytes int64) (int64, syscall.Errno) {
	t.Helper()
	cmd := exec.Command(w.bin)
	cmd.Env = []string{writePathEnv + "=" + path, writeBytesEnv + "=" + strconv.FormatInt(bytes, 10)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("writer (uid %d) of %s: %v", Nobody, path, err)
	}
	var n int64
	var errno int
	if _, err := fmt.Sscan(string(out), &n, &errno); err != nil {
		t.Fatalf("writer of %s printed %q: %v", path, out, err)
	}
	return n, syscall.Errno(errno)
}

// OverLimit reports whether errno is what a write past a limit gets: EDQUOT, or ENOSPC (XFS says
// that for project quotas).
func OverLimit(errno syscall.Errno) bool { return errno == syscall.EDQUOT || errno == syscall.ENOSPC }

// Stopped says what stopped a writer, for messages.
func Stopped(errno syscall.Errno) string {
	if errno == 0 {
		return "no error"
	}
	return errno.Error()
}

// Open opens path (a directory too) without following a symbolic link; the returned function
// closes it (once; the test's end closes it too).
func Open(t *testing.T, path string) (int, func()) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	var once sync.Once
	closeFd := func() { once.Do(func() { unix.Close(fd) }) }
	t.Cleanup(closeFd)
	return fd, closeFd
}
