package pathname

import (
	"errors"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func data(labels, annotations map[string]string) Data {
	return Data{
		PVC: Claim{Namespace: "team-a", Name: "www-web-0", Labels: labels, Annotations: annotations},
		PV:  Volume{Name: "pvc-0a1b"},
	}
}

// renderTests also seed FuzzRender, with the values of label "app" and annotation "dir".
var renderTests = []struct {
	name        string
	pattern     string
	annotations map[string]string
	labels      map[string]string
	want        string
	wantErr     string
}{
	{name: "nested", pattern: "{{.PVC.Namespace}}/{{.PVC.Name}}", want: "team-a/www-web-0"},
	{name: "label", pattern: "{{.PVC.Labels.app}}/{{.PV.Name}}", labels: map[string]string{"app": "web"}, want: "web/pvc-0a1b"},
	{name: "annotation", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "data"}, want: "data"},
	{name: "label by index", pattern: `x{{index .PVC.Labels "app"}}/{{.PVC.Name}}`, labels: map[string]string{"app": "web"}, want: "xweb/www-web-0"},
	{name: "annotation key with a slash", pattern: `{{index .PVC.Annotations "example.com/team"}}/{{.PVC.Name}}`,
		annotations: map[string]string{"example.com/team": "blue"}, want: "blue/www-web-0"},
	{name: "empty label value is not missing", pattern: `x{{index .PVC.Labels "app"}}`, labels: map[string]string{"app": ""}, want: "x"},
	{name: "UTF-8 and inner spaces", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "é/日本/🚀/a b"}, want: "é/日本/🚀/a b"},
	// A missing key fails even inside with, if and or (cases below). A pattern renders something
	// for a missing key only when its author chooses so explicitly, by testing the whole map with
	// if (range, which could compare keys, is refused by Parse).
	{name: "if chooses the missing case", pattern: `{{if .PVC.Labels}}{{.PVC.Labels.app}}{{else}}none{{end}}`, want: "none"},

	{name: "missing label field", pattern: "{{.PVC.Labels.app}}", wantErr: `map has no entry for key "app"`},
	{name: "missing label field in with", pattern: "{{with .PVC.Labels.app}}{{.}}{{end}}x", wantErr: `map has no entry for key "app"`},
	{name: "missing label by index", pattern: `x{{index .PVC.Labels "team"}}/{{.PVC.Name}}`, labels: map[string]string{"app": "web"}, wantErr: `label "team" is not set on the claim`},
	{name: "missing label on a claim without labels", pattern: `x{{index .PVC.Labels "team"}}`, wantErr: `label "team" is not set on the claim`},
	{name: "missing annotation", pattern: `x{{index .PVC.Annotations "example.com/team"}}`, wantErr: `annotation "example.com/team" is not set on the claim`},
	{name: "missing annotation in with", pattern: `{{with index .PVC.Annotations "dir"}}{{.}}{{else}}x{{end}}`, wantErr: `annotation "dir" is not set on the claim`},
	{name: "missing annotation in or", pattern: `{{or (index .PVC.Annotations "dir") "x"}}`, wantErr: `annotation "dir" is not set on the claim`},
	{name: "index of something else", pattern: `{{index .PVC.Name 0}}`, wantErr: "index reads only .PVC.Labels and .PVC.Annotations, not a value of type string"},
	{name: "index with two keys", pattern: `{{index .PVC.Labels "a" "b"}}`, wantErr: "index of the labels takes one key, not 2"},
	{name: "index with a number", pattern: `{{index .PVC.Annotations 1}}`, wantErr: "index of the annotations takes a string key, not a value of type int"},
	{name: "unknown field", pattern: "{{.PVC.Spec}}", wantErr: "can't evaluate field Spec"},
	// Stopped while executing, not refused afterwards (that error would start "pathPattern rendered").
	{name: "output stops at MaxPath", pattern: `{{printf "%02000d" 1}}`, wantErr: "pathPattern: unsafe volume path: longer than 1024 bytes"},
	{name: "printf", pattern: `{{printf "%s/%.4s-%05d" .PVC.Namespace .PVC.Name 42}}`, want: "team-a/www--00042"},
	{name: "urlquery", pattern: `{{index .PVC.Annotations "dir" | urlquery}}`, annotations: map[string]string{"dir": "a/b c"}, want: "a%2Fb+c"},
	{name: "print", pattern: `{{print .PVC.Name 1 true}}`, want: "www-web-01 true"},
	{name: "printf of a map", pattern: `{{printf "%999v" .PVC.Annotations}}`, wantErr: "error calling printf: printf takes strings, numbers and booleans, not a value of type pathname.Annotations"},
	{name: "print of the claim", pattern: `{{print .PVC}}`, wantErr: "print takes strings, numbers and booleans, not a value of type pathname.Claim"},
	// Values over MaxValue, for the claims a branch picks: the sample claim Parse renders takes
	// the other branch.
	{name: "doubling for one claim", pattern: `{{if eq .PVC.Name "www-web-0"}}` + doubling(16, printfTwice) + `{{end}}x`,
		wantErr: "error calling printf: pathPattern over its limits: printf made a value of 4608 bytes (at most 4096)"},
	{name: "a width from an argument", pattern: `{{if eq .PVC.Name "www-web-0"}}{{printf "%*d" 1000000 1}}{{end}}x`,
		wantErr: "pathPattern over its limits: printf width or precision from an argument (*)"},
	{name: "missing label key named by an escape", pattern: `{{index .PVC.Labels "\u3164"}}`, wantErr: `label "\u3164" is not set on the claim`},

	{name: "traversal", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "../../etc"}, wantErr: "escapes"},
	{name: "traversal inside", pattern: `a/{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "../../etc"}, wantErr: "escapes"},
	{name: "absolute", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "/etc"}, wantErr: "absolute"},
	{name: "root itself", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "."}, wantErr: "starts with"},
	{name: "parent", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": ".."}, wantErr: "escapes"},
	{name: "empty", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": ""}, wantErr: "empty"},
	{name: "empty component", pattern: `a/{{index .PVC.Annotations "dir"}}/b`, annotations: map[string]string{"dir": ""}, wantErr: "not clean"},
	{name: "trailing slash", pattern: `{{.PVC.Name}}/`, wantErr: "not clean"},
	{name: "hidden", pattern: `.{{.PVC.Name}}`, wantErr: "starts with"},
	{name: "marker name", pattern: `a/.b.dirpv`, wantErr: "starts with"},
	{name: "newline", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "a\nb"}, wantErr: `rendered "a\nb": unsafe volume path: control character U+000A`},
	{name: "bidi override", pattern: `{{index .PVC.Labels "app"}}`, labels: map[string]string{"app": "a\u202Eb"}, wantErr: `rendered "a\u202eb": unsafe volume path: invisible format character U+202E`},
	{name: "Hangul filler", pattern: `{{index .PVC.Labels "app"}}`, labels: map[string]string{"app": "a\u3164"}, wantErr: `rendered "a\u3164": unsafe volume path: invisible filler character U+3164`},
	{name: "lone combining mark", pattern: `x/{{index .PVC.Labels "app"}}`, labels: map[string]string{"app": "\u0301"}, wantErr: `rendered "x/\u0301": unsafe volume path: combining mark without a letter, number or symbol before it: U+0301`},
	{name: "invalid UTF-8", pattern: `x/{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": "a\xffb"}, wantErr: `rendered "x/a\xffb": unsafe volume path: invalid UTF-8 at byte 3`},
	{name: "trailing space", pattern: `{{index .PVC.Annotations "dir"}}/x`, annotations: map[string]string{"dir": "a "}, wantErr: `component "a " ends with white space U+0020`},
	{name: "backslash", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": `..\x`}, wantErr: "backslash"},
	{name: "long component", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": strings.Repeat("x", 201)}, wantErr: "longer than 200"},
	{name: "long path", pattern: `{{index .PVC.Annotations "dir"}}`, annotations: map[string]string{"dir": strings.Repeat("x/", 600) + "x"}, wantErr: "longer than 1024"},
}

func TestRender(t *testing.T) {
	for _, tt := range renderTests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := Parse(tt.pattern)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := Render(tmpl, data(tt.labels, tt.annotations))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Render = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestParseLimits: a pattern of MaxPattern bytes, and values of MaxValue bytes, are allowed.
func TestParseLimits(t *testing.T) {
	for _, pattern := range []string{
		strings.Repeat("x", MaxPattern),
		`{{$a := printf "%4096d" 1}}{{$b := print $a}}{{$c := slice $b 4095}}{{$c}}`,
		`{{printf "%4096.4096s" .PVC.Name | len}}`,
	} {
		if _, err := Parse(pattern); err != nil {
			t.Errorf("Parse(%.40q...) = %v", pattern, err)
		}
	}
}

func TestParse(t *testing.T) {
	for pattern, want := range map[string]string{
		"{{.PVC.Name":                  "unclosed action",
		"{{nosuchfunc}}":               `function "nosuchfunc" not defined`,
		"{{end}}":                      "unexpected {{end}}",
		"{{range 1000000000}}{{end}}x": "range is not allowed",
		`{{range $k, $v := .PVC.Labels}}{{$k}}{{end}}`:                          "range is not allowed",
		`{{if .PVC.Name}}{{range 3}}{{end}}{{end}}`:                             "range is not allowed",
		`{{define "t"}}{{template "t"}}{{template "t"}}{{end}}{{template "t"}}`: "define is not allowed",
		`{{block "b" .}}x{{end}}`:                                               "define is not allowed",
		`{{with .PVC}}{{template "x"}}{{end}}`:                                  "template is not allowed",
		strings.Repeat("x", MaxPattern+1):                                       "pathPattern over its limits: the pattern has 16385 bytes (at most 16384)",
		`{{printf "%4097d" 1}}`:                                                 "pathPattern over its limits: printf width or precision over 4096",
		`{{printf "%.99999999999999999999f" 1.0}}`:                              "printf width or precision over 4096",
		`{{printf "%*d" 3 1}}`:                                                  "printf width or precision from an argument (*)",
		`{{printf "%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s" .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name .PVC.Name}}`: "rendered for a sample claim:",
	} {
		if _, err := Parse(pattern); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%.80q) = %v, want an error containing %q", pattern, err, want)
		}
	}
}

// Ways to make a value twice as long as X: every function that can grow a string.
const (
	printfTwice   = `printf "%s%s" X X`
	printTwice    = `print X X`
	printlnTwice  = `println X X`
	htmlTwice     = `html X X`
	jsTwice       = `js X X`
	urlqueryTwice = `urlquery X X`
)

// doubling is a pattern that makes a value of 2^levels times the claim's name, one level in each
// assignment of $a, and renders its length.
func doubling(levels int, twice string) string {
	var b strings.Builder
	b.WriteString("{{$a := " + strings.ReplaceAll(twice, "X", ".PVC.Name") + "}}")
	for range levels - 1 {
		b.WriteString("{{$a = " + strings.ReplaceAll(twice, "X", "$a") + "}}")
	}
	b.WriteString("{{len $a}}")
	return b.String()
}

// nestedDoubling doubles through with, which rebinds dot, instead of a variable.
func nestedDoubling(levels int) string {
	return `{{with .PVC.Name}}` + strings.Repeat(`{{with printf "%s%s" . .}}`, levels) + `{{len .}}` + strings.Repeat(`{{end}}`, levels+1)
}

// TestRenderBounded: a pattern doubling a value 16, 20 or 22 times through any function that can
// grow a string (2^22 times a name of 253 bytes: once 6.5 GiB) fails with ErrTooLarge after
// allocating little: when rendered for a claim it doubles for, and with its class when it does so
// for any claim (Parse renders it for a sample claim). Each case stops the test if it fails,
// before a larger one could exhaust memory.
func TestRenderBounded(t *testing.T) {
	const maxAlloc = 64 << 20
	var patterns []string
	for _, levels := range []int{16, 20, 22} {
		for _, twice := range []string{printfTwice, printTwice, printlnTwice, htmlTwice, jsTwice, urlqueryTwice} {
			patterns = append(patterns, doubling(levels, twice))
		}
		patterns = append(patterns, nestedDoubling(levels))
	}
	patterns = append(patterns, `{{printf "%999999d%999999d%999999d%999999d%999999d%999999d%999999d%999999d" 1 1 1 1 1 1 1 1}}`)
	claim := Data{PVC: Claim{Namespace: "team-a", Name: strings.Repeat("n", 253)}}
	for _, pattern := range patterns {
		// The sample claim's namespace is not team-a: Parse does not see it grow.
		guarded := `{{if eq .PVC.Namespace "team-a"}}` + pattern + `{{end}}x`
		tmpl, err := Parse(guarded)
		if err != nil {
			t.Fatalf("Parse(%.80q...) = %v", guarded, err)
		}
		if n := allocated(func() { _, err = Render(tmpl, claim) }); n > maxAlloc {
			t.Fatalf("Render(%.80q...) allocated %d MiB", guarded, n>>20)
		}
		if !errors.Is(err, ErrTooLarge) || !strings.HasPrefix(err.Error(), "pathPattern: template: ") {
			t.Fatalf("Render(%.80q...) = %v, want a value over its limit", guarded, err)
		}

		if n := allocated(func() { _, err = Parse(pattern) }); n > maxAlloc {
			t.Fatalf("Parse(%.80q...) allocated %d MiB", pattern, n>>20)
		}
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "rendered for a sample claim: ") ||
			!strings.Contains(err.Error(), "(at most 4096)") && !strings.Contains(err.Error(), "width or precision over 4096") {
			t.Fatalf("Parse(%.80q...) = %v, want the sample claim's value over its limit", pattern, err)
		}
	}
}

// allocated returns how many bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// validateTests also seed FuzzValidate.
var validateTests = []struct {
	path    string
	wantErr string // "" means accepted
}{
	{path: "a"},
	{path: "a/b"},
	{path: "team-a/www-web-0"},
	{path: "é"},
	{path: "日本/データ"},
	{path: "🚀"},
	{path: "a b"},
	{path: "données"},
	{path: "e\u0301te\u0301"}, // é as e and a combining acute accent
	{path: "1\ufe0f\u20e3"},   // keycap one: a variation selector and an enclosing mark after a digit
	{path: "\u2764\ufe0f"},    // red heart: a variation selector after a symbol
	{path: "한국어/ᄀ"},
	{path: "a\u00adb", wantErr: "invisible format character U+00AD"}, // soft hyphen
	{path: "\ufffd"}, // the replacement character itself is valid UTF-8
	{path: "a...b"},
	{path: strings.Repeat("x", MaxComponent)},

	{path: "", wantErr: "empty"},
	{path: "../a", wantErr: "escapes its root"},
	{path: "a/../..", wantErr: "escapes its root"},
	{path: "x/..", wantErr: "not clean"},
	{path: "/x", wantErr: "absolute"},
	{path: ".", wantErr: "starts with"},
	{path: "a/./b", wantErr: "not clean"},
	{path: "a//b", wantErr: "not clean"},
	{path: "a/", wantErr: "not clean"},
	{path: ".x", wantErr: `component ".x" starts with "."`},
	{path: "a/.dirpv", wantErr: `component ".dirpv" starts with "."`},
	{path: `a\..\b`, wantErr: "backslash"},
	{path: strings.Repeat("x", MaxComponent+1), wantErr: "component longer than 200 bytes"},
	{path: strings.Repeat("x/", MaxPath/2) + "x", wantErr: "longer than 1024 bytes"},

	{path: "a\x00b", wantErr: "control character U+0000"},
	{path: "a\nb", wantErr: "control character U+000A"},
	{path: "a\tb", wantErr: "control character U+0009"},
	{path: "a\x1bb", wantErr: "control character U+001B"},
	{path: "a\x7fb", wantErr: "control character U+007F"},
	{path: "a\u0085b", wantErr: "control character U+0085"},
	{path: "a\u009bb", wantErr: "control character U+009B"},
	{path: "a\u202eb", wantErr: "invisible format character U+202E"},
	{path: "a\u2066b", wantErr: "invisible format character U+2066"},
	{path: "a\u200bb", wantErr: "invisible format character U+200B"},
	{path: "a\u200db", wantErr: "invisible format character U+200D"},
	{path: "\ufeffa", wantErr: "invisible format character U+FEFF"},
	{path: "a\u2028b", wantErr: "line or paragraph separator U+2028"},
	{path: "a\u2029b", wantErr: "line or paragraph separator U+2029"},
	{path: "a\xffb", wantErr: "invalid UTF-8 at byte 1"},
	{path: "a/\xc3", wantErr: "invalid UTF-8 at byte 2"},
	{path: "\xed\xa0\x80", wantErr: "invalid UTF-8 at byte 0"}, // an encoded surrogate
	{path: " a", wantErr: `component " a" starts with white space U+0020`},
	{path: "x/a ", wantErr: `component "a " ends with white space U+0020`},

	{path: "a\u00a0b", wantErr: "space other than the ASCII space: U+00A0"}, // no-break space
	{path: "a/\u3000b", wantErr: "space other than the ASCII space: U+3000"},
	{path: "a\u00a0/b", wantErr: "space other than the ASCII space: U+00A0"},
	{path: "a\u2007b", wantErr: "space other than the ASCII space: U+2007"}, // figure space
	{path: "a\u202fb", wantErr: "space other than the ASCII space: U+202F"}, // narrow no-break space
	{path: "a\u1680b", wantErr: "space other than the ASCII space: U+1680"}, // ogham space mark
	{path: "a\u3164b", wantErr: "invisible filler character U+3164"},        // Hangul filler
	{path: "\u115fa", wantErr: "invisible filler character U+115F"},         // Hangul choseong filler
	{path: "a\u1160", wantErr: "invisible filler character U+1160"},         // Hangul jungseong filler
	{path: "x/\uffa0", wantErr: "invisible filler character U+FFA0"},        // halfwidth Hangul filler
	{path: "\u3164", wantErr: "invisible filler character U+3164"},
	{path: "a\u2800b", wantErr: "invisible filler character U+2800"}, // braille pattern blank
	{path: "\u2800", wantErr: "invisible filler character U+2800"},
	{path: "a\u034fb", wantErr: "invisible filler character U+034F"}, // combining grapheme joiner
	{path: "a\u17b4b", wantErr: "invisible filler character U+17B4"}, // Khmer inherent vowel
	{path: "\u0301", wantErr: "combining mark without a letter, number or symbol before it: U+0301"},
	{path: "\u0301a", wantErr: "combining mark without a letter, number or symbol before it: U+0301"},
	{path: "a/\u0308b", wantErr: "combining mark without a letter, number or symbol before it: U+0308"},
	{path: "a \u0301b", wantErr: "combining mark without a letter, number or symbol before it: U+0301"},
	{path: "a-\u20ddb", wantErr: "combining mark without a letter, number or symbol before it: U+20DD"}, // Me after punctuation
	{path: "\u0903a", wantErr: "combining mark without a letter, number or symbol before it: U+0903"},   // Mc
	{path: "\ufe0fa", wantErr: "combining mark without a letter, number or symbol before it: U+FE0F"},
	{path: "a\ue000b", wantErr: "private-use character U+E000"},
	{path: "a\uf8ff", wantErr: "private-use character U+F8FF"},
	{path: "\U000f0000", wantErr: "private-use character U+F0000"},
	{path: "\U0010fffd", wantErr: "private-use character U+10FFFD"},
	{path: "a\ufdd0b", wantErr: "noncharacter U+FDD0"},
	{path: "a\ufdef", wantErr: "noncharacter U+FDEF"},
	{path: "a\ufffe", wantErr: "noncharacter U+FFFE"},
	{path: "a\uffff", wantErr: "noncharacter U+FFFF"},
	{path: "a\U0001fffe", wantErr: "noncharacter U+1FFFE"},
	{path: "a\U0010ffff", wantErr: "noncharacter U+10FFFF"},
	{path: "a\u0378b", wantErr: "character unassigned in Unicode " + unicode.Version + ": U+0378"},
	{path: "a\U000e0080", wantErr: "character unassigned in Unicode " + unicode.Version + ": U+E0080"},
	{path: "a\u2065", wantErr: "character unassigned in Unicode " + unicode.Version + ": U+2065"},
}

func TestValidate(t *testing.T) {
	for _, tt := range validateTests {
		err := Validate(tt.path)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("Validate(%q) = %v, want nil", tt.path, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Validate(%q) = %v, want error containing %q", tt.path, err, tt.wantErr)
		case err != nil && !errors.Is(err, ErrUnsafe):
			t.Errorf("Validate(%q) = %v, not wrapping ErrUnsafe", tt.path, err)
		case err != nil && hasRefused(err.Error()):
			t.Errorf("Validate(%q) = %q, echoing a refused character", tt.path, err)
		}
	}
}

// isRefused is the character rule as the README states it, written independently of refused,
// but for combining marks, which depend on the character before them (see hasRefused).
func isRefused(r rune) bool {
	switch {
	case r == ' ':
		return false
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Z, unicode.Co):
		return true
	case r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE: // noncharacters
		return true
	case strings.ContainsRune("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0\u2800", r): // fillers
		return true
	}
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) // unassigned
}

