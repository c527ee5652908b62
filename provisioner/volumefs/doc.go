// Package volumefs does all filesystem work for dirpv volume directories under a root
// directory (an NFS export, or a base path on a node).
//
// # Paths
//
// Paths are relative to the operator's root (--hostpath-root on a node, the mount of an NFS
// export), not to a StorageClass's base directory: "fast/ns-claim" for a class whose basePath
// is <root>/fast. So every check sees every class's volumes, and a class whose base directory
// lies inside another class's volume is refused like any other nested path.
//
// # Never following a link
//
// Tenants control the contents of their volume directory and partly control its relative
// path, so every operation here works on directories open by handle ([fsys.Dir]: Linux
// descriptors on a mounted root, file handles over NFS) and names one component at a time:
// nothing is resolved by path, and no symbolic link is ever followed, in or out of the root.
// Ancestors of a volume path must be real directories and are opened one by one; the volume
// is looked at with Lstat and then opened as the very entry that was seen, and its attributes
// are applied through that open directory; removal (Delete, Scrub) keeps a fixed number of
// directories open whatever the depth of the tree (see emptyDir). One implementation of every
// operation serves a mounted root and an NFS server alike.
//
// # Markers
//
// Ownership of a volume directory is recorded in a marker file beside it, in the same
// parent: volume "a/b" has marker "a/.b.dirpv" holding a JSON [Marker]. The tenant only
// sees the inside of the directory, so it can neither read nor forge the marker, and
// applications that need an empty volume (initdb and the like) get an empty directory.
// Volume path components may not start with ".", so a marker can never be a volume.
//
// The marker is created before the directory and exclusively (it is first written to a
// unique temporary file and then hard-linked into place, so it never appears half
// written; link(2) is also the NFS-safe exclusive create). Whoever creates the marker owns
// the path: a directory that exists without a marker belongs to no one and Create never
// takes it (only Adopt does, for a directory another provisioner made for a PV, after checking
// it holds no volume, looking at most 64 levels deep), a marker naming another PV is never
// overridden, and a path below another
// volume (an ancestor has a marker) is refused by every operation. While a creator sets the
// directory up it holds a lock on the marker, so that a concurrent retry for the same PV
// waits instead of racing it.
//
// A marker also records the Node UID a node-local volume was made under (a node that is
// deleted and joins again gets a new one, and its old volumes are left alone), and whether
// the volume was released to the operator (kept or archived when its PV went): a released
// volume is never changed again, whatever PV later names it.
//
// Delete, Archive, Release, Scrub and the limit operations hold the marker lock too, so that
// operations on one volume serialize across processes (within a process a path lock does, as flock
// is emulated with POSIX locks on NFS). Scrub, Release and Limit rewrite a marker (to record the
// claim scrubbed, the release, or what holds the volume to its size): they rename a complete new
// file over it, so readers see the old marker or the new one. The lock belongs to the old inode;
// whoever waited for it notices that the marker path now names another file and starts over on the
// new marker.
//
// # Files
//
// marker.go is the marker: its type, encoding and parsing, publishing it exclusively, replacing it,
// locking it, and the temporary files it is written through. volume.go opens a volume
// (openVolumeParent, never following a link), checks ownership (Marker.allows), holds the
// in-process path lock, and has withVolume, the one prologue of every operation on an existing
// volume, and ReadMarker. Then one file a verb: create.go (Create), reclaim.go (Delete, Release and
// Archive, which end a PV's hold on its volume), scrub.go (Scrub), limit.go (Limit, Unlimit and
// Usage, and the Limits they use). remove.go removes a tenant's tree for Delete and Scrub
// (emptyDir). The tests go by verb too; delete_test.go, release_test.go and archive_test.go test
// reclaim.go.
package volumefs
