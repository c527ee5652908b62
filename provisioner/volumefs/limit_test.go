package volumefs

import (
	"errors"
	"path/filepath"
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
)

// fakeLimits makes plain directories and records what it is asked to hold.
type fakeLimits struct {
	mkdirErr error
	made     []string
	set      map[string]uint64 // volume directory name -> bytes
	cleared  []string
	used     uint64   // what Usage reports held
	read     []string // the volumes Usage was asked about
}

func (f *fakeLimits) Mkdir(dir fsys.Dir, name string) error {
	if f.mkdirErr != nil {
		return f.mkdirErr
	}
	f.made = append(f.made, name)
	return dir.Mkdir(name, 0o700)
}

func (f *fakeLimits) Set(lock, dir, vol fsys.Dir, bytes uint64, overcommit float64) (string, error) {
	if f.set == nil {
		f.set = map[string]uint64{}
	}
	f.set[filepath.Base(vol.Name())] = bytes
	return "fake " + filepath.Base(vol.Name()), nil
}

func (f *fakeLimits) Clear(dir, vol fsys.Dir) error {
	f.cleared = append(f.cleared, filepath.Base(vol.Name()))
	return nil
}

func (f *fakeLimits) Usage(dir, vol fsys.Dir) (uint64, uint64, error) {
	name := filepath.Base(vol.Name())
	f.read = append(f.read, name)
	return f.used, f.set[name], nil
}

func TestLimit(t *testing.T) {
	r, dir, _ := testRoot(t)
	l := &fakeLimits{used: 12345}
	o := opts("a/v1", "pv1")
	o.Limits = l
	if err := Create(r, o); err != nil {
		t.Fatal(err)
	}
	if len(l.made) != 1 || l.made[0] != "v1" {
		t.Fatalf("Limits.Mkdir made %q, want [v1]", l.made)
	}
	if got := modeBits(t, filepath.Join(dir, "a/v1")); got != 0o777 {
		t.Errorf("mode of a limited volume = %v, want the class's 0777", got)
	}
	held, err := Limit(r, "a/v1", own("pv1"), l, 1<<20, 1)
	if err != nil || held != "fake v1" || l.set["v1"] != 1<<20 {
		t.Fatalf("Limit = %q, %v (set %v); want fake v1 held to 1 MiB", held, err, l.set)
	}
	if _, err := Limit(r, "a/v1", own("pv1"), l, 2<<20, 1); err != nil || l.set["v1"] != 2<<20 {
		t.Fatalf("Limit again = %v (set %v); want 2 MiB", err, l.set)
	}
	if m := markerOnDisk(t, filepath.Join(dir, MarkerName("a/v1"))); m.Quota != "fake v1" || m.PV != "pv1" || m.ClaimUID != "uid-pv1" {
		t.Errorf("marker after Limit: %+v, want the quota recorded and the rest kept", m)
	}
	if used, limit, err := Usage(r, "a/v1", own("pv1"), l); err != nil || used != 12345 || limit != 2<<20 || len(l.read) != 1 {
		t.Fatalf("Usage = %d, %d, %v (read %q); want 12345 used of 2 MiB", used, limit, err, l.read)
	}

	for _, tc := range []struct {
		name, path string
		owner      Owner
		want       error
	}{
		{"another PV's volume", "a/v1", own("pv2"), ErrNotOwner},
		{"a missing volume", "a/v9", own("pv1"), ErrMissing},
		{"a missing parent", "b/v1", own("pv1"), ErrMissing},
		{"an invalid path", "../v1", own("pv1"), ErrInvalidPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(l.set)
			if _, err := Limit(r, tc.path, tc.owner, l, 5<<20, 1); !errors.Is(err, tc.want) {
				t.Errorf("Limit = %v, want %v", err, tc.want)
			}
			if _, _, err := Usage(r, tc.path, tc.owner, l); !errors.Is(err, tc.want) {
				t.Errorf("Usage = %v, want %v", err, tc.want)
			}
			if err := Unlimit(r, tc.path, tc.owner, l); tc.want == ErrMissing && err != nil {
				t.Errorf("Unlimit of a missing volume = %v, want nil", err)
			} else if tc.want != ErrMissing && !errors.Is(err, tc.want) {
				t.Errorf("Unlimit = %v, want %v", err, tc.want)
			}
			if len(l.set) != before || len(l.cleared) != 0 || len(l.read) != 1 {
				t.Errorf("Limits touched: set %v, cleared %q, read %q", l.set, l.cleared, l.read)
			}
		})
	}

	if err := Unlimit(r, "a/v1", own("pv1"), l); err != nil || len(l.cleared) != 1 {
		t.Fatalf("Unlimit = %v (cleared %q); want v1 cleared", err, l.cleared)
	}
	if err := Release(r, "a/v1", own("pv1"), "kept"); err != nil {
		t.Fatal(err)
	}
	if _, err := Limit(r, "a/v1", own("pv1"), l, 3<<20, 1); !errors.Is(err, ErrReleased) {
		t.Errorf("Limit of a released volume = %v, want ErrReleased", err)
	}
	if _, _, err := Usage(r, "a/v1", own("pv1"), l); !errors.Is(err, ErrReleased) || len(l.read) != 1 {
		t.Errorf("Usage of a released volume = %v (read %q), want ErrReleased", err, l.read)
	}
	if err := Unlimit(r, "a/v1", own("pv1"), l); err != nil || len(l.cleared) != 1 {
		t.Errorf("Unlimit of a released volume = %v (cleared %q); want nil, nothing cleared", err, l.cleared)
	}
}