// hasRefused reports whether s breaks the character rule, a combining mark included when it
// does not follow a letter, a number, a symbol or another mark.
func hasRefused(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	prev := rune(0)
	for _, r := range s {
		if isRefused(r) || unicode.IsMark(r) && !unicode.In(prev, unicode.L, unicode.N, unicode.S, unicode.M) {
			return true
		}
		prev = r
	}
	return false
}

// FuzzValidate checks that whatever Validate accepts follows every rule and stays strictly inside
// its root.
func FuzzValidate(f *testing.F) {
	for _, tt := range validateTests {
		f.Add(tt.path)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if Validate(p) != nil {
			return
		}
		checkAccepted(t, p)
		if !errors.Is(Validate("../"+p), ErrUnsafe) {
			t.Fatalf("accepted ../%s", p)
		}
	})
}

// checkAccepted fails unless p is a path Validate may accept.
func checkAccepted(t *testing.T, p string) {
	t.Helper()
	if len(p) == 0 || len(p) > MaxPath {
		t.Fatalf("accepted %q of %d bytes", p, len(p))
	}
	if hasRefused(p) || strings.Contains(p, `\`) {
		t.Fatalf("accepted %q with a refused character", p)
	}
	if !filepath.IsLocal(p) || path.Clean(p) != p {
		t.Fatalf("accepted non-local or unclean %q", p)
	}
	if joined := filepath.Join("/root", p); !strings.HasPrefix(joined, "/root/") {
		t.Fatalf("accepted %q escaping to %q", p, joined)
	}
	for _, c := range strings.Split(p, "/") {
		first, _ := utf8.DecodeRuneInString(c)
		last, _ := utf8.DecodeLastRuneInString(c)
		if c == "" || c == ".." || strings.HasPrefix(c, ".") || len(c) > MaxComponent || unicode.IsSpace(first) || unicode.IsSpace(last) {
			t.Fatalf("accepted %q with component %q", p, c)
		}
	}
}

// FuzzRender renders fuzzed patterns with fuzzed claim data: whatever Render returns must be a safe
// path, and its errors must not echo refused characters that the pattern itself does not contain.
func FuzzRender(f *testing.F) {
	for _, tt := range renderTests {
		f.Add(tt.pattern, tt.labels["app"], tt.annotations["dir"])
	}
	f.Add(doubling(22, printfTwice), "web", "data")
	f.Add(nestedDoubling(22), "web", "data")
	f.Fuzz(func(t *testing.T, pattern, label, annotation string) {
		tmpl, err := Parse(pattern)
		if err != nil {
			return
		}
		d := data(map[string]string{"app": label}, map[string]string{"dir": annotation, "example.com/team": annotation})
		p, err := Render(tmpl, d)
		if err != nil {
			if !hasRefused(pattern) && hasRefused(err.Error()) {
				t.Fatalf("error %q echoes a refused character", err)
			}
			return
		}
		if err := Validate(p); err != nil {
			t.Fatalf("Render returned %q, which Validate refuses: %v", p, err)
		}
		checkAccepted(t, p)
	})
}
