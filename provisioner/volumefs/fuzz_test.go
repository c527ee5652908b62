package volumefs

import (
	"errors"
	"testing"
)

// FuzzParseMarker: whatever a marker file holds, decoding it never panics; what it accepts
// names a PV, and every marker dirpv writes decodes to itself.
func FuzzParseMarker(f *testing.F) {
	for _, seed := range []string{
		`{"pv":"pvc-1"}`,
		`{"pv":"pvc-1","claimUID":"u","claimNamespace":"ns","claimName":"c","nodeUID":"n","recycled":"u0","released":"kept at 2026-01-01T00:00:00Z"}` + "\n",
		`{"pv":""}`, `{"pv":`, `null`, `[]`, `{"pv":"a","pv":"b"}`, "", "\x00", `{"pv":"\u202e"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMarker(data, "m")
		if err != nil {
			if m != nil {
				t.Fatalf("marker %+v with error %v", m, err)
			}
			if len(data) == 0 && !errors.Is(err, errRetry) || len(data) > 0 && !errors.Is(err, ErrNotOwner) {
				t.Fatalf("error %v is neither errRetry (empty) nor ErrNotOwner", err)
			}
			return
		}
		if m.PV == "" {
			t.Fatalf("accepted a marker without a PV: %q", data)
		}
		enc, err := encodeMarker(*m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseMarker(enc, "m")
		if err != nil || *again != *m {
			t.Fatalf("%+v encodes to %q, which decodes to %+v, %v", m, enc, again, err)
		}
	})
}
