package quota

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

// The tests that check enforcement write as an unprivileged user: root has CAP_SYS_RESOURCE,
// which lets it past ext4's limits. The test binary runs itself as uid 65534 to write a file,
// the way a pod would.

const (
	writePathEnv  = "DIRPV_QUOTA_WRITE_PATH"
	writeBytesEnv = "DIRPV_QUOTA_WRITE_BYTES"
	nobody        = 65534
)

func TestMain(m *testing.M) {
	if path := os.Getenv(writePathEnv); path != "" {
		os.Exit(writeFile(path, os.Getenv(writeBytesEnv)))
	}
	os.Exit(m.Run())
}

// writeFile is the child: it creates path, writes bytes to it in 1 MiB chunks and syncs, then
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

// writer runs writeFile as uid and gid 65534.
type writer struct{ bin string }

// newWriter copies the test binary where uid 65534 may run it (go test builds it in a
// directory only root may enter).
func newWriter(t *testing.T) writer {
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
	return writer{bin}
}

// write has the child create path and write bytes to it; it returns how many it wrote and the
// errno that stopped it (0: it wrote them all and synced).
func (w writer) write(t *testing.T, path string, bytes int64) (int64, syscall.Errno) {
	t.Helper()
	cmd := exec.Command(w.bin)
	cmd.Env = []string{writePathEnv + "=" + path, writeBytesEnv + "=" + strconv.FormatInt(bytes, 10)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("writer (uid %d) of %s: %v", nobody, path, err)
	}
	var n int64
	var errno int
	if _, err := fmt.Sscan(string(out), &n, &errno); err != nil {
		t.Fatalf("writer of %s printed %q: %v", path, out, err)
	}
	return n, syscall.Errno(errno)
}

// overLimit reports whether errno is what a write past a limit gets: EDQUOT, or ENOSPC (XFS
// says that for project quotas).
func overLimit(errno syscall.Errno) bool { return errno == syscall.EDQUOT || errno == syscall.ENOSPC }

// stopped says what stopped a writer, for messages.
func stopped(errno syscall.Errno) string {
	if errno == 0 {
		return "no error"
	}
	return errno.Error()
}

// openDir opens the directory path; the returned function closes it (once; the test's end
// closes it too).
func openDir(t *testing.T, path string) (int, func()) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	var once sync.Once
	closeFd := func() { once.Do(func() { unix.Close(fd) }) }
	t.Cleanup(closeFd)
	return fd, closeFd
}

// mkdirOpen creates the directory dir/name, owned by uid 65534 so that the writer may fill it,
// and opens it.
func mkdirOpen(t *testing.T, dir, name string) (string, int, func()) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, closeFd := openDir(t, path)
	if err := unix.Fchown(fd, nobody, nobody); err != nil {
		t.Fatalf("chown %s: %v", path, err)
	}
	return path, fd, closeFd
}

// testRoot makes a fresh directory in the mounted filesystem mnt, for a test's volumes.
func testRoot(t *testing.T, mnt string) (string, int) {
	t.Helper()
	root, err := os.MkdirTemp(mnt, "dirpv-quota-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil { // the writer passes through it
		t.Fatal(err)
	}
	fd, _ := openDir(t, root)
	return root, fd
}
