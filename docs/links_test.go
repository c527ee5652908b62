package docs

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// TestLinks checks every link and image in the README and the docs pages: a relative target must
// exist, and its #anchor, if any, must name a heading of the Markdown file it points to. An
// absolute http(s) link is not fetched, only checked to name a host.
func TestLinks(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append([]string{filepath.Join("..", "README.md")}, pages...)
	if len(pages) < 2 {
		t.Fatalf("no docs pages found beside the README: %v", pages)
	}
	for _, page := range pages {
		problems, err := checkPage(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Error(p)
		}
	}
}

// TestCheckPageFindsBrokenLinks proves the check fails where it should: a missing file, a missing
// anchor in another page or in the same one, an empty target, a link with no host.
func TestCheckPageFindsBrokenLinks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("docs/other.md", "# Other page\n\n## NFS: mount or direct\n\n## Repeated\n\n## Repeated\n")
	write("docs/image.png", "")
	page := write("README.md", strings.Join([]string{
		"# Title",
		"",
		"## `volumeType: local`",
		"",
		"good: [a](docs/other.md), [b](docs/other.md#nfs-mount-or-direct), [c](#volumetype-local),",
		"[d](docs/other.md#repeated-1 \"a title\"), ![e](docs/image.png), [f](https://example.com/x),",
		"[g](docs/), `[not a link](nowhere.md)`, and [h][ref].",
		"",
		"```sh",
		"[not a link either](nowhere.md)",
		"```",
		"",
		"bad: [1](docs/missing.md), [2](docs/other.md#no-such-heading), [3](#nowhere), [4](),",
		"![5](docs/missing.png), [6](https://), [7](docs/image.png#anchor), [8][bad].",
		"",
		"[ref]: docs/other.md#other-page",
		"[bad]: docs/gone.md",
	}, "\n"))
	problems, err := checkPage(page)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docs/missing.md", "#no-such-heading", "#nowhere", "empty link", "docs/missing.png",
		"https://", "docs/image.png#anchor", "docs/gone.md"}
	if len(problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(problems), len(want), strings.Join(problems, "\n"))
	}
	for _, w := range want {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
			t.Errorf("no problem mentions %q:\n%s", w, strings.Join(problems, "\n"))
		}
	}
}

func TestAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"NFS: mount or direct":                       "nfs-mount-or-direct",
		"`volumeType: local`":                        "volumetype-local",
		"With kube-controller-manager's rate raised": "with-kube-controller-managers-rate-raised",
		"Node maintenance (hostPath)":                "node-maintenance-hostpath",
		"Size enforcement (`make quota`)":            "size-enforcement-make-quota",
		"The [local cluster](x.md) and *more*":       "the-local-cluster-and-more",
		"Characters in paths ##":                     "characters-in-paths",
		"snake_case and  two spaces":                 "snake_case-and--two-spaces",
		"C# notes":                                   "c-notes",
	} {
		if got := anchor(heading); got != want {
			t.Errorf("anchor(%q) = %q, want %q", heading, got, want)
		}
	}
}