// TestLimitRefuses: Limit, Usage and Unlimit refuse what is not theirs like the other
// operations, and never ask Limits about it; Unlimit leaves a released volume alone (nil).
func TestLimitRefuses(t *testing.T) {
	cases := append(noVolume(), notOurs()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := testRoot(t)
			tc.setup(t, r, dir)
			l := &fakeLimits{}
			_, lerr := Limit(r, tc.path, own("pv"), l, 1<<20, 1)
			_, _, uerr := Usage(r, tc.path, own("pv"), l)
			for op, err := range map[string]error{"Limit": lerr, "Usage": uerr} {
				if err == nil || tc.wantErr != errAny && !errors.Is(err, tc.wantErr) {
					t.Errorf("%s: err = %v, want %v", op, err, tc.wantErr)
				}
			}
			err := Unlimit(r, tc.path, own("pv"), l)
			switch {
			case tc.name == releasedCase || tc.wantErr == ErrMissing:
				if err != nil {
					t.Errorf("Unlimit: %v, want nil", err)
				}
			case err == nil || tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Errorf("Unlimit: err = %v, want %v", err, tc.wantErr)
			}
			if len(l.set) != 0 || len(l.cleared) != 0 || len(l.read) != 0 {
				t.Errorf("Limits touched: set %v, cleared %q, read %q", l.set, l.cleared, l.read)
			}
			tc.check(t, dir)
		})
	}
}

// A filesystem that cannot hold the volume to a size fails Create and leaves nothing behind.
func TestCreateLimitsRefused(t *testing.T) {
	r, dir, _ := testRoot(t)
	refused := errors.New("tmpfs cannot enforce sizes")
	o := opts("v1", "pv1")
	o.Limits = &fakeLimits{mkdirErr: refused}
	if err := Create(r, o); !errors.Is(err, refused) {
		t.Fatalf("Create = %v, want the refusal", err)
	}
	assertNames(t, dir)
	// A later attempt with a filesystem that can succeeds.
	o.Limits = &fakeLimits{}
	if err := Create(r, o); err != nil {
		t.Fatal(err)
	}
	assertNames(t, dir, ".v1.dirpv", "v1")
}
