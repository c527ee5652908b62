//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"time"
)

// reliability prints a case's figures as one greppable line, "reliability: case=NAME k=v ...",
// on standard output: `make e2e | grep '^reliability:'` lists every case's. Durations are
// rounded to 100 ms.
func reliability(name string, kv ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "reliability: case=%s", name)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(100 * time.Millisecond)
		}
		fmt.Fprintf(&b, " %v=%v", kv[i], v)
	}
	fmt.Println(b.String())
}
