// Package quota holds a volume directory to the size its claim asked for, through the kernel's own
// interfaces (ioctl and quotactl_fd; no xfs_quota or btrfs tools to exec). A claim's size becomes
// a hard limit: a write past it fails with EDQUOT or ENOSPC, as on a disk of that size.
//
// Each volume gets a unit of accounting of its own:
//   - on XFS and ext4, a project: a directory whose project ID is set and which has
//     FS_XFLAG_PROJINHERIT passes that ID on to everything created below it, and the filesystem
//     charges all of their blocks to the project's quota. statfs of the directory then reports
//     the limit as its size, so df in a pod shows the claim's size.
//   - on btrfs, a subvolume per volume, limited by its level-0 qgroup.
//
// Probe says which of the two a filesystem can enforce, or what its root would need.
//
// # Project IDs
//
// A project ID is free when no quota record has usage or limits for it. dirpv uses the IDs from
// FirstID (1<<30) up, far above the range the kubelet's fsquota feature allocates from (1048577
// up), and takes the smallest free one. Several processes may allocate on one node at the same
// time (helper pods in different containers, a restarted or newly elected provisioner), so an
// allocation holds an exclusive flock on the file .dirpv-quota.lock in the root directory:
//
//  1. Allocate locks and returns the smallest free ID, and a function that unlocks.
//  2. The caller sets that project on the new, still empty directory (SetProject) and its limit
//     (SetLimit), then unlocks. From then on the directory's own inode counts against the ID, so
//     the next allocation sees it in use.
//
// Assign does all of it, and keeps the ID a directory already has (a retried provisioning). The
// lock file serializes the allocations that lock the same directory only: dirpv locks its
// operator's root (--hostpath-root) on each node, whatever the class, so every volume of a node
// is allocated under one lock. Release clears an ID's limits when its volume
// goes; the ID is free again once its directory is removed too.
//
// Errors wrap syscall.Errno values (errors.Is(err, syscall.EPERM) works) and name the operation
// and the directory; the ones of Probe also match ErrNotEnforced.
package quota
