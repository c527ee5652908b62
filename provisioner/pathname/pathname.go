// Package pathname parses a StorageClass's pathPattern, renders it for one claim and checks that
// the result is a safe directory name relative to the volume root. PVC labels and annotations are
// tenant input, so the check runs on the rendered result, never on the pattern. The character rule
// of that check also applies to the absolute paths an operator configures (CheckCharacters).
package pathname

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"
	"unicode/utf8"
)

// Limits on a rendered path. Linux allows 255 bytes per name; 200 leaves room for the archive
// name ("archived-<name>-<timestamp>") and the hidden ownership marker beside it.
const (
	MaxComponent = 200
	MaxPath      = 1024
)

// ErrUnsafe is wrapped by every error about a rendered path that must not be used.
var ErrUnsafe = errors.New("unsafe volume path")

// Claim is what a pattern may read of the PVC.
type Claim struct {
	Namespace   string
	Name        string
	Labels      Labels
	Annotations Annotations
}

// Labels and Annotations are distinct types so that a missing key can be reported as a missing
// label or a missing annotation.
type (
	Labels      map[string]string
	Annotations map[string]string
)

// Volume is what a pattern may read of the PV.
type Volume struct {
	Name string
}

// Data is the pattern's input: {{.PVC.Namespace}}, {{.PV.Name}}, {{index .PVC.Annotations "k"}}, ...
type Data struct {
	PVC Claim
	PV  Volume
}

// Parse parses a pathPattern. A missing label or annotation is an error at render time, never an
// empty path component: missingkey=error covers {{.PVC.Labels.k}}, and index is replaced by one
// that refuses a missing key (the builtin returns "" for it).
//
// Loops and templates (range, define, block, template) are refused: a path needs none of them,
// and text/template has no time limit, so {{range 1000000000}}{{end}} or a template calling
// itself twice would hold a provisioning worker for as long as it runs. Without them every node
// runs at most once, and the functions that make strings are bounded (see funcs), so rendering
// takes time and memory in proportion to the pattern, which is at most MaxPattern bytes.
func Parse(pattern string) (*template.Template, error) {
	if len(pattern) > MaxPattern {
		return nil, fmt.Errorf("%w: the pattern has %d bytes (at most %d)", ErrTooLarge, len(pattern), MaxPattern)
	}
	t, err := template.New("pathPattern").
		Option("missingkey=error").
		Funcs(funcs).
		Parse(pattern)
	if err != nil {
		return nil, err
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("define is not allowed in a pathPattern (nor block)")
	}
	if err := walk(t.Tree.Root, refuseLoops); err != nil {
		return nil, err
	}
	if err := checkSample(t); err != nil {
		return nil, err
	}
	return t, nil
}

// refuseLoops refuses a loop or a template call.
func refuseLoops(n parse.Node) error {
	switch n.(type) {
	case *parse.RangeNode:
		return errors.New("range is not allowed in a pathPattern")
	case *parse.TemplateNode:
		return errors.New("template is not allowed in a pathPattern")
	}
	return nil
}

// walk calls visit on n and on every node below it, up to the first error.
func walk(n parse.Node, visit func(parse.Node) error) error {
	if err := visit(n); err != nil {
		return err
	}
	var below []parse.Node
	branch := func(b *parse.BranchNode) {
		below = append(below, b.Pipe, b.List)
		if b.ElseList != nil {
			below = append(below, b.ElseList)
		}
	}
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			below = append(below, c)
		}
	case *parse.ActionNode:
		below = append(below, n.Pipe)
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			below = append(below, c)
		}
	case *parse.CommandNode:
		below = n.Args
	case *parse.ChainNode:
		below = append(below, n.Node)
	case *parse.IfNode:
		branch(&n.BranchNode)
	case *parse.WithNode:
		branch(&n.BranchNode)
	case *parse.RangeNode:
		branch(&n.BranchNode)
	case *parse.TemplateNode:
		if n.Pipe != nil {
			below = append(below, n.Pipe)
		}
	}
	for _, c := range below {
		if err := walk(c, visit); err != nil {
			return err
		}
	}
	return nil
}

// index is {{index .PVC.Labels "k"}} and {{index .PVC.Annotations "k"}}, the only way to read keys
// such as "example.com/team", with an error for a missing key.
func index(m any, keys ...any) (string, error) {
	var kind string
	var values map[string]string
	switch m := m.(type) {
	case Labels:
		kind, values = "label", m
	case Annotations:
		kind, values = "annotation", m
	default:
		return "", fmt.Errorf("index reads only .PVC.Labels and .PVC.Annotations, not a value of type %T", m)
	}
	if len(keys) != 1 {
		return "", fmt.Errorf("index of the %ss takes one key, not %d", kind, len(keys))
	}
	key, ok := keys[0].(string)
	if !ok {
		return "", fmt.Errorf("index of the %ss takes a string key, not a value of type %T", kind, keys[0])
	}
	v, ok := values[key]
	if !ok {
		return "", fmt.Errorf("%s %s is not set on the claim", kind, Quote(key))
	}
	return v, nil
}

// Render executes the pattern and validates the result.
func Render(t *template.Template, d Data) (string, error) {
	var w limitWriter
	if err := t.Execute(&w, d); err != nil {
		return "", fmt.Errorf("pathPattern: %w", err)
	}
	p := w.String()
	if err := Validate(p); err != nil {
		return "", fmt.Errorf("pathPattern rendered %s: %w", Quote(p), err)
	}
	return p, nil
}