var (
	// inlineLink matches the start of an inline link or image, up to its opening parenthesis.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(`)
	// refLink matches a reference-style link or image, [text][label].
	refLink = regexp.MustCompile(`!?\[[^\]]*\]\[([^\]]+)\]`)
	// refDef matches a link reference definition, [label]: target.
	refDef = regexp.MustCompile(`^ {0,3}\[([^\]]+)\]:\s*(\S*)`)
	// codeSpan matches inline code, whose brackets are no links.
	codeSpan = regexp.MustCompile("``[^`]*``|`[^`]*`")
	heading  = regexp.MustCompile(`^ {0,3}(#{1,6})\s+(.*)$`)
	// closing matches a heading's optional closing sequence of '#'.
	closing = regexp.MustCompile(`(^|\s+)#+\s*$`)
	// linkText turns a link inside a heading into its text.
	linkText = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// checkPage returns a line for each link of the Markdown file page that does not resolve.
func checkPage(page string) ([]string, error) {
	data, err := os.ReadFile(page)
	if err != nil {
		return nil, err
	}
	var problems []string
	defs := map[string]string{}
	type ref struct {
		line  int
		label string
	}
	var refs []ref
	check := func(line int, target string) {
		if msg := checkTarget(page, target); msg != "" {
			problems = append(problems, fmt.Sprintf("%s:%d: %s", page, line, msg))
		}
	}
	for i, text := range proseLines(string(data)) {
		if text == "" {
			continue
		}
		n := i + 1
		if m := refDef.FindStringSubmatch(text); m != nil {
			defs[strings.ToLower(m[1])] = m[2]
			continue
		}
		text = codeSpan.ReplaceAllString(text, "")
		for _, loc := range inlineLink.FindAllStringIndex(text, -1) {
			check(n, linkTarget(text[loc[1]:]))
		}
		for _, m := range refLink.FindAllStringSubmatch(text, -1) {
			refs = append(refs, ref{n, strings.ToLower(m[1])})
		}
	}
	for _, r := range refs {
		target, ok := defs[r.label]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s:%d: link reference [%s] is not defined", page, r.line, r.label))
			continue
		}
		check(r.line, target)
	}
	return problems, nil
}

// proseLines returns the lines of a Markdown text, with those of fenced code blocks blanked, so
// that line numbers stay right.
func proseLines(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		switch {
		case fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
			lines[i] = ""
		case fence != "":
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			lines[i] = ""
		}
	}
	return lines
}

// linkTarget reads the destination of an inline link from the text after its "(": up to the
// matching ")", without an optional title or angle brackets.
func linkTarget(rest string) string {
	depth, end := 0, len(rest)
	for i, r := range rest {
		if r == '(' {
			depth++
		} else if r == ')' {
			if depth == 0 {
				end = i
				break
			}
			depth--
		}
	}
	dest := strings.TrimSpace(rest[:end])
	if strings.HasPrefix(dest, "<") {
		if j := strings.Index(dest, ">"); j > 0 {
			return dest[1:j]
		}
	}
	if j := strings.IndexAny(dest, " \t"); j >= 0 {
		dest = dest[:j] // a title follows
	}
	return dest
}

// checkTarget says what is wrong with a link to target from the file page, or "".
func checkTarget(page, target string) string {
	if target == "" {
		return "empty link"
	}
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Sprintf("link %q: %v", target, err)
	}
	if u.Scheme != "" {
		if (u.Scheme == "http" || u.Scheme == "https") && u.Host == "" {
			return fmt.Sprintf("link %q names no host", target)
		}
		return "" // not fetched
	}
	file := page
	if u.Path != "" {
		file = filepath.Join(filepath.Dir(page), filepath.FromSlash(u.Path))
		if _, err := os.Stat(file); err != nil {
			return fmt.Sprintf("link %q: %s does not exist", target, file)
		}
	}
	if u.Fragment == "" {
		return ""
	}
	if !strings.HasSuffix(file, ".md") {
		return fmt.Sprintf("link %q: an anchor in %s, which is not a Markdown file", target, file)
	}
	anchors, err := headingAnchors(file)
	if err != nil {
		return fmt.Sprintf("link %q: %v", target, err)
	}
	if !slices.Contains(anchors, u.Fragment) {
		return fmt.Sprintf("link %q: %s has no heading #%s", target, file, u.Fragment)
	}
	return ""
}

// headingAnchors returns the anchors GitHub gives the headings of a Markdown file: a repeated
// one gets -1, -2, ... after its first.
func headingAnchors(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var anchors []string
	seen := map[string]int{}
	for _, l := range proseLines(string(data)) {
		m := heading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		a := anchor(m[2])
		if n := seen[a]; n > 0 {
			anchors = append(anchors, fmt.Sprintf("%s-%d", a, n))
		} else {
			anchors = append(anchors, a)
		}
		seen[a]++
	}
	return anchors, nil
}

// anchor is the anchor GitHub gives a heading: its text as shown (links become their text,
// markup goes), in lower case, spaces turned into '-', and every other character but letters,
// digits, '-' and '_' dropped.
func anchor(h string) string {
	h = strings.TrimSpace(closing.ReplaceAllString(h, ""))
	h = linkText.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
