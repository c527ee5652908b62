package quota

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/quota/quotatest"
)

// TestFirstFree runs the walk for a free project ID over made-up quota records.
func TestFirstFree(t *testing.T) {
	used := nextdqblk{Curspace: 4096, Curinodes: 1}
	limited := nextdqblk{Bhardlimit: 1024}
	const last = ^uint32(0)
	for _, tt := range []struct {
		name    string
		from    uint32 // FirstID if 0
		records map[uint32]nextdqblk
		want    uint32
		wantErr string
	}{
		{name: "no records", want: FirstID},
		{name: "only below FirstID", records: map[uint32]nextdqblk{1: used, FirstID - 1: used}, want: FirstID},
		{name: "first in use", records: map[uint32]nextdqblk{FirstID: used}, want: FirstID + 1},
		{name: "a gap", records: map[uint32]nextdqblk{FirstID: used, FirstID + 1: limited, FirstID + 3: used}, want: FirstID + 2},
		{name: "an empty record is free", records: map[uint32]nextdqblk{FirstID: used, FirstID + 1: {}, FirstID + 2: used}, want: FirstID + 1},
		{name: "limits alone hold an ID", records: map[uint32]nextdqblk{FirstID: limited}, want: FirstID + 1},
		{name: "free below the last", from: last - 2, records: map[uint32]nextdqblk{last - 2: used, last: used}, want: last - 1},
		{name: "all in use", from: last - 1, records: map[uint32]nextdqblk{last - 1: used, last: limited}, wantErr: "every ID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			next := fakeRecords(t, tt.records)
			from := tt.from
			if from == 0 {
				from = FirstID
			}
			got, err := firstFree(from, next)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("firstFree = %d, %v; want an error %q", got, err, tt.wantErr)
				}
				return
			}
			if got != tt.want || err != nil {
				t.Errorf("firstFree = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// fakeRecords is Q_GETNEXTQUOTA over records, failing the test past 10 calls.
func fakeRecords(t *testing.T, records map[uint32]nextdqblk) func(id uint32) (nextdqblk, error) {
	calls := 0
	return func(id uint32) (nextdqblk, error) {
		if calls++; calls > 10 {
			t.Fatal("more than 10 Q_GETNEXTQUOTA calls")
		}
		best, found := uint32(0), false
		for rid := range records {
			if rid >= id && (!found || rid < best) {
				best, found = rid, true
			}
		}
		if !found {
			return nextdqblk{}, unix.ENOENT
		}
		q := records[best]
		q.ID = best
		return q, nil
	}
}

// TestEachRecord walks made-up records as projectLimits does: every record from the first ID
// up, once, in order, the last ID included.
func TestEachRecord(t *testing.T) {
	const last = ^uint32(0)
	records := map[uint32]nextdqblk{3: {Bhardlimit: 1}, FirstID: {Bhardlimit: 2}, FirstID + 7: {}, last: {Bhardlimit: 4}}
	var seen []uint32
	var sum uint64
	err := eachRecord(FirstID, fakeRecords(t, records), func(q *nextdqblk) bool {
		seen = append(seen, q.ID)
		sum += q.Bhardlimit
		return true
	})
	if want := []uint32{FirstID, FirstID + 7, last}; err != nil || !slices.Equal(seen, want) || sum != 6 {
		t.Errorf("eachRecord saw %v (limits %d), %v; want %v (6)", seen, sum, err, want)
	}
	seen = nil
	err = eachRecord(FirstID, fakeRecords(t, records), func(q *nextdqblk) bool {
		seen = append(seen, q.ID)
		return false
	})
	if err != nil || !slices.Equal(seen, []uint32{FirstID}) {
		t.Errorf("eachRecord went on after f returned false: %v, %v", seen, err)
	}
}

func TestFirstFreeErrors(t *testing.T) {
	if _, err := firstFree(FirstID, func(uint32) (nextdqblk, error) { return nextdqblk{}, unix.EPERM }); !errors.Is(err, unix.EPERM) {
		t.Errorf("firstFree with EPERM = %v; want it wrapped", err)
	}
	if _, err := firstFree(FirstID, func(uint32) (nextdqblk, error) { return nextdqblk{ID: 5, Curinodes: 1}, nil }); err == nil {
		t.Error("firstFree accepted a record below the ID asked for")
	}
}

// TestErrorsNameTheDirectory checks the form of the errors: operation, directory, errno and
// advice, with the errno still matching.
func TestErrorsNameTheDirectory(t *testing.T) {
	dir := t.TempDir()
	fd, _ := quotatest.Open(t, dir)
	err := wrap("set the limit of project 7 on", fd, explain(unix.EPERM, unix.EPERM, needAdmin))
	want := "set the limit of project 7 on " + dir + ": operation not permitted (" + needAdmin + ")"
	if err.Error() != want || !errors.Is(err, unix.EPERM) || !errors.Is(err, os.ErrPermission) {
		t.Errorf("wrap = %q (errors.Is EPERM: %v); want %q", err, errors.Is(err, unix.EPERM), want)
	}
	if err := explain(unix.ENOENT, unix.EPERM, "x"); err != unix.ENOENT {
		t.Errorf("explain added advice to another errno: %v", err)
	}
}
