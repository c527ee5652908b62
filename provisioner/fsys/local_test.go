package fsys_test

import (
	"testing"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/fsys/fsystest"
)

func TestLocal(t *testing.T) {
	fsystest.Run(t, func(t *testing.T, dir string) fsys.Dir {
		d, err := fsys.OpenLocal(dir)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
