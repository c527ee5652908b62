package pathname

import (
	"errors"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"
)

// Limits on a pattern and on what it computes. text/template bounds neither: a pattern that
// doubles a value n times (through variables or nested with, a few dozen bytes a level) would
// hold 2^n bytes, whatever the length of its output. A value longer than a few paths is of no
// use in a path; MaxPattern bounds how many such values a pattern can hold at once.
const (
	MaxPattern = 16 << 10
	MaxValue   = 4 << 10
)

// maxEstimate bounds what a function may be asked to make before it is refused unmade; it makes
// up for estimates that count every string ten times over (quoting and escaping).
const maxEstimate = 64 * MaxValue

// ErrTooLarge is wrapped by every error about a pattern, or a value it makes, over its limits.
var ErrTooLarge = errors.New("pathPattern over its limits")

// funcs replaces every builtin that makes a string (text/template's own are unbounded) and index.
var funcs = template.FuncMap{
	"index":    index,
	"html":     bounded("html", template.HTMLEscaper),
	"js":       bounded("js", template.JSEscaper),
	"print":    bounded("print", fmt.Sprint),
	"println":  bounded("println", fmt.Sprintln),
	"printf":   printf,
	"urlquery": bounded("urlquery", template.URLQueryEscaper),
}

// bounded is f refusing, before it runs, arguments that could make more than maxEstimate bytes,
// and refusing a result over MaxValue.
func bounded(name string, f func(...any) string) func(...any) (string, error) {
	return func(args ...any) (string, error) {
		est, _, err := argSizes(name, args)
		if err != nil {
			return "", err
		}
		if err := checkEstimate(name, est); err != nil {
			return "", err
		}
		return checkValue(name, f(args...))
	}
}

// printf is fmt.Sprintf, bounded as the others are; the format counts too, each verb up to its
// width and precision (twice: a complex number has two parts) plus the largest argument.
func printf(format string, args ...any) (string, error) {
	sum, largest, err := argSizes("printf", args)
	if err != nil {
		return "", err
	}
	verbs, pad, err := scanFormat(format)
	if err != nil {
		return "", err
	}
	if err := checkEstimate("printf", len(format)+verbs*(2*pad+max(largest, argSize("")))+sum); err != nil {
		return "", err
	}
	return checkValue("printf", fmt.Sprintf(format, args...))
}

// argSizes bounds what the arguments of name can become when printed, quoted or escaped: their
// sum and the largest. Only strings, numbers and booleans are taken: a map or a struct prints
// each of its elements padded to a printf width, and no path needs one printed.
func argSizes(name string, args []any) (sum, largest int, err error) {
	for _, a := range args {
		switch a.(type) {
		case nil, string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr,
			float32, float64, complex64, complex128:
		default:
			return 0, 0, fmt.Errorf("%s takes strings, numbers and booleans, not a value of type %T", name, a)
		}
		n := argSize(a)
		sum += n
		largest = max(largest, n)
	}
	return sum, largest, nil
}

// argSize bounds what one argument becomes: a string escaped (at most 6 bytes a byte for html
// and js, 5 for printf's "%# x") and wrapped in a printf error such as "%!d(string=...)"; a
// number or boolean printed in full (a float64 in %f has up to 316 bytes; precision and width
// are counted apart).
func argSize(a any) int {
	if s, ok := a.(string); ok {
		return 10*len(s) + 32
	}
	return 1024
}

// scanFormat counts a printf format's verbs and returns the largest width plus precision one
// asks for. Those come from digits of at most MaxValue: one from an argument (*) would be known
// only while formatting, and fmt allows up to a million.
func scanFormat(format string) (verbs, pad int, err error) {
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		verbs++
		n, sum := 0, 0
		for i++; i < len(format) && strings.IndexByte("+-# 0123456789.[]*", format[i]) >= 0; i++ {
			switch c := format[i]; {
			case c == '*':
				return 0, 0, fmt.Errorf("%w: printf width or precision from an argument (*)", ErrTooLarge)
			case '0' <= c && c <= '9':
				if n = 10*n + int(c-'0'); n > MaxValue {
					return 0, 0, fmt.Errorf("%w: printf width or precision over %d", ErrTooLarge, MaxValue)
				}
			default:
				sum, n = sum+n, 0
			}
		}
		pad = max(pad, sum+n) // the outer loop steps over the verb: a '%' there starts none
	}
	return verbs, pad, nil
}

func checkEstimate(name string, est int) error {
	if est > maxEstimate {
		return fmt.Errorf("%w: %s could make a value of up to %d bytes (at most %d)", ErrTooLarge, name, est, MaxValue)
	}
	return nil
}

func checkValue(name, v string) (string, error) {
	if len(v) > MaxValue {
		return "", fmt.Errorf("%w: %s made a value of %d bytes (at most %d)", ErrTooLarge, name, len(v), MaxValue)
	}
	return v, nil
}

// checkSample renders t for a claim whose names and values have the largest length a real claim
// usually has, every label and annotation the pattern names set, so that a pattern over its
// limits whatever the claim is refused with its class. Branches taken only for some claims are
// left to Render, which keeps the same limits.
func checkSample(t *template.Template) error {
	value := func(n int) string { return strings.Repeat("x", n) }
	labels, annotations := Labels{}, Annotations{}
	_ = walk(t.Tree.Root, func(n parse.Node) error {
		var keys []string
		switch n := n.(type) {
		case *parse.FieldNode:
			keys = n.Ident
		case *parse.VariableNode:
			keys = n.Ident
		case *parse.ChainNode:
			keys = n.Field
		case *parse.StringNode:
			keys = []string{n.Text}
		}
		for _, k := range keys {
			labels[k], annotations[k] = value(63), value(63)
		}
		return nil
	})
	d := Data{PVC: Claim{Namespace: value(63), Name: value(253), Labels: labels, Annotations: annotations}, PV: Volume{Name: value(40)}}
	if err := t.Execute(&limitWriter{}, d); errors.Is(err, ErrTooLarge) {
		return fmt.Errorf("rendered for a sample claim: %w", err)
	}
	return nil
}
