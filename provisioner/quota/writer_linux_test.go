package quota

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/quota/quotatest"
)

func TestMain(m *testing.M) { quotatest.Main(m) }

const nobody = quotatest.Nobody

// mkdirOpen creates the directory dir/name, owned by uid 65534 so that the writer may fill it,
// and opens it.
func mkdirOpen(t *testing.T, dir, name string) (string, int, func()) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, closeFd := quotatest.Open(t, path)
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
	fd, _ := quotatest.Open(t, root)
	return root, fd
}
