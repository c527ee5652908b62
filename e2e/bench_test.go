//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// benchClaims is the size of each burst.
const benchClaims = 200

// benchRun is one burst: how long its claims took to be Bound, and its deletion to finish.
type benchRun struct {
	Access string        `json:"access"`
	Class  string        `json:"class"`
	Claims int           `json:"claims"`
	Bind   time.Duration `json:"bindNanoseconds"`
	Delete time.Duration `json:"deleteNanoseconds"`
}

// TestBench is what `make bench` measures (hack/bench.sh sets DIRPV_BENCH to the JSON file it
// writes); the e2e suite skips it. A burst of 200 claims of one nfs class, all at once, until
// every claim is Bound, then all deleted until every PV and directory is gone: once with
// access: mount, once with access: direct, on the same export, in one run. The figures are
// reported as ratios (direct/mount), which compare on any machine; the invariants of a burst
// (one PV per claim, no orphans) are checked as in the fault cases.
func TestBench(t *testing.T) {
	out := os.Getenv("DIRPV_BENCH")
	if out == "" {
		t.Skip("run by make bench")
	}
	install(t, "install")
	bc := ownClient(t, 200, 400)
	var runs []benchRun
	for _, r := range []benchRun{{Access: "mount", Class: faultClassNFS}, {Access: "direct", Class: faultClassDirect}} {
		ns := namespace(t)
		subtree := filepath.Join("fault", ns)
		start := time.Now()
		claims := createClaims(t, bc, ns, r.Class, "c", benchClaims)
		pollFor(t, settleTimeout, r.Access+" claims Bound", func(ctx context.Context) (bool, error) {
			pvcs, err := claimsOf(ctx, bc, ns)
			if err != nil {
				return false, nil
			}
			for _, name := range claims {
				if pvcs[name].Status.Phase != v1.ClaimBound {
					return false, nil
				}
			}
			return true, nil
		})
		r.Claims, r.Bind = len(claims), time.Since(start)
		if a, duplicates, _ := provisioned(t, bc, ns, r.Class, subtree, claims); !a.clean() || duplicates > 0 {
			t.Fatalf("%s burst: %d duplicates, audit %+v", r.Access, duplicates, a)
		}

		start = time.Now()
		deleteClaims(t, bc, ns, claims)
		pollFor(t, settleTimeout, r.Access+" PVs and directories gone", func(ctx context.Context) (bool, error) {
			pvs, err := pvsWhere(ctx, bc, claimedIn(ns))
			if err != nil || len(pvs) > 0 {
				return false, nil
			}
			left, _ := os.ReadDir(filepath.Join(exportDir, subtree))
			return len(left) == 0, nil
		})
		r.Delete = time.Since(start)
		if a := deleted(t, bc, subtree, claimedIn(ns)); !a.clean() {
			t.Fatalf("%s deletion: audit %+v", r.Access, a)
		}
		runs = append(runs, r)
	}

	mount, direct := runs[0], runs[1]
	version, _ := client.Discovery().ServerVersion()
	report := map[string]any{
		"machine":                fmt.Sprintf("%d cores", runtime.NumCPU()),
		"kubernetes":             version.GitVersion,
		"runs":                   runs,
		"bindRatioDirectMount":   ratio(direct.Bind, mount.Bind),
		"deleteRatioDirectMount": ratio(direct.Delete, mount.Delete),
	}
	var b strings.Builder
	fmt.Fprintf(&b, "nfs, %d claims at once, %d cores, Kubernetes %s\n", benchClaims, runtime.NumCPU(), version.GitVersion)
	fmt.Fprintf(&b, "| run | mount | direct | direct/mount |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| all Bound | %.1f s | %.1f s | %.2f |\n", mount.Bind.Seconds(), direct.Bind.Seconds(), ratio(direct.Bind, mount.Bind))
	fmt.Fprintf(&b, "| deleted, PVs and directories gone | %.1f s | %.1f s | %.2f |\n", mount.Delete.Seconds(), direct.Delete.Seconds(), ratio(direct.Delete, mount.Delete))
	fmt.Print(b.String())
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }
