package nfs3

import (
	"context"
	"testing"
	"time"

	"dirpv.io/dirpv/provisioner/nfs3/nfs3test"
)

// The package's tests run against a real server (nfs3test).
type testExport = nfs3test.Export

const serverAddr = nfs3test.Addr

type testServer struct{ *nfs3test.Server }

// startServer starts a server and checks that every export can be mounted.
func startServer(t *testing.T, exports ...testExport) *testServer {
	t.Helper()
	s := &testServer{nfs3test.Start(t, exports...)}
	c, err := New(s.config())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, e := range exports {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _, err := c.Mount(ctx, e.Dir)
		cancel()
		if err != nil {
			t.Fatalf("mounting %s: %v\n%s", e.Dir, err, s.Logs())
		}
	}
	return s
}

// config is a Client config for the server, as root.
func (s *testServer) config() Config {
	return Config{Server: serverAddr, MachineName: "nfs3-test", Dial: s.Dial}
}

func (s *testServer) stopGanesha(t *testing.T)     { s.Stop(t) }
func (s *testServer) continueGanesha(t *testing.T) { s.Continue(t) }
func (s *testServer) logs() string                 { return s.Logs() }