// limitWriter stops a pattern as soon as its output is too long to be accepted, so that a pattern
// such as {{range 1000000000}}x{{end}} cannot exhaust memory (it can still loop for long without
// writing: text/template has no time limit).
type limitWriter struct{ strings.Builder }

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > MaxPath {
		return 0, fmt.Errorf("%w: longer than %d bytes", ErrUnsafe, MaxPath)
	}
	return w.Builder.Write(p)
}

// Validate accepts a non-empty, clean, relative path that stays below its root, follows the
// character rule of CheckCharacters, and has no backslashes or hidden components. Hidden names are
// reserved for dirpv's ownership markers.
func Validate(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrUnsafe)
	case len(p) > MaxPath:
		return fmt.Errorf("%w: longer than %d bytes", ErrUnsafe, MaxPath)
	case path.IsAbs(p):
		return fmt.Errorf("%w: absolute", ErrUnsafe)
	case !filepath.IsLocal(p):
		return fmt.Errorf("%w: escapes its root", ErrUnsafe)
	case path.Clean(p) != p:
		return fmt.Errorf("%w: not clean (empty, \".\" or \"..\" components, or a trailing slash)", ErrUnsafe)
	case strings.Contains(p, `\`):
		return fmt.Errorf("%w: contains a backslash", ErrUnsafe)
	}
	if err := CheckCharacters(p); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafe, err)
	}
	for _, c := range strings.Split(p, "/") {
		switch {
		case strings.HasPrefix(c, "."):
			return fmt.Errorf("%w: component %q starts with \".\"", ErrUnsafe, c)
		case len(c) > MaxComponent:
			return fmt.Errorf("%w: component longer than %d bytes", ErrUnsafe, MaxComponent)
		}
	}
	return nil
}

// CheckCharacters is the character rule for every path dirpv makes or uses, relative or absolute.
// A path must be valid UTF-8 and hold only characters that show what a name is:
//   - no control characters (Unicode Cc: C0, DEL, C1);
//   - no invisible format characters (Cf: bidi controls, zero-width characters, soft hyphen, BOM,
//     tags, ...), and no line or paragraph separators (Zl, Zp);
//   - no space but the ASCII space U+0020 (no Zs such as the no-break U+00A0 or the ideographic
//     U+3000), and no component that begins or ends with white space;
//   - no private-use characters (Co), no noncharacters (U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF), and
//     no code points unassigned in the Unicode version of the build (unicode.Version), which
//     could show as anything later;
//   - no invisible fillers: the default-ignorable letters and marks (Hangul fillers U+115F,
//     U+1160, U+3164, U+FFA0, the combining grapheme joiner U+034F, ...) and the braille blank
//     U+2800, which look like a space or nothing at all;
//   - no lone combining mark: a mark (Mn, Mc, Me) must follow a letter, a number, a symbol or
//     another mark, not begin a component or follow a space or punctuation.
//
// The offending character is named as U+XXXX, never echoed raw, since errors become events.
func CheckCharacters(p string) error {
	prev := rune(0)
	for i, r := range p {
		if r == utf8.RuneError && !strings.HasPrefix(p[i:], string(utf8.RuneError)) {
			return fmt.Errorf("invalid UTF-8 at byte %d", i)
		}
		if what := refused(prev, r); what != "" {
			return fmt.Errorf("%s %U", what, r)
		}
		prev = r
	}
	for c := range strings.SplitSeq(p, "/") {
		if r, _ := utf8.DecodeRuneInString(c); unicode.IsSpace(r) {
			return fmt.Errorf("component %s starts with white space %U", Quote(c), r)
		}
		if r, _ := utf8.DecodeLastRuneInString(c); unicode.IsSpace(r) {
			return fmt.Errorf("component %s ends with white space %U", Quote(c), r)
		}
	}
	return nil
}

// refused names the kind of r if the character rule refuses it after prev (0 at the start of a
// path), or returns "".
func refused(prev, r rune) string {
	switch {
	case r == ' ':
		return ""
	case unicode.Is(unicode.Cc, r):
		return "control character"
	case unicode.Is(unicode.Cf, r):
		return "invisible format character"
	case unicode.In(r, unicode.Zl, unicode.Zp):
		return "line or paragraph separator"
	case unicode.Is(unicode.Zs, r):
		return "space other than the ASCII space:"
	case unicode.Is(unicode.Co, r):
		return "private-use character"
	case unicode.Is(unicode.Noncharacter_Code_Point, r):
		return "noncharacter"
	case !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S):
		// Every assigned character of the other categories (C, Z) was refused or let
		// through above; surrogates are not valid UTF-8.
		return "character unassigned in Unicode " + unicode.Version + ":"
	case r == '\u2800' || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r):
		return "invisible filler character"
	case unicode.IsMark(r) && !unicode.In(prev, unicode.L, unicode.N, unicode.S, unicode.M):
		return "combining mark without a letter, number or symbol before it:"
	}
	return ""
}

// Quote is strconv.Quote that also escapes what the character rule refuses and strconv.Quote
// would leave as it is (fillers, the braille blank, lone combining marks), so that an error can
// name a path or a host without carrying what the rule keeps out of events.
func Quote(s string) string {
	var b strings.Builder
	prev := rune(0)
	for _, r := range strconv.Quote(s) {
		if refused(prev, r) == "" {
			b.WriteRune(r)
			prev = r
			continue
		}
		esc := fmt.Sprintf(`\u%04x`, r)
		if r > 0xFFFF {
			esc = fmt.Sprintf(`\U%08x`, r)
		}
		b.WriteString(esc)
		prev = rune(esc[len(esc)-1])
	}
	return b.String()
}
