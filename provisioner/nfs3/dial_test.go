package nfs3

import (
	"context"
	"errors"
	"net"
	"testing"
)

// TestDialAddress: the client dials the server as configured, an IPv6 address in brackets or
// not (dirpv's flags and classes accept both), never with its brackets doubled.
func TestDialAddress(t *testing.T) {
	for _, tc := range []struct{ server, want string }{
		{"10.0.0.5", "10.0.0.5:2049"},
		{"nfs.example.com", "nfs.example.com:2049"},
		{"fd00::1", "[fd00::1]:2049"},
		{"[fd00::1]", "[fd00::1]:2049"},
	} {
		var dialed []string
		refused := errors.New("refused")
		c, err := New(Config{Server: tc.server, NFSPort: 2049, MountPort: 2049, MachineName: "m",
			Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
				dialed = append(dialed, addr)
				return nil, refused
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ping(context.Background()); !errors.Is(err, refused) {
			t.Errorf("%s: Ping = %v, want the dial's error", tc.server, err)
		}
		if len(dialed) == 0 || dialed[0] != tc.want {
			t.Errorf("%s: dialed %q, want %q", tc.server, dialed, tc.want)
		}
	}
}
