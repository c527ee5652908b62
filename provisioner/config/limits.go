package config

import (
	"fmt"
	"strconv"
	"strings"
)

// The values below reach a volume through three doors: a StorageClass's parameters, a PV's
// annotations, and the arguments of a helper pod or agent. Each door reads them with the same
// parser, so that none lets through what another would refuse.

// ParseOvercommit reads an overcommit factor: a decimal number above 0 and at most
// maxOvercommit. NaN, the infinities, hexadecimal floats (0x1p2) and digits apart (1_0), which
// strconv also reads, are refused.
func ParseOvercommit(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || strings.Trim(s, "0123456789.eE+-") != "" || !(f > 0 && f <= maxOvercommit) {
		return 0, fmt.Errorf("%q is not a number above 0 and at most %d", s, maxOvercommit)
	}
	return f, nil
}

// MaxID is the largest uid or gid a directory may be given: beyond 2^31-1 an ID would wrap
// (4294967296 is 0, root, to the kernel's 32 bits) or mean "unchanged" (2^32-1 is -1 to chown).
const MaxID = 1<<31 - 1

// ParseID reads a uid or gid: a decimal number from 0 to MaxID.
func ParseID(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number from 0 to %d", s, MaxID)
	}
	return int(n), nil
}
