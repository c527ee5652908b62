package config

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestModeRoundTrip(t *testing.T) {
	for _, s := range []string{"0000", "0777", "0750", "2770", "1777", "4755", "7777"} {
		m, err := ParseMode(s)
		if err != nil {
			t.Fatalf("ParseMode(%q): %v", s, err)
		}
		if got := FormatMode(m); got != s {
			t.Errorf("FormatMode(ParseMode(%q)) = %q", s, got)
		}
	}
}

func TestCleanAbsolute(t *testing.T) {
	tests := []struct {
		path    string
		wantErr string // "" means accepted
	}{
		{path: "/"},
		{path: "/var/lib/dirpv"},
		{path: "/mnt/é/日本/🚀"},
		{path: "/mnt/a b"},
		{path: "/mnt/.hidden"},
		{path: `/mnt/a\b`},

		{path: "", wantErr: "is not an absolute path"},
		{path: "var/lib", wantErr: "is not an absolute path"},
		{path: "/a/../b", wantErr: `is not a clean path (want "/b")`},
		{path: "/a/", wantErr: "is not a clean path"},
		{path: "//a", wantErr: "is not a clean path"},
		{path: "/a\x00", wantErr: "control character U+0000"},
		{path: "/a\nb", wantErr: "control character U+000A"},
		{path: "/a\x7f", wantErr: "control character U+007F"},
		{path: "/a\u0085", wantErr: "control character U+0085"},
		{path: "/a\u202eb", wantErr: "invisible format character U+202E"},
		{path: "/a\u200bb", wantErr: "invisible format character U+200B"},
		{path: "/a\u2028b", wantErr: "line or paragraph separator U+2028"},
		{path: "/a\xffb", wantErr: "invalid UTF-8 at byte 2"},
		{path: "/a /b", wantErr: `component "a " ends with white space U+0020`},
		{path: "/a/ b", wantErr: `component " b" starts with white space U+0020`},
	}
	for _, tt := range tests {
		got, err := CleanAbsolute(tt.path)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.path):
			t.Errorf("CleanAbsolute(%q) = %q, %v; want it unchanged", tt.path, got, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("CleanAbsolute(%q) = %q, %v; want error containing %q", tt.path, got, err, tt.wantErr)
		case err != nil && hasRefused(err.Error()):
			t.Errorf("CleanAbsolute(%q) = %q, echoing a refused character", tt.path, err)
		}
	}
}

// hasRefused reports whether s breaks the character rule, as the README states it.
func hasRefused(s string) bool {
	return !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool {
		return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
	})
}

// HasRefused is hasRefused for the external tests.
var HasRefused = hasRefused
