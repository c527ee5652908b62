package config

import (
	"fmt"
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
		{path: "/srv/données"},
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
		{path: "/mnt/a\u3164", wantErr: `"/mnt/a\u3164": invisible filler character U+3164`},
		{path: "/mnt/\u2800", wantErr: `"/mnt/\u2800": invisible filler character U+2800`},
		{path: "/mnt/a\u00a0b", wantErr: "space other than the ASCII space: U+00A0"},
		{path: "/mnt/\u0301", wantErr: `"/mnt/\u0301": combining mark without a letter, number or symbol before it: U+0301`},
		{path: "/mnt/\ue000", wantErr: "private-use character U+E000"},
		{path: "/mnt/\ufdd0", wantErr: "noncharacter U+FDD0"},
		{path: "a\u3164", wantErr: `"a\u3164" is not an absolute path`},
	}
	for _, tt := range tests {
		got, err := CleanAbsolute(tt.path)
		checkError(t, fmt.Sprintf("CleanAbsolute(%q)", tt.path), err, tt.wantErr)
		if err == nil && got != tt.path {
			t.Errorf("CleanAbsolute(%q) = %q, want it unchanged", tt.path, got)
		}
	}
}

// checkError fails unless err is nil where want is "" and otherwise contains want, without
// echoing a character the rule refuses.
func checkError(t *testing.T, call string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s = %v, want nil", call, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s = %v, want error containing %q", call, err, want)
	case err != nil && hasRefused(err.Error()):
		t.Errorf("%s = %q, echoing a refused character", call, err)
	}
}

// hasRefused reports whether s breaks the character rule, as the README states it.
func hasRefused(s string) bool {
	prev := rune(0)
	for _, r := range s {
		switch {
		case r == ' ':
		case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Z, unicode.Co), r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE,
			strings.ContainsRune("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0\u2800", r),
			!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S),
			unicode.IsMark(r) && !unicode.In(prev, unicode.L, unicode.N, unicode.S, unicode.M):
			return true
		}
		prev = r
	}
	return !utf8.ValidString(s)
}

// HasRefused is hasRefused for the external tests.
var HasRefused = hasRefused
