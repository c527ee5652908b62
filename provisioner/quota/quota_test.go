package quota

import (
	"errors"
	"strings"
	"testing"
)

func TestKib(t *testing.T) {
	for _, tt := range []struct{ bytes, want uint64 }{
		{0, 0},
		{1, 1},
		{1023, 1},
		{1024, 1},
		{1025, 2},
		{10 << 20, 10 << 10},
		{10<<20 + 1, 10<<10 + 1},
		{^uint64(0), 1 << 54},
	} {
		if got := kib(tt.bytes); got != tt.want {
			t.Errorf("kib(%d) = %d, want %d", tt.bytes, got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		name string
		want string // "" for valid
	}{
		{"pvc-1", ""},
		{"a.b", ""},
		{"...", ""},
		{strings.Repeat("x", 255), ""},
		{"", "single path component"},
		{".", "single path component"},
		{"..", "single path component"},
		{"a/b", "without / or NUL"},
		{"/a", "without / or NUL"},
		{"a/", "without / or NUL"},
		{"a\x00b", "without / or NUL"},
		{strings.Repeat("x", 256), "longer than 255 bytes"},
	} {
		err := validName(tt.name)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("validName(%q) = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindProject: "project quota", KindBtrfs: "btrfs qgroup", 0: "Kind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestNotEnforcedMatches(t *testing.T) {
	err := notEnforced("tmpfs at %s cannot enforce sizes", "/x")
	if !errors.Is(err, ErrNotEnforced) || err.Error() != "tmpfs at /x cannot enforce sizes" {
		t.Errorf("notEnforced: %v (errors.Is ErrNotEnforced: %v)", err, errors.Is(err, ErrNotEnforced))
	}
	if errors.Is(errors.New("other"), ErrNotEnforced) {
		t.Error("an unrelated error matches ErrNotEnforced")
	}
}
