package quota

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestRoomDoesNotWrap: limits that add up past 2^64 bytes (each a limit a factor of +Inf once let
// through) count as more than any filesystem holds, not as what is left after wrapping; so
// does a limit whose bytes do not fit in 64 bits. A factor that is no finite number above 0 admits
// nothing.
func TestRoomDoesNotWrap(t *testing.T) {
	const size = 1 << 40
	records := map[uint32]nextdqblk{
		FirstID:     {Bhardlimit: 1 << 53}, // 2^63 bytes, in KiB
		FirstID + 1: {Bhardlimit: 1 << 53},
		FirstID + 2: {Bhardlimit: 1 << 20}, // 1 GiB
	}
	held, err := sumProjectLimits(fakeRecords(t, records), 0)
	if err != nil || held != math.MaxUint64 {
		t.Errorf("sum of limits 2^63, 2^63 and 1 GiB = %d, %v; want it held at 2^64-1", held, err)
	}
	if err := room("/x", size, held, size*9/10, 1); !errors.Is(err, ErrNoRoom) {
		t.Errorf("90%% of the filesystem beside 2^64 bytes of limits: %v, want ErrNoRoom", err)
	}
	wraps := map[uint32]nextdqblk{FirstID: {Bhardlimit: 1<<54 + 1}} // times 1024: 2^64 + 1 KiB
	if held, err := sumProjectLimits(fakeRecords(t, wraps), 0); err != nil || held != math.MaxUint64 {
		t.Errorf("a limit of 2^64 + 1 KiB = %d, %v; want it held at 2^64-1", held, err)
	}
	if held, err := sumProjectLimits(fakeRecords(t, records), uint64(FirstID)); err != nil || held != 1<<63+1<<30 {
		t.Errorf("sum of limits but the first = %d, %v; want 2^63 + 1 GiB", held, err)
	}

	for _, tt := range []struct {
		name        string
		held, bytes uint64
		overcommit  float64
		want        string // "": admitted
	}{
		{"fits", size / 2, size / 2, 1, ""},
		{"one byte over", size / 2, size/2 + 1, 1, "no room"},
		{"the sum wraps", math.MaxUint64, 2, 100, "no room"},
		{"overcommit 100", 99 * size, size, 100, ""},
		{"past overcommit 100", 99 * size, size + 1, 100, "no room"},
		{"+Inf", size, size, math.Inf(1), "not a finite number above 0"},
		{"NaN", 0, 1, math.NaN(), "not a finite number above 0"},
		{"0", 0, 1, 0, "not a finite number above 0"},
		{"1e308", math.MaxUint64 - 1, 1, 1e308, ""}, // the size times it saturates: everything fits
	} {
		err := room("/x", size, tt.held, tt.bytes, tt.overcommit)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: room = %v, want %q", tt.name, err, tt.want)
		}
	}
}
