package config_test

import (
	"strings"
	"testing"

	"dirpv.io/dirpv/provisioner/config"
)

// TestParseOvercommit: a factor is a decimal number above 0 and at most 100, and a class takes
// exactly the factors ParseOvercommit does (the PV annotation and the helper read it with it).
func TestParseOvercommit(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want float64 // 0: refused
	}{
		{"1", 1}, {"1.5", 1.5}, {"100", 100}, {"1e2", 100}, {"+2", 2}, {".5", 0.5}, {"5e-324", 5e-324},
		{"0", 0}, {"-1", 0}, {"-0", 0}, {"100.0000001", 0}, {"101", 0}, {"1e308", 0}, {"1e400", 0},
		{"NaN", 0}, {"nan", 0}, {"Inf", 0}, {"+Inf", 0}, {"-Inf", 0}, {"infinity", 0},
		{"0x1p2", 0}, {"0X1P2", 0}, {"0x1p10", 0}, {"1_0", 0}, {"", 0}, {" 1", 0}, {"1e-400", 0},
	} {
		got, err := config.ParseOvercommit(tt.s)
		if got != tt.want || (err == nil) != (tt.want != 0) {
			t.Errorf("ParseOvercommit(%q) = %g, %v; want %g", tt.s, got, err, tt.want)
		}
		if err != nil && err.Error() != `"`+tt.s+`" is not a number above 0 and at most 100` {
			t.Errorf("ParseOvercommit(%q): error %q", tt.s, err)
		}
		c, err := config.ParseClass(map[string]string{"backend": "hostPath", "capacity": "enforce", "overcommit": tt.s}, backends)
		switch {
		case tt.want == 0 && (err == nil || !strings.Contains(err.Error(), `parameter "overcommit": "`+tt.s+`" is not a number above 0`)):
			t.Errorf("class with overcommit %q: %v, want it refused", tt.s, err)
		case tt.want != 0 && (err != nil || c.Overcommit != tt.want):
			t.Errorf("class with overcommit %q: %v, want %g", tt.s, err, tt.want)
		}
	}
}

// TestParseID: a uid or gid is a decimal number from 0 to 2^31-1; one that the kernel would
// wrap (2^32 is root) or take for "unchanged" (2^32-1) is refused, as is any other spelling.
func TestParseID(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want int // -1: refused
	}{
		{"0", 0}, {"1000", 1000}, {"007", 7}, {"2147483647", 1<<31 - 1},
		{"2147483648", -1}, {"4294967295", -1}, {"4294967296", -1}, {"-1", -1}, {"+1", -1},
		{"0x10", -1}, {"1_000", -1}, {"", -1}, {"root", -1},
	} {
		got, err := config.ParseID(tt.s)
		if tt.want < 0 && (err == nil || err.Error() != `"`+tt.s+`" is not a number from 0 to 2147483647`) || tt.want >= 0 && (err != nil || got != tt.want) {
			t.Errorf("ParseID(%q) = %d, %v; want %d", tt.s, got, err, tt.want)
		}
	}
}
